#!/usr/bin/env python
"""Check the built documentation site in headless Chromium.

Serves `_docs/` on 127.0.0.1 with Python's http.server and loads the home page and the `core` API page in
Debian's `chromium`. The check reads the DOM the browser built: the page title and navigation, and on the
API page the rendered signature of `validate_document` with its parameters. It also checks that the
browser fetched every file the pages use, and keeps a screenshot of each page in `_docs/_check/`.

Without Chromium the check is skipped with a message and exit status 0, unless the environment sets
`PARTAGES_REQUIRE_BROWSER=1` (as CI does): then a missing browser is an error.

Usage: python scripts/check_docs.py [--site DIR]
"""
from __future__ import annotations

import argparse, html, os, re, shutil, subprocess, sys, tempfile, threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars"]
BROWSER_TIMEOUT_S = 90
WINDOW = (1280, 1400)


class CheckError(Exception):
    "The site did not render as expected."


def find_chromium() -> str | None:
    "Return the path of Chromium: `PARTAGES_CHROMIUM` when set, else `chromium` on PATH, else `/usr/bin/chromium`."
    for candidate in (os.environ.get("PARTAGES_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK): return candidate
    return None


class RecordingHandler(SimpleHTTPRequestHandler):
    "Serve the site and record each request's path and status instead of logging it."
    def log_request(self, code="-", size="-"):
        self.server.requests.append((self.path.split("?")[0], int(code) if str(code).isdigit() else 0))

    def log_message(self, format, *args): pass


def serve(site: Path) -> ThreadingHTTPServer:
    "Start serving `site` on a free port of 127.0.0.1 in a daemon thread."
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RecordingHandler, directory=str(site)))
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_browser(chromium: str, *args: str) -> str:
    "Run headless `chromium` with `args` and a new profile folder; return its stdout."
    with tempfile.TemporaryDirectory(prefix="partages-chromium-") as profile:
        cmd = [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
        try: res = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CheckError(f"chromium timed out after {BROWSER_TIMEOUT_S} s: {' '.join(args)}") from None
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-10:])
        raise CheckError(f"chromium exited with status {res.returncode} on {' '.join(args)}:\n{tail}")
    return res.stdout


def dom_text(dom: str) -> str:
    "Return the visible text of `dom`: tags removed, entities decoded, spaces collapsed."
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", dom)))


def require(ok: bool, page: str, problem: str):
    if not ok: raise CheckError(f"{page}: {problem}")


def check_common(dom: str, page: str, site_title: str):
    "Check what every page has: the site title, the page title, navigation links, and no raw notebook JSON."
    require(f">{site_title}</a>" in dom, page, f"site title {site_title!r} not found in the header")
    require(re.search(r'<h1 class="page-title">[^<]+</h1>', dom) is not None, page, "no page title (h1.page-title)")
    links = re.findall(r'<li class="nav-page[^"]*"><a [^>]*href="([^"]+)"', dom)
    require("index.html" in links and "core.html" in links, page, f"navigation lacks index.html or core.html: {links}")
    require('"cell_type"' not in dom, page, "raw notebook JSON in the page")


def check_index(dom: str, site_title: str):
    "Check the home page: its title is the site title, and its example uses `validate_document`."
    require(f'<h1 class="page-title">{html.escape(site_title)}</h1>' in dom, "index.html",
            f"page title is not the site title {site_title!r}")
    require("validate_document" in dom_text(dom), "index.html", "the example using validate_document is missing")


def check_core(dom: str, site_title: str = ""):
    "Check the API page: the `validate_document` entry shows its signature with its parameters and docstring."
    require('id="validate_document"' in dom, "core.html", "no show_doc entry with id 'validate_document'")
    entry = dom[dom.rindex("<", 0, dom.index('id="validate_document"')):]
    entry = dom_text(entry[:entry.find('class="cell ')] if 'class="cell ' in entry else entry)
    signature = re.search(r"def validate_document\( doc:[\w.]*Document,.*?labels:", entry)
    require(signature is not None, "core.html", f"validate_document signature with doc and labels not found in: {entry[:300]!r}")
    require(re.search(r"\)\s*->\s*[\w.]*Document:", entry) is not None, "core.html",
            "validate_document return annotation not shown")


def check_screenshot(path: Path, page: str):
    "Check that the screenshot at `path` exists, has the window size and is not a blank page."
    from PIL import Image

    require(path.is_file(), page, f"chromium wrote no screenshot at {path}")
    with Image.open(path) as img:
        require(img.size == WINDOW, page, f"screenshot is {img.size}, expected {WINDOW}")
        colors = img.convert("RGB").getcolors(maxcolors=1 << 16)
    require(colors is None or len(colors) > 20, page, f"screenshot {path} looks blank ({len(colors or [])} colours)")


def check_site(site: Path, chromium: str, site_title: str) -> list[Path]:
    "Load the home page and the core page from a local server in Chromium and check them; return the screenshots."
    for name in ("index.html", "core.html"):
        if not (site / name).is_file():
            raise CheckError(f"{site / name} not found; build the site first with python scripts/build_docs.py")
    shots_dir = site / "_check"
    shots_dir.mkdir(exist_ok=True)
    server, shots = serve(site), []
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for name, check in (("index.html", check_index), ("core.html", check_core)):
            dom = run_browser(chromium, "--dump-dom", f"{base}/{name}")
            check_common(dom, name, site_title)
            check(dom, site_title)
            shot = shots_dir / name.replace(".html", ".png")
            shot.unlink(missing_ok=True)
            run_browser(chromium, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"{base}/{name}")
            check_screenshot(shot, name)
            shots.append(shot)
    finally:
        server.shutdown()
        server.server_close()
    failed = sorted({f"{p} ({code})" for p, code in server.requests if code >= 400})
    if failed: raise CheckError(f"the browser could not load: {', '.join(failed)}")
    fetched = {p for p, code in server.requests if code == 200}
    for css in ("/_static/site.css", "/_static/pygments.css"):
        require(css in fetched, "site", f"the browser never fetched {css}, so the pages were shown unstyled")
    return shots


def site_title() -> str:
    "Return the site title from nbdev's settings in pyproject.toml."
    from nbdev.config import get_config

    return get_config(REPO).title


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check the built documentation site in headless Chromium.")
    ap.add_argument("--site", type=Path, default=REPO / "_docs", help="built site folder (default: _docs)")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("PARTAGES_REQUIRE_BROWSER") == "1":
            print("check_docs: error: chromium not found, and PARTAGES_REQUIRE_BROWSER=1 requires the browser check; "
                  "install it with `apt-get install chromium` or set PARTAGES_CHROMIUM to its path", file=sys.stderr)
            return 1
        print("browser check did not run: chromium not found")
        return 0
    try: shots = check_site(args.site.resolve(), chromium, site_title())
    except CheckError as e:
        print(f"check_docs: error: {e}", file=sys.stderr)
        return 1
    print(f"browser check passed with {chromium}: index.html and core.html rendered; "
          f"screenshots: {', '.join(str(s) for s in shots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
