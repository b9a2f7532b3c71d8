"""End-to-end tests of `partages.generate`: template runs, runs against a misbehaving local
OpenAI-compatible server, resumption from the cache, budgets, secrets, sensitive data, the transformers
backend on a tiny random model, and the command line."""
import io
import json
import logging
import re
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402

from partages.backends import (GenerationResult, SensitiveDataError, TemplateBackend,  # noqa: E402
                               TransformersBackend, make_tiny_chat_model)
from partages.core import load_documents  # noqa: E402
from partages.generate import (REJECTION_REASONS, GenerateConfig, generate_corpus, plan_requests)  # noqa: E402
from partages.templates import render_report  # noqa: E402

OUTPUTS = ("corpus.parquet", "rejections.jsonl", "stats.json", "README.md")
KEY_VALUE = "sk-test-generate-41c9e0d2"


def read_outputs(folder: Path, names=OUTPUTS) -> dict:
    return {n: (folder / n).read_bytes() for n in names}


def read_rejections(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rejections.jsonl").read_text().splitlines()]


def openai_config(base_url: str, **kw) -> GenerateConfig:
    settings = dict(backend="openai", n_stays=6, seed=11,
                    openai=dict(base_url=base_url, model="fake-model", api_key_env="PARTAGES_TEST_KEY",
                                timeout_s=5, max_retries=1, max_concurrency=4))
    settings.update(kw)
    return GenerateConfig.model_validate(settings)


def faithful_llm(config: GenerateConfig, misbehave=None):
    """Return a `respond` function for the fake server, and the plan it serves.

    It returns the template report of each planned prompt's stay, as a model that follows the prompt
    would. `misbehave(index, planned, markup, attempt)` may return another `Reply` for some requests."""
    plan = plan_requests(config, config.seed)
    by_messages = {json.dumps(p.request.messages, sort_keys=True): (i, p) for i, p in enumerate(plan)}

    def respond(body, attempt):
        i, p = by_messages[json.dumps(body["messages"], sort_keys=True)]
        r = p.request
        markup = render_report(r.stay, r.doc_type, r.seed, style=r.style)
        reply = misbehave(i, p, markup, attempt) if misbehave else None
        return reply or Reply(content=markup)

    return respond, plan


def test_template_run_reproducible(tmp_path):
    config = GenerateConfig(n_stays=8, seed=3)
    first = generate_corpus(config, tmp_path / "a")
    again = generate_corpus(config, tmp_path / "a")
    other = generate_corpus(config, tmp_path / "b")
    assert first == again == other
    assert read_outputs(tmp_path / "a") == read_outputs(tmp_path / "b")
    assert first["documents"] > 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["extra"]["documents"] == first["documents"]


def test_seed_changes_corpus(tmp_path):
    config = GenerateConfig(n_stays=4)
    generate_corpus(config, tmp_path / "a", seed=1)
    generate_corpus(config, tmp_path / "b", seed=2)
    assert read_outputs(tmp_path / "a")["corpus.parquet"] != read_outputs(tmp_path / "b")["corpus.parquet"]


def test_corpus_loads_with_datasets(tmp_path):
    import datasets
    stats = generate_corpus(GenerateConfig(n_stays=5, seed=4), tmp_path)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "corpus.parquet"), split="train")
    assert len(ds) == stats["documents"]
    meta = json.loads(ds[0]["meta"])
    for key in ("stay", "doc_type", "prompt_id", "prompt_hash", "backend", "model", "sampling", "seed"):
        assert key in meta, key
    assert meta["stay"]["id"] in ds[0]["id"]
    for doc in load_documents(tmp_path / "corpus.parquet"):
        for e in doc.entities:
            assert doc.text[e.start:e.end] == e.text


def test_jsonl_output(tmp_path):
    stats = generate_corpus(GenerateConfig(n_stays=3, output_format="jsonl"), tmp_path)
    assert len(load_documents(tmp_path / "corpus.jsonl")) == stats["documents"]
    assert "data_files: corpus.jsonl" in (tmp_path / "README.md").read_text()


def test_near_duplicates_removed(tmp_path):
    def same_report(stay, doc_type, seed, style=None):
        dx = stay.main_diagnosis
        return (f"Patient hospitalisé pour <DISO code=\"{dx.code}\">{dx.term}</DISO>. Évolution favorable sous "
                "traitement, retour à domicile avec un suivi par le médecin traitant dans un mois.")
    stats = generate_corpus(GenerateConfig(n_stays=6, filters=dict(near_duplicate_threshold=0.5)), tmp_path,
                            backend=TemplateBackend(same_report))
    rejected = [r for r in read_rejections(tmp_path) if r["reason"] == "near_duplicate"]
    assert stats["rejection_reasons"]["near_duplicate"] == len(rejected) > 0
    kept = {d.id for d in load_documents(tmp_path / "corpus.parquet")}
    assert all(r["detail"] in kept for r in rejected)


