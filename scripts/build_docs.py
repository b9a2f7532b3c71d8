#!/usr/bin/env python
"""Build the static documentation site in `_docs/` from the notebooks in `nbs/`, offline.

Every notebook under `nbs/` becomes one page, except names starting with `_` or `.` at any folder level.
nbdev's own documentation processors prepare each notebook: they read the title and summary from the
`# title` and `> summary` cell, add a `show_doc` cell after each exported definition, and remove hidden
and exported cells. Only the cells that `show_doc` needs run (exported cells, import-only cells and
`show_doc` calls), never the tests and examples. nbconvert's HTML exporter then renders each page with
the template in `scripts/docs_assets/templates/partages`, so Quarto is not needed.

The processors are called directly rather than through `nbdev-proc-nbs`, because that command tries to
install Quarto with sudo when it is missing, and writes Quarto configuration files into `nbs/`.

Usage: python scripts/build_docs.py [--nbs DIR] [--out DIR] [--workers N]
"""
from __future__ import annotations

import argparse, html, os, posixpath, re, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent / "docs_assets"
# Files next to the notebooks that pages may show or link to. The build copies them to the same relative path.
MEDIA_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".pdf", ".csv", ".json", ".txt"}
PYGMENTS_STYLE = "friendly"


class DocsBuildError(Exception):
    "A notebook could not be found, processed or rendered."


@dataclass
class Page:
    "One page of the site: its notebook, its HTML file and the processed notebook."
    source: str  # notebook path as shown to readers: relative to the repository when inside it
    rel: PurePosixPath  # notebook path relative to the notebooks folder
    out: PurePosixPath  # HTML file relative to the site root
    title: str
    description: str
    nb: dict  # processed notebook, as nbformat reads it
    seconds: float  # time spent processing the notebook


def find_notebooks(nbs: Path) -> list[Path]:
    "List the notebooks under `nbs` in site order: `index.ipynb` first, then by path, skipping `_` and `.` names."
    found = [p for p in nbs.rglob("*.ipynb") if not any(part[0] in "_." for part in p.relative_to(nbs).parts)]
    return sorted(found, key=lambda p: (p.relative_to(nbs) != Path("index.ipynb"), p.relative_to(nbs).parts))


def doc_filter():
    "Return nbdev's documentation processors, with its cell runner narrowed to the cells `show_doc` needs."
    import ast
    from nbdev.processors import FilterDefaults, exec_show_docs

    def is_doc_cell(cell) -> bool:
        "Whether `cell` is exported, only imports, or calls `show_doc`; nbdev also runs any cell with an import."
        d = cell.directives_
        if cell.cell_type != "code" or str(d.get("eval", "")).lower() == "false": return False
        if d.keys() & {"export", "exports", "exporti", "exec_doc"}: return True
        trees = cell.parsed_() or []
        calls_show_doc = any(isinstance(t, ast.Expr) and isinstance(t.value, ast.Call)
                             and getattr(t.value.func, "id", None) == "show_doc" for t in trees)
        return bool(trees) and (calls_show_doc or all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees))

    class exec_doc_cells(exec_show_docs):
        "Run the exported, import-only and `show_doc` cells, so test cells and examples stay unrun."
        def begin(self):
            if self.nb.has_docs_: super().begin()  # a notebook with nothing to document needs no IPython shell

        def __call__(self, cell):
            if is_doc_cell(cell): super().__call__(cell)

    class DocFilter(FilterDefaults):
        def base_procs(self): return [exec_doc_cells if p is exec_show_docs else p for p in super().base_procs()]
    return DocFilter()


def process_notebook(path: str) -> tuple[str, str, dict, float]:
    "Run nbdev's documentation processors on the notebook at `path` in a worker process; never raises."
    start = time.perf_counter()
    try:
        # As under nbdev-test and Jupyter, the notebook's cells run in its folder. nbdev reads its settings
        # from the first pyproject.toml above it.
        os.chdir(Path(path).parent)
        os.environ["IN_TEST"] = "1"  # as nbdev's own docs driver (nbdev/serve_drv.py) sets it
        from fastcore.nbio import nb2str, read_nb

        nb = read_nb(path)
        doc_filter()(nb)
        front = {str(k): v for k, v in getattr(nb, "frontmatter_", {}).items()}
        return "ok", nb2str(nb), front, time.perf_counter() - start
    except Exception as e:  # the parent reports it with the notebook's name and exits non-zero
        message = str(e) if type(e) is Exception else f"{type(e).__name__}: {e}"
        return "error", message, {}, time.perf_counter() - start


