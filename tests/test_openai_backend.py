"""Reliability of `OpenAIBackend` against a local OpenAI-compatible server that misbehaves on purpose.

The server (tests/fake_openai_server.py) listens on 127.0.0.1 only. Timeouts and retries are kept short so
the whole file runs in well under a minute.
"""
import io
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402

from partages.backends import GenerationRequest, OpenAIBackend, ResponseCache, SensitiveDataError  # noqa: E402

KEY_VALUE = "sk-test-7f3a9c1e5b2d4a60"


def make_request(i: int, content: str, **kw) -> GenerationRequest:
    return GenerationRequest(f"r{i}", [{"role": "user", "content": content}], temperature=0.7, top_p=0.9,
                             max_tokens=50, seed=i, **kw)


def by_content(body: dict, attempt: int) -> Reply:
    "Misbehave according to the first word of the user message (see the cases below)."
    word = body["messages"][-1]["content"].split()[0]
    if word == "429":
        return Reply(kind="status", status=429, headers={"Retry-After": "0.2"})
    if word == "429once" and attempt == 0:
        return Reply(kind="status", status=429, headers={"Retry-After": "0.2"})
    if word == "500":
        return Reply(kind="status", status=500)
    if word == "400":
        return Reply(kind="status", status=400)
    if word == "hang":
        return Reply(kind="hang")
    if word == "drop":
        return Reply(kind="drop")
    if word == "json":
        return Reply(kind="invalid_json")
    if word == "nochoice":
        return Reply(kind="raw", content='{"choices": [{}]}')
    if word == "string":
        return Reply(kind="raw", content='"une chaîne"')
    if word == "broken":
        return Reply(content="Patient avec <DISO>fièvre et toux.")
    if word == "long":
        return Reply(content="Patient avec <DISO>fièvre</DISO> et", finish_reason="length")
    return Reply(content="Patient avec <DISO>fièvre</DISO>.")


def backend(server: FakeOpenAIServer, tmp_path: Path, **kw) -> OpenAIBackend:
    settings = dict(timeout_s=5, max_retries=1, max_concurrency=4, cache_path=tmp_path / "cache.jsonl",
                    api_key_env="PARTAGES_TEST_KEY")
    settings.update(kw)
    return OpenAIBackend(server.base_url, "fake-model", **settings)


def test_retry_after_honoured(tmp_path):
    with FakeOpenAIServer(lambda body, attempt: Reply(kind="status", status=429, headers={"Retry-After": "1"})
                          if attempt == 0 else Reply(content="<DISO>toux</DISO>")) as server:
        [result] = backend(server, tmp_path).generate([make_request(0, "bonjour")])
        first, second = server.chat_requests()
    assert result.status == "completed"
    assert result.text == "<DISO>toux</DISO>"
    assert (first.attempt, second.attempt) == (0, 1)
    assert 0.9 <= second.time - first.time < 3.0  # without Retry-After the first backoff is 0.375 to 0.5 s


def test_misbehaving_server_every_request_ends(tmp_path):
    words = ["ok", "429once", "429", "500", "400", "hang", "drop", "json", "nochoice", "string", "broken", "long"]
    requests = [make_request(i, f"{w} demande {i}") for i, w in enumerate(words)]
    with FakeOpenAIServer(by_content, hang_s=10) as server:
        t0 = time.perf_counter()
        results = backend(server, tmp_path, timeout_s=1.5).generate(requests)
        elapsed = time.perf_counter() - t0
    status = {w: (r.status, r.failure_reason) for w, r in zip(words, results)}
    assert [r.id for r in results] == [r.id for r in requests]
    assert status == {
        "ok": ("completed", None), "429once": ("completed", None), "429": ("failed", "rate_limited"),
        "500": ("failed", "server_error"), "400": ("failed", "http_400"), "hang": ("failed", "timeout"),
        "drop": ("failed", "connection_error"), "json": ("failed", "invalid_response"),
        "nochoice": ("failed", "invalid_response"), "string": ("failed", "invalid_response"),
        "broken": ("completed", None), "long": ("completed", None)}
    assert results[-1].finish_reason == "length"
    assert results[0].prompt_tokens == 3
    assert results[0].completion_tokens == 3
    assert elapsed < 10


def test_cache_second_run_sends_nothing(tmp_path):
    requests = [make_request(i, f"ok demande {i}") for i in range(6)]
    with FakeOpenAIServer(by_content) as server:
        b = backend(server, tmp_path)
        first = b.generate(requests)
        sent_first = len(server.chat_requests())
        again = backend(server, tmp_path).generate(requests)
        sent_again = len(server.chat_requests()) - sent_first
    assert sent_first == 6
    assert sent_again == 0
    assert [r.text for r in again] == [r.text for r in first]
    assert all(r.cached for r in again)
    assert [r.prompt_tokens for r in again] == [r.prompt_tokens for r in first]


