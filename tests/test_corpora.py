"Resources download, E3C French against the mirror, corpus readers on bad input, and the `partages data` command."
import functools
import http.server
import json
import re
import threading
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from partages.cli import main
from partages.core import ConfigError, Entity, validate_document
from partages.corpora import (corpus_stats, flatten_entities, load_corpus, load_e3c, make_xmi, read_conll, read_xmi,
                              infer_typesystem)
from partages.resources import (ChecksumError, DownloadError, build_manifest, fetch_resource, get_resource,
                                sha256_file)

COMMIT = "b" * 40


# --- fetch_resource over HTTP -------------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    "Serves the test folder, counting GET requests and failing the first `fail_first[path]` ones with 503."
    requests: Counter
    fail_first: dict

    def do_GET(self):
        self.requests[self.path] += 1
        if self.fail_first.get(self.path, 0) >= self.requests[self.path]:
            self.send_error(503, "busy")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream(tmp_path):
    "A folder laid out like raw file hosting (`<owner>/<repo>/<commit>/<path>`) served on 127.0.0.1."
    root = tmp_path / "upstream"
    repo = root / "someone" / "corpus" / COMMIT
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "a.txt").write_text("Fièvre et toux.\n", encoding="utf-8")
    (repo / "LICENSE").write_text("MIT\n")
    handler = type("Handler", (_Handler,), dict(requests=Counter(), fail_first={}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    manifest = build_manifest(repo, "someone/corpus", COMMIT, "MIT", ["docs/*.txt", "LICENSE"])
    try:
        yield dict(url=f"http://127.0.0.1:{server.server_address[1]}", repo=repo, handler=handler,
                   manifests={"corpus": manifest})
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_downloads_and_is_idempotent(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    cache = tmp_path / "cache"
    root = fetch_resource("corpus", cache, base_url=upstream["url"], manifests=upstream["manifests"])
    assert root == cache / "someone" / "corpus" / COMMIT
    assert (root / "docs" / "a.txt").read_text(encoding="utf-8") == "Fièvre et toux.\n"
    assert sum(upstream["handler"].requests.values()) == 2
    fetch_resource("corpus", cache, base_url=upstream["url"], manifests=upstream["manifests"])
    assert sum(upstream["handler"].requests.values()) == 2


def test_fetch_reads_base_url_from_environment(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    monkeypatch.setenv("PARTAGES_BASE_URL", upstream["url"])
    monkeypatch.setenv("PARTAGES_CACHE", str(tmp_path / "env-cache"))
    root = fetch_resource("corpus", manifests=upstream["manifests"])
    assert root.is_relative_to(tmp_path / "env-cache")
    assert (root / "LICENSE").is_file()


def test_fetch_retries_server_errors(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    path = f"/someone/corpus/{COMMIT}/docs/a.txt"
    upstream["handler"].fail_first[path] = 2
    root = fetch_resource("corpus", tmp_path / "cache", base_url=upstream["url"], manifests=upstream["manifests"],
                          backoff=0)
    assert upstream["handler"].requests[path] == 3
    assert (root / "docs" / "a.txt").is_file()


def test_fetch_gives_up_after_retries(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    upstream["handler"].fail_first[f"/someone/corpus/{COMMIT}/docs/a.txt"] = 100
    with pytest.raises(DownloadError, match=r"docs/a\.txt: HTTP 503"):
        fetch_resource("corpus", tmp_path / "cache", base_url=upstream["url"], manifests=upstream["manifests"],
                       retries=2, backoff=0)


def test_fetch_missing_file_names_url(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    (upstream["repo"] / "LICENSE").unlink()
    with pytest.raises(DownloadError, match=r"/LICENSE: HTTP 404"):
        fetch_resource("corpus", tmp_path / "cache", base_url=upstream["url"], manifests=upstream["manifests"])


def test_fetch_checksum_mismatch_leaves_nothing(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    (upstream["repo"] / "docs" / "a.txt").write_text("Texte modifié.\n", encoding="utf-8")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=r"docs/a\.txt: SHA-256 is [0-9a-f]{64}, expected"):
        fetch_resource("corpus", cache, base_url=upstream["url"], manifests=upstream["manifests"])
    folder = cache / "someone" / "corpus" / COMMIT / "docs"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_fetch_refetches_corrupted_cache(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    kw = dict(base_url=upstream["url"], manifests=upstream["manifests"])
    root = fetch_resource("corpus", tmp_path / "cache", **kw)
    (root / "LICENSE").write_text("altered\n")
    fetch_resource("corpus", tmp_path / "cache", **kw)
    assert (root / "LICENSE").read_text() == "MIT\n"


def test_fetch_refused_suggests_mirror(tmp_path, monkeypatch, upstream):
    monkeypatch.delenv("PARTAGES_MIRROR", raising=False)
    with pytest.raises(DownloadError, match="PARTAGES_MIRROR"):
        fetch_resource("corpus", tmp_path / "cache", base_url="http://127.0.0.1:9", manifests=upstream["manifests"],
                       retries=0)


def test_fetch_copies_real_resources_from_mirror(mirror, tmp_path):
    root = fetch_resource("abbreviations", tmp_path, mirror=mirror)
    for f in get_resource("abbreviations").files:
        assert sha256_file(root / f.path) == f.sha256


# --- E3C French against the mirror ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def e3c_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("e3c-cache")


@pytest.fixture
def e3c_env(mirror, e3c_cache, monkeypatch):
    monkeypatch.setenv("PARTAGES_MIRROR", str(mirror))
    return e3c_cache


def test_e3c_layer1_counts(e3c_env):
    docs = load_e3c(layer=1, policy="keep", cache_dir=e3c_env)
    assert len(docs) == 81
    read = Counter()
    for d in docs:
        read.update(d.meta["annotations"]["read"])
    assert read["CLINENTITY"] == 1327
    assert read["BODYPART"] == 659
    assert corpus_stats(docs)["entities"] == {"ANAT": 659, "DISO": 1327}
    assert sum(e.meta.get("discontinuous", False) for d in docs for e in d.entities) == 59
    for d in docs:
        validate_document(d)
        assert d.meta["licence"] == "CC BY-NC 4.0"


def test_e3c_layer1_split(e3c_env):
    train = load_e3c(split="train", cache_dir=e3c_env)
    test = load_e3c(split="test", cache_dir=e3c_env)
    assert (len(train), len(test)) == (36, 45)
    assert not {d.id for d in train} & {d.id for d in test}
    assert {d.meta["split"] for d in train} == {"train"}
    assert {d.meta["split"] for d in test} == {"test"}


def test_e3c_outermost_accounts_all_mentions(e3c_env):
    docs = load_e3c(cache_dir=e3c_env)
    stats = corpus_stats(docs)
    a = stats["annotations"]
    dropped = sum(sum(a[k].values()) for k in ("nested", "crossing", "duplicate"))
    assert sum(stats["entities"].values()) + dropped == 1327 + 659
    assert a["kept"] == stats["entities"]
    for d in docs:
        validate_document(d)
        for prev, e in zip(d.entities, d.entities[1:]):
            assert prev.end <= e.start, (d.id, prev, e)


def test_e3c_layer2_has_no_split(e3c_env):
    docs = load_e3c(layer=2, cache_dir=e3c_env)
    assert len(docs) == 168
    assert {d.meta["split"] for d in docs} == {None}
    with pytest.raises(ConfigError, match="no official split"):
        load_e3c(layer=2, split="train", cache_dir=e3c_env)


def test_e3c_xmi_loads_without_warnings(e3c_env):
    root = fetch_resource("e3c", e3c_env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = read_xmi(next((root / "data_annotation/French/layer1").glob("*.xml")))
    assert doc.entities


def test_xmi_uses_typesystem_beside_file(tmp_path):
    text = "Douleur abdominale."
    (tmp_path / "a.xmi").write_text(make_xmi(text, [("CLINENTITY", 0, 18, {"entityID": "C0000737"})]), encoding="utf-8")
    from lxml import etree
    ts = infer_typesystem(etree.fromstring((tmp_path / "a.xmi").read_bytes()))
    (tmp_path / "TypeSystem.xml").write_text(ts.to_xml(), encoding="utf-8")
    docs = load_corpus(tmp_path, label_map="e3c")
    assert [(e.label, e.text, e.concept) for e in docs[0].entities] == [("DISO", "Douleur abdominale", "C0000737")]


# --- bad input: the error names the file and line or document, and nothing is written ------------------------

def _brat(folder: Path, text: str, ann: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cr.txt").write_text(text, encoding="utf-8")
    (folder / "cr.ann").write_text(ann, encoding="utf-8")
    return folder


def _bad_xmi(d: Path):
    (d / "bad.xmi").write_text(make_xmi("Fièvre.", [])[:-20], encoding="utf-8")
    return d / "bad.xmi", r"bad\.xmi: line 1: not well-formed XML", []


def _xmi_offsets(d: Path):
    (d / "off.xmi").write_text(make_xmi("Fièvre.", [("CLINENTITY", 0, 30, {})]), encoding="utf-8")
    return d / "off.xmi", r"off\.xmi: annotation xmi:id 10 \(CLINENTITY at 0-30\) lies outside", []


def _brat_past_end(d: Path):
    return _brat(d / "b1", "Fièvre.\n", "T1\tDISO 0 6\tFièvre\nT2\tDISO 3 20\tvre\n"), r"cr\.ann: line 2: T2 span 3-20 ends past the end of cr\.txt", []


def _brat_text_differs(d: Path):
    return _brat(d / "b2", "Fièvre.\n", "T1\tDISO 0 6\tfievre\n"), r"cr\.ann: line 1: T1 text in the \.ann is 'fievre', but cr\.txt has 'Fièvre'", []


def _brat_malformed(d: Path):
    return _brat(d / "b3", "Fièvre.\n", "T1\tDISO 0-6\tFièvre\n"), r"cr\.ann: line 1: malformed text-bound annotation", []


def _not_utf8(d: Path):
    (d / "b4").mkdir()
    (d / "b4" / "cr.txt").write_bytes("Toux.\nFièvre.\n".encode("latin-1"))
    (d / "b4" / "cr.ann").write_text("T1\tDISO 0 4\tToux\n")
    return d / "b4", r"cr\.txt: line 2: not valid UTF-8", []


def _conll_not_utf8(d: Path):
    (d / "c.conll").write_bytes("Toux O\nfièvre B-DISO\n".encode("latin-1"))
    return d / "c.conll", r"c\.conll: line 2: not valid UTF-8", []


def _jsonl_not_json(d: Path):
    (d / "c.jsonl").write_text('{"id": "a", "text": "Toux."}\n{"id": "b", "text": \n')
    return d / "c.jsonl", r"c\.jsonl: line 2: not JSON", []


def _unmapped_strict(d: Path):
    return (_brat(d / "b5", "Toux le 3 mai.\n", "T1\tDISO 0 4\tToux\nT2\tDATE 8 13\t3 mai\n"),
            r"cr\.ann: document 'cr': label 'DATE' \('3 mai' at 8-13\) is not in the label map", ["--strict"])


BAD_INPUTS = [_bad_xmi, _xmi_offsets, _brat_past_end, _brat_text_differs, _brat_malformed, _not_utf8,
              _conll_not_utf8, _jsonl_not_json, _unmapped_strict]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=[f.__name__.strip("_") for f in BAD_INPUTS])
def test_bad_input_convert_writes_nothing(make, tmp_path, capsys):
    source, pattern, args = make(tmp_path)
    out = tmp_path / "out" / "corpus.jsonl"
    out.parent.mkdir()
    assert main(["data", "convert", str(source), str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("partages data: error: ")
    assert re.search(pattern, err), err
    assert list(out.parent.iterdir()) == []


def test_unmapped_label_is_counted(tmp_path):
    source, _, _ = _unmapped_strict(tmp_path)
    doc = load_corpus(source)[0]
    assert [e.label for e in doc.entities] == ["DISO"]
    assert doc.meta["annotations"]["unmapped"] == {"DATE": 1}
    assert corpus_stats([doc])["annotations"]["unmapped"] == {"DATE": 1}


def test_label_map_file_on_command_line(tmp_path, capsys):
    source, _, _ = _unmapped_strict(tmp_path)
    (tmp_path / "map.yaml").write_text("DISO: DISO\nDATE: null\n")
    assert main(["data", "stats", str(source), "--json", "--strict", "--label-map", str(tmp_path / "map.yaml")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entities"] == {"DISO": 1}
    assert stats["annotations"]["ignored"] == {"DATE": 1}


# --- the command line -------------------------------------------------------------------------------------------

def test_cli_fetch_prints_folder(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARTAGES_MIRROR", str(mirror))
    assert main(["data", "fetch", "abbreviations", "--cache-dir", str(tmp_path)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "sense_inventory" / "sense_inventory.tsv").is_file()


def test_cli_stats_e3c_json(e3c_env, monkeypatch, capsys):
    monkeypatch.setenv("PARTAGES_CACHE", str(e3c_env))
    assert main(["data", "stats", "e3c", "--json", "--split", "test"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 45
    assert set(stats["entities"]) == {"ANAT", "DISO"}
    assert stats["tokens"] > 10_000


def test_cli_convert_roundtrip(e3c_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PARTAGES_CACHE", str(e3c_env))
    out = tmp_path / "e3c.parquet"
    assert main(["data", "convert", "e3c", str(out)]) == 0
    again = load_corpus(out)
    assert [d.entities for d in again] == [d.entities for d in load_e3c(cache_dir=e3c_env)]


def test_cli_unknown_resource(capsys):
    with pytest.raises(SystemExit):
        main(["data", "fetch", "quaero"])
    assert "invalid choice: 'quaero'" in capsys.readouterr().err


# --- properties ---------------------------------------------------------------------------------------------------

spans = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 10), st.sampled_from(["DISO", "ANAT", "CHEM"])),
                 max_size=12)


@given(spans)
@settings(max_examples=200, deadline=None)
def test_flatten_keeps_disjoint_outermost(raw):
    ents = [Entity(s, s + n, label, "x" * n) for s, n, label in raw]
    kept, dropped = flatten_entities(ents)
    assert len(kept) + sum(sum(c.values()) for c in dropped.values()) == len(ents)
    for a, b in zip(kept, kept[1:]):
        assert a.end <= b.start
    for e in ents:
        assert any(k.start < e.end and e.start < k.end for k in kept)
    if ents:
        first = min(ents, key=lambda e: (e.start, -e.end))
        assert (first.start, first.end) in {(k.start, k.end) for k in kept}


tokens = st.lists(st.tuples(st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=6),
                            st.sampled_from(["O", "B-DISO", "I-DISO", "B-ANAT", "I-ANAT"])), min_size=1, max_size=15)


@given(tokens)
@settings(max_examples=100, deadline=None)
def test_conll_spans_match_tags(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("conll") / "s.conll"
    path.write_text("".join(f"{t}\t{tag}\n" for t, tag in rows), encoding="utf-8")
    (doc,) = read_conll(path)
    validate_document(doc)
    assert doc.text == " ".join(t for t, _ in rows)
    starts = sum(tag.startswith("B-") or (tag.startswith("I-") and (i == 0 or rows[i - 1][1][2:] != tag[2:]))
                 for i, (_, tag) in enumerate(rows))
    assert len(doc.entities) == starts