def process_all(notebooks: list[Path], workers: int) -> dict[Path, tuple]:
    "Process each of `notebooks` in a fresh process, `workers` at a time, so no notebook's code runs in this one."
    results = {}
    # One task per process: nbdev's IPython shell replaces the worker's __main__ module, where the next task's
    # function would be looked up, and each notebook's code runs apart from the others'.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(process_notebook, str(p)): p for p in notebooks}
        for fut in as_completed(futures):
            try: results[futures[fut]] = fut.result()
            except BrokenProcessPool as e:
                results[futures[fut]] = ("error", f"the worker process died ({e})", {}, 0.0)
    return results


# Quarto markdown that nbconvert's renderer (mistune) does not know.
_RE_LINK_ATTRS = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")  # [text](url){target="_blank"}
_RE_DIV_OPEN = re.compile(r"^:::+\s*\{([^}]*)\}\s*$", re.MULTILINE)  # ::: {.callout-note}
_RE_DIV_CLOSE = re.compile(r"^:::+\s*$", re.MULTILINE)
_RE_SOURCE_LINK = re.compile(r"\[source\]\(([^)\s]+)\)(\{[^}\n]*\})?")
_RE_SHOWDOC_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_RE_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")
_CELL_KEYS = {"cell_type", "id", "metadata", "source", "attachments", "outputs", "execution_count"}


def convert_markdown(md: str) -> str:
    "Turn the Quarto additions in `md` (link attributes, fenced divs) into what mistune renders."
    md = _RE_LINK_ATTRS.sub(r"\1", md)
    classes = lambda attrs: " ".join(t[1:] for t in attrs.split() if t.startswith("."))
    md = _RE_DIV_OPEN.sub(lambda m: f'\n<div class="fenced {html.escape(classes(m[1]))}">\n', md)
    return _RE_DIV_CLOSE.sub("\n</div>\n", md)


def convert_show_doc(md: str) -> str:
    "Rewrite a `show_doc` markdown output: a source link and a heading with the anchor id nbdev links to."
    md = re.sub(r"^\s*---\s*\n", "", md)  # nbdev's rule above each entry, dropped because the style draws a box
    md = _RE_SOURCE_LINK.sub(lambda m: f'<a class="doc-source" href="{html.escape(m[1])}">source</a>', md, count=1)

    def heading(m):
        level, name = len(m[1]), m[2]
        # nbdev's symbol index links to the lower-cased name, e.g. core.html#document.to_dict
        return f'<h{level} class="doc-name" id="{html.escape(name.lower())}">{html.escape(name)}</h{level}>'
    return convert_markdown(_RE_SHOWDOC_HEADING.sub(heading, md, count=1))


def split_directives(source: str) -> tuple[dict[str, str], str]:
    "Split the leading `#| name: value` lines off `source`; return the directives and the remaining code."
    import yaml

    lines, directives = source.splitlines(), {}
    while lines and (m := _RE_DIRECTIVE.match(lines[0])):
        value = m[2]
        try: value = yaml.safe_load(value) if value else ""  # Quarto values may be quoted strings
        except yaml.YAMLError: pass
        directives[m[1]] = "" if value is None else str(value)
        lines.pop(0)
    return directives, "\n".join(lines).strip("\n")


def _is_false(value: str) -> bool: return value.strip().lower() in ("false", "no", "0")


def prepare_cell(cell: dict) -> dict | None:
    "Apply the Quarto options nbdev leaves on `cell` (echo, output, include, code-fold); `None` drops it."
    from nbdev.processors import insert_warning

    for key in set(cell) - _CELL_KEYS: del cell[key]  # nbdev's working attributes, which nbformat rejects
    source = cell.get("source", "")
    if cell["cell_type"] == "raw": return None  # the frontmatter, already read into the page title
    if cell["cell_type"] == "markdown":
        if source.strip() == insert_warning.content: return None
        cell["source"] = convert_markdown(source)
        return cell
    directives, cell["source"] = split_directives(source)
    meta = cell.setdefault("metadata", {})
    meta.pop("execution", None)  # timings from nbdev's shell, in a form nbformat rejects
    if _is_false(directives.get("include", "true")): return None
    if _is_false(directives.get("echo", "true")): meta["transient"] = {"remove_source": True}
    if _is_false(directives.get("output", "true")): cell["outputs"] = []
    if "code-fold" in directives and not _is_false(directives["code-fold"]):
        meta["docs_fold"] = {"open": directives["code-fold"] == "show", "summary": directives.get("code-summary", "Code")}
    if re.match(r"\s*show_doc\(", cell["source"]):
        meta.setdefault("tags", []).append("show_doc")
        for out in cell.get("outputs", []):
            md = out.get("data", {}).get("text/markdown")
            if md is not None: out["data"]["text/markdown"] = convert_show_doc(md)
    if not cell["source"] and not cell.get("outputs"): return None
    return cell