def test_rerun_sends_only_failed(tmp_path):
    requests = [make_request(i, f"{'500' if i % 2 else 'ok'} demande {i}") for i in range(6)]
    healthy = False

    def respond(body, attempt):
        return Reply(content="<DISO>toux</DISO>") if healthy else by_content(body, attempt)

    with FakeOpenAIServer(respond) as server:
        first = backend(server, tmp_path, max_retries=0).generate(requests)
        sent_first = len(server.chat_requests())
        healthy = True
        second = backend(server, tmp_path).generate(requests)
        resent = sorted(r.body["seed"] for r in server.chat_requests()[sent_first:])
    assert [r.status for r in first] == ["completed", "failed"] * 3
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 6
    assert resent == [1, 3, 5]
    assert all(r.status == "completed" for r in second)


KILLED_RUN = """
import sys
from partages.backends import GenerationRequest, OpenAIBackend
requests = [GenerationRequest(f"r{i}", [{"role": "user", "content": f"ok demande {i}"}], temperature=0.7, top_p=0.9,
                              max_tokens=50, seed=i) for i in range(12)]
OpenAIBackend(sys.argv[1], "fake-model", api_key_env="PARTAGES_TEST_KEY", max_concurrency=2,
              cache_path=sys.argv[2]).generate(requests)
"""


def test_killed_run_keeps_completed(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with FakeOpenAIServer(lambda body, attempt: Reply(content="<DISO>toux</DISO>", delay_s=0.3)) as server:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, server.base_url, str(cache)])
        deadline = time.monotonic() + 60
        while server.completions_sent < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        kept = len(ResponseCache(cache))
        sent_before = len(server.chat_requests())
        requests = [make_request(i, f"ok demande {i}") for i in range(12)]
        results = backend(server, tmp_path, max_concurrency=2).generate(requests)
        resent = len(server.chat_requests()) - sent_before
    assert 1 <= kept < 12
    assert resent == 12 - kept
    assert all(r.status == "completed" for r in results)


def test_concurrency_bounded(tmp_path):
    requests = [make_request(i, f"ok demande {i}") for i in range(8)]
    with FakeOpenAIServer(lambda body, attempt: Reply(content="ok", delay_s=0.2)) as server:
        backend(server, tmp_path, max_concurrency=2, cache_path=None).generate(requests)
    assert server.max_in_flight == 2


def test_budget_stops_cleanly(tmp_path):
    # Each response costs 3 prompt + 3 completion tokens, so a budget of 10 allows two requests.
    requests = [make_request(i, f"ok demande {i}") for i in range(5)]
    with FakeOpenAIServer(by_content) as server:
        b = backend(server, tmp_path, max_concurrency=1, token_budget=10)
        results = b.generate(requests)
        sent = len(server.chat_requests())
    assert [r.status for r in results] == ["completed"] * 2 + ["failed"] * 3
    assert {r.failure_reason for r in results[2:]} == {"budget_exhausted"}
    assert sent == 2
    assert b.stats["prompt_tokens"] + b.stats["completion_tokens"] == 12


def test_api_key_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTAGES_TEST_KEY", KEY_VALUE)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", "partages", "openai", "httpx", "httpx2", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        requests = [make_request(i, f"{w} demande") for i, w in enumerate(["ok", "500", "429once", "drop"])]
        with FakeOpenAIServer(by_content) as server:
            b = backend(server, tmp_path)
            b.generate(requests)
            (tmp_path / "describe.txt").write_text(repr(b.describe()) + repr(vars(b)))
            sent_keys = {r.headers.get("authorization") for r in server.chat_requests()}
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    assert sent_keys == {f"Bearer {KEY_VALUE}"}
    assert "request r1 failed" in captured.getvalue()
    assert KEY_VALUE not in captured.getvalue()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2
    for p in files:
        assert KEY_VALUE.encode() not in p.read_bytes(), p


def test_sensitive_remote_rejected_before_any_connection(monkeypatch):
    attempts = []

    def record(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("a network call was attempted")

    monkeypatch.setattr(socket, "getaddrinfo", record)
    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket, "create_connection", record)
    monkeypatch.setenv("PARTAGES_TEST_KEY", KEY_VALUE)
    b = OpenAIBackend("http://example.invalid/v1", "fake-model", api_key_env="PARTAGES_TEST_KEY", max_retries=0)
    requests = [make_request(0, "ok"), make_request(1, "ok", sensitive=True)]
    with pytest.raises(SensitiveDataError, match="marked sensitive"):
        b.generate(requests)
    assert attempts == []


def test_sensitive_local_allowed(tmp_path):
    with FakeOpenAIServer(by_content) as server:
        [result] = backend(server, tmp_path).generate([make_request(0, "ok", sensitive=True)])
    assert result.status == "completed"
