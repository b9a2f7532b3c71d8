"""An OpenAI-compatible chat completions server on 127.0.0.1 for tests, with scripted failures.

`FakeOpenAIServer(respond)` serves `POST /v1/chat/completions` from a background thread. For each
request it calls `respond(body, attempt)`. `body` is the decoded JSON request, and `attempt` counts
earlier requests with the same messages and seed (0 for the first). The server then sends what the
returned `Reply` describes: a chat completion, an HTTP error status with headers, a response that never
comes (`hang`), or a connection closed without any response (`drop`).
Every received request is recorded in `server.received` (time, body, headers, attempt).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    "What the server sends back for one request."
    kind: str = "ok"  # ok, status, hang, drop, invalid_json or raw
    content: str = ""  # assistant message content when `kind` is ok; the whole body when `kind` is raw
    finish_reason: str = "stop"
    status: int = 200  # HTTP status when `kind` is status
    headers: dict = field(default_factory=dict)  # extra response headers, e.g. {"Retry-After": "1"}
    delay_s: float = 0.0  # seconds to wait before responding


def echo(body: dict, attempt: int) -> Reply:
    "Default reply: the last user message, prefixed, as a completed generation."
    last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    return Reply(content=f"Réponse : {last}")


def request_key(body: dict) -> str:
    "Identity of a request across retries: its messages and seed."
    return json.dumps([body.get("messages"), body.get("seed")], sort_keys=True, ensure_ascii=False)


@dataclass
class Received:
    "One HTTP request as the server saw it."
    time: float  # time.monotonic() at arrival
    path: str
    body: dict
    headers: dict
    attempt: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler never blocks shutdown
    request_queue_size = 64  # the default of 5 refuses connections under a burst of concurrent requests


class FakeOpenAIServer:
    "Chat completions server on 127.0.0.1 with an ephemeral port; use it as a context manager."

    def __init__(self, respond: Callable[[dict, int], Reply] = echo, hang_s: float = 10.0):
        self.respond, self.hang_s = respond, hang_s
        self.received: list[Received] = []
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.completions_sent = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _record(self, path: str, body: dict, headers: dict) -> int:
        with self._lock:
            key = request_key(body)
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            self.received.append(Received(time.monotonic(), path, body, headers, attempt))
        return attempt

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def setup(self):
                super().setup()
                with server._lock:
                    server.connections += 1

            def _send_json(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                attempt = server._record(self.path, body, dict(self.headers))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send_json(404, {"error": {"message": f"unknown path {self.path}"}})
                    return
                reply = server.respond(body, attempt)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if reply.delay_s:
                        server._release.wait(reply.delay_s)
                    self._send_reply(body, reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out before the response was sent
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send_reply(self, body: dict, reply: Reply):
                if reply.kind == "drop":
                    self.close_connection = True
                    return
                if reply.kind == "hang":
                    server._release.wait(server.hang_s)
                    reply = Reply(content="trop tard")
                if reply.kind == "status":
                    error = {"error": {"message": f"scripted status {reply.status}", "type": "server_error"}}
                    self._send_json(reply.status, error, reply.headers)
                    return
                if reply.kind in ("invalid_json", "raw"):
                    data = b"{not json" if reply.kind == "invalid_json" else reply.content.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                completion_tokens = len(reply.content.split())
                payload = {
                    "id": f"chatcmpl-{len(server.received)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                 "message": {"role": "assistant", "content": reply.content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                }
                self._send_json(200, payload, reply.headers)
                with server._lock:
                    server.completions_sent += 1

        return Handler

    def __enter__(self) -> FakeOpenAIServer:
        self._server = _Server(("127.0.0.1", 0), self._make_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def chat_requests(self) -> list[Received]:
        "Requests received on the chat completions path."
        return [r for r in self.received if r.path.rstrip("/") == "/v1/chat/completions"]