def prepare_notebook(nb: dict) -> dict:
    "Apply `prepare_cell` to every cell of `nb` and drop the cells it rejects."
    nb["cells"] = [c for c in map(prepare_cell, nb["cells"]) if c is not None]
    return nb


def display_path(path: Path) -> str:
    "Return `path` relative to the repository when it is inside it, else in full."
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def page_for(path: Path, nbs: Path, nb_json: str, front: dict, seconds: float) -> Page:
    "Make the `Page` of the processed notebook `path`, named as nbdev names it (`00_core.ipynb` -> `core.html`)."
    import nbformat
    from nbdev.config import nbpath2html

    rel = PurePosixPath(path.relative_to(nbs).as_posix())
    out = rel.parent / (front.get("output-file") or nbpath2html(Path(rel.name)).name)
    title = str(front.get("title") or out.stem)
    return Page(display_path(path), rel, out, title, str(front.get("description") or ""),
                nbformat.reads(nb_json, as_version=4), seconds)


def relative_href(target: str, page: PurePosixPath) -> str:
    "Return the link from `page` to the site path `target`, which may end with a `#fragment`."
    path, _, frag = target.partition("#")
    rel = posixpath.relpath(path, page.parent.as_posix()) if path else ""
    return rel + ("#" + frag if frag else "")


def make_nav(pages: list[Page], current: Page) -> list[dict]:
    "List the navigation entries as seen from `current`: one per page, with a section name where a folder starts."
    nav, folder = [], PurePosixPath(".")
    for p in pages:
        item = {"title": p.title, "href": relative_href(str(p.out), current.out), "current": p is current}
        if p.out.parent != folder:
            folder = p.out.parent
            item["section"] = "" if str(folder) == "." else str(folder).replace("_", " ")
        nav.append(item)
    return nav


_RE_H2 = re.compile(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', re.DOTALL)
_RE_URL_ATTR = re.compile(r'(href|src)="([^"]*)"')


def make_toc(body: str) -> str:
    "Return the page's table of contents, one link per `h2` heading in `body`, as an HTML list."
    items = [f'<li><a href="#{i}">{re.sub(r"<[^>]+>", "", t)}</a></li>' for i, t in _RE_H2.findall(body)]
    return f'\n<ul class="toc">{"".join(items)}</ul>' if items else ""


def fix_links(body: str, page: Page, site_url: str, by_notebook: dict[str, PurePosixPath], known: set[str],
              broken: list[str]) -> str:
    "Make links to the hosted site and to notebooks relative to `page`, and list the internal links that lead nowhere."
    folder = page.out.parent.as_posix()  # the page's folder in the site mirrors its notebook's folder

    def fix(m):
        attr, url = m[1], html.unescape(m[2])
        if site_url and url.startswith(site_url + "/"):
            url = relative_href(url[len(site_url) + 1:], page.out)
        elif not url or re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", url, re.IGNORECASE): return m[0]
        path, _, frag = url.partition("#")
        target = posixpath.normpath(posixpath.join(folder, path))
        if path.endswith(".ipynb") and target in by_notebook:
            target = str(by_notebook[target])
            url = relative_href(target + ("#" + frag if frag else ""), page.out)
        if target not in known: broken.append(f"{page.out} links to {path}, which is not in the site")
        return f'{attr}="{html.escape(url)}"'
    return _RE_URL_ATTR.sub(fix, body)


def make_exporter():
    "Return nbconvert's HTML exporter set up with the site template."
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="partages", extra_template_basedirs=[str(ASSETS / "templates")],
                        exclude_input_prompt=True, exclude_output_prompt=True, anchor_link_text="#")


def render_page(exporter, page: Page, pages: list[Page], site: dict) -> str:
    "Render `page` to a complete HTML document with the site layout around it."
    import nbformat
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    nb = nbformat.from_dict(prepare_notebook(page.nb))
    in_repo = not Path(page.source).is_absolute()
    source_url = f"{site['git_url']}/blob/{site['branch']}/{page.source}" if site["git_url"] and in_repo else ""
    summary = re.sub(r"^<p>|</p>\s*$", "", markdown2html_mistune(page.description).strip())  # inline markdown
    docs = {"site_title": site["title"], "site_description": site["description"], "page_title": page.title,
            "page_description": page.description, "summary_html": summary, "root": "../" * (len(page.out.parts) - 1),
            "nav": make_nav(pages, page), "source": page.source, "source_url": source_url}
    body, _ = exporter.from_notebook_node(nb, resources={"docs": docs})
    return body