def test_copied_literature_rejected(tmp_path):
    literature = tmp_path / "literature"
    literature.mkdir()
    passage = ("Une femme de 63 ans était adressée pour une dyspnée d'effort progressive évoluant depuis trois mois. "
               "L'examen clinique retrouvait des crépitants aux deux bases et des œdèmes des membres inférieurs.")
    (literature / "cas1.txt").write_text(passage)

    class CopyingBackend(TemplateBackend):
        "Appends the only passage, 32 words, to every report."
        def generate(self, requests, desc="generate"):
            results = super().generate(requests, desc)
            for res in results:
                res.text += " " + passage
            return results

    config = GenerateConfig(n_stays=3, literature=dict(source=str(literature)))
    stats = generate_corpus(config, tmp_path / "run", backend=CopyingBackend())
    assert stats["rejection_reasons"]["copied_literature"] == stats["requests"]
    detail = read_rejections(tmp_path / "run")[0]["detail"]
    assert detail["passage"] == "cas1"
    assert detail["longest_shared_words"] == 32


def misbehaviour(i, planned, markup, attempt):
    "One kind of misbehaviour per request index, cycling over ten kinds."
    kind = i % 10
    if kind == 1:
        return Reply(kind="status", status=429, headers={"Retry-After": "0.1"})
    if kind == 2:
        return Reply(kind="status", status=500)
    if kind == 3:
        return Reply(kind="hang")
    if kind == 4:
        return Reply(kind="drop")
    if kind == 5:  # the last closing tag removed: a tag is left open
        last = markup.rindex("</")
        return Reply(content=markup[:last] + markup[markup.index(">", last) + 1:])
    if kind == 6:
        return Reply(content=markup[: len(markup) // 2], finish_reason="length")
    if kind == 7:
        return Reply(content="The patient was admitted for <DISO>heart failure</DISO> and discharged home after a week.")
    if kind == 8:  # no DISO entity left, so no entity names the main diagnosis
        return Reply(content=re.sub(r"</?DISO[^>]*>", "", markup))
    if kind == 9:
        return Reply(kind="status", status=429, headers={"Retry-After": "0.1"}) if attempt == 0 else None
    return None


EXPECTED_REASON = {1: "request_failed", 2: "request_failed", 3: "request_failed", 4: "request_failed",
                   5: "unbalanced_tags", 6: "truncated", 7: "not_french", 8: "missing_main_diagnosis"}
EXPECTED_DETAIL = {1: "rate_limited", 2: "server_error", 3: "timeout", 4: "connection_error"}


def test_misbehaving_server_run_finishes(tmp_path):
    with FakeOpenAIServer(lambda b, a: None, hang_s=10) as server:
        config = openai_config(server.base_url, n_stays=8)
        config.openai.timeout_s = 1.5
        server.respond, plan = faithful_llm(config, misbehaviour)
        stats = generate_corpus(config, tmp_path)
    assert len(plan) >= 10
    rejections = {r["id"]: r for r in read_rejections(tmp_path)}
    kept = {d.id for d in load_documents(tmp_path / "corpus.parquet")}
    assert len(kept) + len(rejections) == len(plan)
    must_name_diagnosis = config.filters.main_diagnosis_doc_types
    for i, p in enumerate(plan):
        reason = EXPECTED_REASON.get(i % 10)
        if reason == "missing_main_diagnosis" and p.request.doc_type not in must_name_diagnosis:
            reason = None
        if reason is None:
            assert p.request.id in kept, (i, rejections.get(p.request.id))
        else:
            assert rejections[p.request.id]["reason"] == reason, i
            if i % 10 in EXPECTED_DETAIL:
                assert rejections[p.request.id]["detail"] == EXPECTED_DETAIL[i % 10]
    counts = stats["rejection_reasons"]
    assert set(counts) == set(REJECTION_REASONS)
    assert sum(counts.values()) == len(rejections)
    assert counts["request_failed"] == stats["failed"] == sum(1 for i in range(len(plan)) if i % 10 in (1, 2, 3, 4))
    assert stats["tokens"]["total"] > 0


def test_openai_run_resumes_from_cache(tmp_path):
    failing = True

    def flaky(i, planned, markup, attempt):
        return Reply(kind="status", status=500) if failing and i % 2 else None

    with FakeOpenAIServer(lambda b, a: None) as server:
        config = openai_config(server.base_url, openai=dict(base_url=server.base_url, model="fake-model",
                               api_key_env="PARTAGES_TEST_KEY", timeout_s=5, max_retries=0))
        server.respond, plan = faithful_llm(config, flaky)
        interrupted = generate_corpus(config, tmp_path / "run")
        sent_first = len(server.chat_requests())
        failing = False
        resumed = generate_corpus(config, tmp_path / "run")
        sent_resume = len(server.chat_requests()) - sent_first
        again = generate_corpus(config, tmp_path / "run")
        sent_again = len(server.chat_requests()) - sent_first - sent_resume
        clean = generate_corpus(config, tmp_path / "clean")
    assert sent_first == len(plan)
    assert interrupted["failed"] == len(plan) // 2
    assert sent_resume == len(plan) // 2
    assert sent_again == 0
    assert resumed == again == clean
    assert read_outputs(tmp_path / "run") == read_outputs(tmp_path / "clean")


def test_budget_stops_run(tmp_path):
    with FakeOpenAIServer(lambda b, a: None) as server:
        config = openai_config(server.base_url)
        config.openai.max_concurrency = 1
        server.respond, plan = faithful_llm(config)
        first = plan[0].request
        cost = sum(len(m["content"].split()) for m in first.messages)
        cost += len(render_report(first.stay, first.doc_type, first.seed, style=first.style).split())
        config.openai.token_budget = cost
        stats = generate_corpus(config, tmp_path)
        sent = len(server.chat_requests())
    assert sent == 1
    assert stats["failure_reasons"] == {"budget_exhausted": len(plan) - 1}
    details = [r["detail"] for r in read_rejections(tmp_path) if r["reason"] == "request_failed"]
    assert details == ["budget_exhausted"] * (len(plan) - 1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"


def test_api_key_absent_from_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARTAGES_TEST_KEY", KEY_VALUE)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    loggers = [logging.getLogger(n) for n in ("", "partages", "openai", "httpx2")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        with FakeOpenAIServer(lambda b, a: None) as server:
            config = openai_config(server.base_url)
            server.respond, _ = faithful_llm(config, lambda i, p, m, a: Reply(kind="status", status=500) if i == 0 else None)
            generate_corpus(config, tmp_path)
            auth = {r.headers.get("authorization") for r in server.chat_requests()}
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    out, err = capsys.readouterr()
    logs = captured.getvalue()
    assert auth == {f"Bearer {KEY_VALUE}"}
    assert "generate:" in logs
    assert "failed: server_error" in logs
    assert KEY_VALUE not in logs
    assert KEY_VALUE not in out + err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"cache.jsonl", "manifest.json", *OUTPUTS}
    for p in files:
        assert KEY_VALUE.encode() not in p.read_bytes(), p


def test_sensitive_literature_never_sent_remote(tmp_path, monkeypatch):
    attempts = []

    def record(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("a network call was attempted")

    literature = tmp_path / "notes"
    literature.mkdir()
    (literature / "note.txt").write_text("Compte rendu d'hospitalisation réel, à ne pas diffuser.")
    monkeypatch.setattr(socket, "getaddrinfo", record)
    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket, "create_connection", record)
    monkeypatch.setenv("PARTAGES_TEST_KEY", KEY_VALUE)
    config = openai_config("http://example.invalid/v1", literature=dict(source=str(literature), sensitive=True))
    with pytest.raises(SensitiveDataError, match="not a local host"):
        generate_corpus(config, tmp_path / "run")
    assert attempts == []
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["type"] == "SensitiveDataError"


def test_transformers_backend_run(tmp_path):
    model = make_tiny_chat_model(tmp_path / "tiny")
    config = GenerateConfig(backend="transformers", n_stays=1, transformers=dict(model=str(model), batch_size=4),
                            sampling=dict(max_tokens=8), prompt=dict(few_shot=0))
    stats = generate_corpus(config, tmp_path / "run")
    assert stats["requests"] > 0
    assert stats["completed"] == stats["requests"]
    assert stats["tokens"]["completion"] > 0
    assert stats["documents"] + stats["rejected"] == stats["requests"]
    assert stats["rejection_reasons"]["truncated"] > 0
    again = generate_corpus(config, tmp_path / "run")
    assert again == stats
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["extra"]["backend_stats"]["sent"] == 0


def test_transformers_greedy_stop(tmp_path):
    import torch
    from partages.backends import GenerationRequest
    folder = make_tiny_chat_model(tmp_path / "tiny")
    backend = TransformersBackend(str(folder))
    assert backend.tokenizer.eos_token_id == 0
    # With every output weight zero all logits tie, and greedy decoding picks token 0, the end of sequence.
    with torch.no_grad():
        backend.lm.lm_head.weight.zero_()
    [result] = backend.generate([GenerationRequest("g", [{"role": "user", "content": "Bonjour"}], temperature=0,
                                                   max_tokens=5)])
    assert isinstance(result, GenerationResult)
    assert result.finish_reason == "stop"
    assert result.text == ""
    assert result.completion_tokens == 1


def test_cli_generate(tmp_path, capsys):
    from partages.cli import main
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("n_stays: 3\nseed: 5\n")
    assert main(["generate", "--config", str(cfg), "--set", "n_stays=2", "--out", str(tmp_path / "run")]) == 0
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["stays"] == 2
    assert stats["seed"] == 5
    assert f"{stats['documents']} documents written" in capsys.readouterr().out
    assert main(["generate", "--config", str(cfg), "--set", "n_stay=2", "--out", str(tmp_path / "bad")]) == 1
    assert "unknown key 'n_stay'" in capsys.readouterr().err
