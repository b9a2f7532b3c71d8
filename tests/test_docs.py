"Tests of the documentation build (scripts/build_docs.py) and its browser check (scripts/check_docs.py)."
import importlib.util, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_nb(path: Path, *cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def run_build(nbs: Path, out: Path):
    return subprocess.run([sys.executable, str(SCRIPTS / "build_docs.py"), "--nbs", str(nbs), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A site built from a small notebooks folder: a home page, an API page, a subfolder and skipped files."
    nbs = tmp_path_factory.mktemp("nbs")
    write_nb(nbs / "index.ipynb", new_markdown_cell("# partages\n\n> A home page."),
             new_markdown_cell("See [validate_document](00_core.ipynb#validate_document)."))
    write_nb(nbs / "00_core.ipynb",
             new_code_cell("#| default_exp core"),
             new_code_cell("#| hide\nSECRET_SETUP = 'hidden cell source'"),
             new_markdown_cell("# core\n\n> Functions to document."),
             new_code_cell('#| export\nclass Document:\n    "A text."'),
             new_code_cell('#| export\ndef validate_document(doc:Document, # Document to check\n'
                           '                      labels:list|None=None, # Allowed labels\n'
                           '                     ) -> Document:\n    "Check `doc` against `labels`."\n    return doc'),
             new_markdown_cell("## Examples\n\n::: {.callout-note}\nA note.\n:::"),
             # nbdev would run this cell because it has an import; the build must not run tests or examples.
             new_code_cell('import os\nraise RuntimeError("a test cell ran during the docs build")'),
             new_code_cell("#| echo: false\nprint('output only')"),
             new_code_cell("#| eval: false\nvalidate_document(Document())"))
    write_nb(nbs / "analyses" / "02_figure.ipynb", new_markdown_cell("# figure\n\n> A page in a subfolder."))
    write_nb(nbs / "_draft.ipynb", new_markdown_cell("# draft"))
    write_nb(nbs / ".ipynb_checkpoints" / "00_core-checkpoint.ipynb", new_markdown_cell("# checkpoint"))
    out = tmp_path_factory.mktemp("site") / "_docs"
    res = run_build(nbs, out)
    assert res.returncode == 0, res.stderr
    return out


def test_build_names_pages_like_nbdev(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == ["analyses/figure.html", "core.html", "index.html"]
    assert (site / "_static" / "site.css").is_file()


def test_build_renders_show_doc_signature(site):
    page = (site / "core.html").read_text()
    assert 'id="validate_document"' in page
    assert "Document to check" in page
    assert "Check <code>doc</code> against <code>labels</code>" in page


def test_build_hides_directives_and_hidden_cells(site):
    page = (site / "core.html").read_text()
    assert "hidden cell source" not in page
    assert "#|" not in page
    assert "default_exp" not in page
    assert "print" not in page  # `echo: false` hides the source
    assert "callout-note" in page
    assert ":::" not in page


def test_build_runs_no_test_cells(site):
    page = (site / "core.html").read_text()
    assert "a test cell ran during the docs build" in page  # shown as code, because running it fails the build
    assert "output_error" not in page


def test_build_lists_pages_in_order(site):
    page = (site / "analyses" / "figure.html").read_text()
    assert page.index('href="../index.html"') < page.index('href="../core.html"') < page.index('href="figure.html"')
    assert '<li class="nav-section">analyses</li>' in page
    assert '<h1 class="page-title">figure</h1>' in page
    assert '<p class="page-summary">A page in a subfolder.</p>' in page


def test_build_links_notebooks_to_pages(site):
    assert 'href="core.html#validate_document"' in (site / "index.html").read_text()


def test_build_fails_naming_notebook(tmp_path):
    nbs = tmp_path / "nbs"
    write_nb(nbs / "index.ipynb", new_markdown_cell("# demo"))
    write_nb(nbs / "03_broken.ipynb", new_markdown_cell("# broken"),
             new_code_cell('#| export\nraise ValueError("exported cell fails")'))
    (tmp_path / "_docs").mkdir()
    (tmp_path / "_docs" / "old.html").write_text("previous site")
    res = run_build(nbs, tmp_path / "_docs")
    assert res.returncode == 1
    assert "03_broken.ipynb failed to process" in res.stderr
    assert "exported cell fails" in res.stderr
    assert (tmp_path / "_docs" / "old.html").read_text() == "previous site"


def test_build_requires_index(tmp_path):
    write_nb(tmp_path / "nbs" / "01_api.ipynb", new_markdown_cell("# api"))
    res = run_build(tmp_path / "nbs", tmp_path / "_docs")
    assert res.returncode == 1
    assert "index.ipynb not found" in res.stderr


def test_check_skips_without_browser(monkeypatch, capsys):
    check = load_script("check_docs")
    monkeypatch.setattr(check, "find_chromium", lambda: None)
    monkeypatch.delenv("PARTAGES_REQUIRE_BROWSER", raising=False)
    assert check.main([]) == 0
    assert "browser check did not run: chromium not found" in capsys.readouterr().out


def test_check_fails_without_browser_in_ci(monkeypatch, capsys):
    check = load_script("check_docs")
    monkeypatch.setattr(check, "find_chromium", lambda: None)
    monkeypatch.setenv("PARTAGES_REQUIRE_BROWSER", "1")
    assert check.main([]) == 1
    assert "chromium not found" in capsys.readouterr().err


def test_check_core_rejects_missing_signature(site):
    check = load_script("check_docs")
    check.check_core((site / "core.html").read_text())
    with pytest.raises(check.CheckError, match="validate_document"):
        check.check_core((site / "index.html").read_text())


@pytest.mark.browser
def test_check_site_in_chromium(site, tmp_path):
    check = load_script("check_docs")
    chromium = check.find_chromium()
    if chromium is None: pytest.skip("chromium not found")
    shots = check.check_site(site, chromium, "partages")
    assert [s.name for s in shots] == ["index.png", "core.png"]
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    page = (broken / "core.html").read_text()
    (broken / "core.html").write_text(page.replace(">labels<", ">options<"))
    with pytest.raises(check.CheckError, match="signature"):
        check.check_site(broken, chromium, "partages")