def copy_media(nbs: Path, out: Path):
    "Copy the images and data files next to the notebooks into `out`, at the same relative paths."
    for f in nbs.rglob("*"):
        rel = f.relative_to(nbs)
        if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES and not any(p[0] in "_." for p in rel.parts):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / rel)


def write_static(out: Path):
    "Write the site's style sheets into `out/_static`."
    from pygments.formatters import HtmlFormatter

    static = out / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ASSETS / "site.css", static / "site.css")
    (static / "pygments.css").write_text(HtmlFormatter(style=PYGMENTS_STYLE).get_style_defs(".highlight") + "\n")
    (out / ".nojekyll").write_text("")  # GitHub Pages would otherwise drop the folders starting with `_`


def replace_dir(new: Path, dest: Path):
    "Move the finished site `new` onto `dest`, so a failed build leaves the previous site in place."
    old = dest.with_name(dest.name + ".old")
    if old.exists(): shutil.rmtree(old)
    if dest.exists(): dest.rename(old)
    new.rename(dest)
    if old.exists(): shutil.rmtree(old)


def load_pages(nbs: Path, workers: int | None) -> list[Page]:
    "Process every notebook under `nbs` into a `Page`; raise `DocsBuildError` naming each notebook that fails."
    notebooks = find_notebooks(nbs)
    if nbs / "index.ipynb" not in notebooks:
        raise DocsBuildError(f"{nbs / 'index.ipynb'} not found: the site needs it as its home page (index.html)")
    results = process_all(notebooks, max(1, min(workers or os.cpu_count() or 1, len(notebooks))))
    failed = [f"{display_path(p)} failed to process: {results[p][1]}" for p in notebooks if results[p][0] != "ok"]
    if failed: raise DocsBuildError("\n".join(failed))
    pages = [page_for(p, nbs, *results[p][1:]) for p in notebooks]
    clash = sorted({str(p.out) for p in pages if sum(q.out == p.out for q in pages) > 1})
    if clash: raise DocsBuildError(f"several notebooks make the same page {clash}; rename all but one of them")
    return pages


def build(nbs: Path, out: Path, workers: int | None = None) -> list[Page]:
    "Build the site from the notebooks under `nbs` into `out`; raise `DocsBuildError` naming any failing notebook."
    from nbdev.config import get_config

    cfg = get_config(REPO)
    pages = load_pages(nbs, workers)
    site = {"title": cfg.title, "description": cfg.get("description", ""), "git_url": cfg.get("git_url", ""),
            "branch": cfg.get("branch", "main")}
    site_url = (cfg.doc_host.rstrip("/") + cfg.doc_baseurl.rstrip("/")) if cfg.doc_host else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private, but the site is meant to be served
    try:
        copy_media(nbs, tmp)
        write_static(tmp)
        known = {f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file()} | {str(p.out) for p in pages}
        by_notebook = {str(p.rel): p.out for p in pages}
        exporter, broken = make_exporter(), []
        for page in pages:
            try: body = render_page(exporter, page, pages, site)
            except Exception as e:
                raise DocsBuildError(f"{page.source} failed to render: {type(e).__name__}: {e}") from e
            body = fix_links(body, page, site_url, by_notebook, known, broken)
            body = body.replace("<!-- page-toc -->", make_toc(body), 1)
            (tmp / page.out).parent.mkdir(parents=True, exist_ok=True)
            (tmp / page.out).write_text(body, encoding="utf-8")
        for msg in dict.fromkeys(broken): print(f"build_docs: warning: {msg}", file=sys.stderr)
        replace_dir(tmp, out)
    finally:
        if tmp.exists(): shutil.rmtree(tmp)
    return pages


def main(argv=None) -> int:
    from nbdev.config import get_config

    ap = argparse.ArgumentParser(description="Build the documentation site from the notebooks, offline.")
    ap.add_argument("--nbs", type=Path, default=None,
                    help="notebooks folder (default: nbdev's nbs_path, nbs/); outside the repository, nbdev's "
                         "settings are not found, so pages lack source links and links to other pages' symbols")
    ap.add_argument("--out", type=Path, default=REPO / "_docs", help="output folder (default: _docs)")
    ap.add_argument("--workers", type=int, default=None, help="notebooks processed at once (default: CPU count)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    nbs = (args.nbs or Path(get_config(REPO).nbs_path)).resolve()
    try: pages = build(nbs, args.out.resolve(), args.workers)
    except DocsBuildError as e:
        print(f"build_docs: error: {e}", file=sys.stderr)
        return 1
    for p in pages: print(f"{p.source:40} -> {p.out}  ({p.seconds:.1f} s)")
    print(f"built {len(pages)} pages into {display_path(args.out.resolve())} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
