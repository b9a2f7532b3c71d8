"""The analysis notebooks run headlessly with papermill on a run folder built from real scores, and fail clearly on bad input."""
import shutil

import nbformat
import pandas as pd
import papermill as pm
import pytest

from fixtures.evaluation import build_run_folder
from partages.evaluate import (ANALYSES, AnalysisError, ResultsError, best_models, format_ci, load_results,
                               run_analyses, _analyses_dir)

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    "A run folder with four lexicon taggers on three evaluation sets, two noise operations and four doses."
    path = tmp_path_factory.mktemp("run")
    build_run_folder(path, seed=0, n_boot=200)
    return path


@pytest.fixture(scope="module")
def reports(run_dir, tmp_path_factory):
    "Reports of every analysis notebook on `run_dir`, run with a secret-looking variable set."
    path = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARTAGES_TEST_API_KEY", SECRET)
        run_analyses(run_dir, path, fig_format="png")
    return path


def test_executed_notebooks_clean(reports):
    for name in ANALYSES:
        path = reports / "notebooks" / f"{name}.ipynb"
        text = path.read_text(encoding="utf-8")
        assert SECRET not in text
        nb = nbformat.reads(text, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert not [o for o in outputs if o.get("name") == "stderr"], name  # no warnings, no progress bars
        assert "\r" not in "".join(o.get("text", "") for o in outputs), name


def test_figures_exist(run_dir, reports):
    res = load_results(run_dir)
    swept = sorted(set(res.scores.query("noise_op != 'none'")["eval_set"]))
    expected = ["cost.png", "transfer.png", *(f"robustness_{s}.png" for s in swept), *(f"perplexity_{s}.png" for s in swept),
                *(f"per_label_{s}.png" for s in set(res.scores["eval_set"]))]
    for name in expected:
        data = (reports / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert b"Software" not in data, name  # no software stamp
        assert b"matplotlib" not in data, name
    assert sorted(p.name for p in (reports / "figures").iterdir()) == sorted(expected)


def test_tables_hold_results(run_dir, reports):
    res = load_results(run_dir)
    auc = pd.read_csv(reports / "tables" / "robustness_auc.csv").set_index(["eval_set", "model"])
    strict = res.robustness.query("mode == 'strict'")
    for r in strict.itertuples():
        assert auc.loc[(r.eval_set, r.model), r.noise_op] == pytest.approx(r.auc_ratio, abs=1e-6)
    gap = pd.read_csv(reports / "tables" / "transfer_gap.csv")
    clean = res.scores.query("noise_op == 'none' and label == 'ALL' and mode == 'strict'").set_index(["model", "eval_set"])["f1"]
    for r in gap.itertuples():
        assert r.gap == pytest.approx(clean[(r.model, r.real_set)] - clean[(r.model, r.synthetic_set)], abs=1e-6)
    per_label = pd.read_csv(reports / "tables" / "per_label.csv")
    assert set(per_label["label"]) == {"DISO", "CHEM", "PROC", "ANAT", "NOVEL"}
    assert set(per_label.query("eval_set == 'real'")["label"]) == {"DISO", "ANAT"}
    cost = pd.read_csv(reports / "tables" / "cost.csv")
    assert list(cost["model"]) == list(res.frugality["model"])
    assert "| model" in (reports / "tables" / "cost.md").read_text()


def test_readme_numbers_from_results(run_dir, reports):
    readme = (reports / "README.md").read_text(encoding="utf-8")
    res = load_results(run_dir)
    for r in best_models(res.scores).itertuples():
        assert f"**{r.eval_set}** ({r.eval_kind}, {r.n_docs} documents): `{r.model}`, strict F1 {format_ci(r.f1, r.f1_low, r.f1_high)}" in readme
    best = res.scores.query("noise_op == 'none' and label == 'ALL' and mode == 'strict'")["f1"].max()
    assert f"{best:.3f}" in readme
    for r in res.robustness.query("mode == 'strict'").itertuples():
        assert f"{r.auc_ratio:.3f}" in readme
    links = [line.split("](", 1)[1].rstrip(")\n") for line in readme.splitlines() if line.startswith("![")]
    assert len(links) == len(list((reports / "figures").iterdir()))
    for link in links:
        assert (reports / link).is_file(), link
    assert res.manifest["config_hash"] in readme


def test_reruns_byte_identical(run_dir, reports, tmp_path):
    run_analyses(run_dir, tmp_path, names=["robustness", "cost"])
    for name in ["robustness_real.png", "robustness_synthetic_test.png", "cost.png"]:
        assert (tmp_path / "figures" / name).read_bytes() == (reports / "figures" / name).read_bytes(), name
    for name in ["robustness_auc.csv", "robustness_auc.md", "cost.md"]:
        assert (tmp_path / "tables" / name).read_bytes() == (reports / "tables" / name).read_bytes(), name


def test_svg_figures_without_date(run_dir, tmp_path):
    run_analyses(run_dir, tmp_path, fig_format="svg", names=["transfer"])
    svg = (tmp_path / "figures" / "transfer.svg").read_text()
    assert svg.startswith("<?xml")
    assert "<dc:date>" not in svg


def test_kernel_without_secrets(run_dir, tmp_path, monkeypatch):
    "A notebook that prints the environment sees no secret; one that prints a secret is deleted and reported."
    src = tmp_path / "analyses"
    src.mkdir()
    nb = nbformat.v4.new_notebook(metadata=dict(kernelspec=dict(name="python3", display_name="Python 3", language="python")))
    nb.cells = [nbformat.v4.new_code_cell('run_dir = reports_dir = fig_format = ""', metadata=dict(tags=["parameters"])),
                nbformat.v4.new_code_cell("import os\nprint(sorted(os.environ))\nprint(open('secret.txt').read())")]
    nbformat.write(nb, src / "leak.ipynb")
    monkeypatch.setenv("PARTAGES_TEST_TOKEN", SECRET)
    (src / "secret.txt").write_text("nothing here")
    run_analyses(run_dir, tmp_path / "out", analyses_dir=src, names=["leak"])
    assert "PARTAGES_TEST_TOKEN" not in (tmp_path / "out" / "notebooks" / "leak.ipynb").read_text()
    (src / "secret.txt").write_text(SECRET)
    with pytest.raises(AnalysisError, match="contained the value of PARTAGES_TEST_TOKEN"):
        run_analyses(run_dir, tmp_path / "out", analyses_dir=src, names=["leak"])
    assert not (tmp_path / "out" / "notebooks" / "leak.ipynb").exists()


def test_missing_run_folder(tmp_path):
    with pytest.raises(ResultsError, match="nope: run folder not found"):
        run_analyses(tmp_path / "nope", tmp_path / "reports")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="scores.csv: not found"):
        run_analyses(tmp_path / "empty", tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


@pytest.fixture
def damaged(run_dir, tmp_path):
    "A copy of `run_dir` to damage."
    path = tmp_path / "run"
    shutil.copytree(run_dir, path)
    return path


def test_damaged_scores_missing_column(damaged, tmp_path):
    scores = damaged / "results" / "scores.csv"
    pd.read_csv(scores).drop(columns=["f1_low"]).to_csv(scores, index=False)
    with pytest.raises(ResultsError, match=r"scores.csv: missing columns f1_low; expected a CSV table with columns model"):
        run_analyses(damaged, tmp_path / "reports")


def test_damaged_frugality_not_csv(damaged, tmp_path):
    (damaged / "results" / "frugality.csv").write_bytes(b"\x00\xff\xfe binary \x89PNG")
    with pytest.raises(ResultsError, match=r"frugality.csv: not a readable CSV file"):
        load_results(damaged)


def test_damaged_values(damaged):
    scores = damaged / "results" / "scores.csv"
    df = pd.read_csv(scores).astype({"f1": object})
    df.loc[3, "f1"] = "high"
    df.to_csv(scores, index=False)
    with pytest.raises(ResultsError, match=r"scores.csv: line 5, column 'f1': 'high' is not a number"):
        load_results(damaged)
    (damaged / "manifest.json").write_text("{not json")
    df.loc[3, "f1"] = 0.5
    df.to_csv(scores, index=False)
    with pytest.raises(ResultsError, match=r"manifest.json: not valid JSON"):
        load_results(damaged)


def test_notebook_reports_damage(damaged, tmp_path):
    "Opened directly (as in JupyterLab), a notebook stops at its first cell with the same message."
    (damaged / "results" / "robustness.csv").write_text("model,eval_set\na,b\n")
    with pytest.raises(pm.PapermillExecutionError, match="robustness.csv: missing columns noise_op, mode"):
        pm.execute_notebook(_analyses_dir() / "robustness.ipynb", tmp_path / "out.ipynb", progress_bar=False,
                            parameters=dict(run_dir=str(damaged), reports_dir=str(tmp_path / "r"), fig_format="png"))


def test_cli_report(tmp_path, monkeypatch, capsys):
    "`partages evaluate --report DIR` runs the analyses on the run folder it wrote."
    import partages.evaluate as ev
    from fixtures.evaluation import make_docs
    from partages.cli import main
    from partages.core import write_jsonl
    docs = make_docs(8, 0, "d")
    write_jsonl(docs, tmp_path / "c.jsonl")
    ev.LexiconTagger.from_documents(docs[:3], name="lex").save(tmp_path / "lex")
    calls = []
    run = ev.run_analyses
    monkeypatch.setattr(ev, "run_analyses", lambda *a, **k: calls.append(a) or run(*a, names=["summary"], **k))
    assert main(["evaluate", "--model", str(tmp_path / "lex"), "--corpus", str(tmp_path / "c.jsonl"), "--n-boot", "20",
                 "--out", str(tmp_path / "run"), "--report", str(tmp_path / "reports")]) == 0
    assert calls == [(str(tmp_path / "run"), str(tmp_path / "reports"), "png")]
    assert "`lex`, strict F1" in (tmp_path / "reports" / "README.md").read_text()
