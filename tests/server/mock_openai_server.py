#!/usr/bin/env python3
"""A small stand-in for `lathe serve`, for developing and testing the web UI without a model.

Python standard library only. It serves what the page needs, in the shapes `lathe serve` uses:

  GET  /                      src/server/webui/index.html (read from disk on every request)
  GET  /health                {"status": "ok"}
  GET  /v1/models             {"object": "list", "data": [{"id": MODEL, ...}]}
  POST /v1/chat/completions   OpenAI chat completions; with "stream": true, Server-Sent Events of
                              chat.completion.chunk objects, one word at a time (--delay seconds
                              apart), ending with `data: [DONE]`; stops as soon as the client goes
  GET  /mock/stats            what the mock saw: the last request body, counts of completed and
                              cancelled streams (for tests)

Errors are OpenAI error objects, {"error": {"message", "type", "code"}}: 401 without the key when
started with --api-key, 400 for bad JSON or bad values (temperature outside [0, 2], top_p outside
(0, 1], max_tokens < 1, a seed that is not a whole number >= 0, messages missing or malformed).

    python3 tests/server/mock_openai_server.py --port 8080 [--api-key KEY] [--delay 0.03]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PAGE = ROOT / "src" / "server" / "webui" / "index.html"
MODEL = "mock-model"

# Some words are not ASCII, so that the page has to decode UTF-8 split across reads.
FILLER = ("the quick brown fox jumps over the lazy dog while a small lathe turns "
          "wooden bowls in a quiet caf\u00e9 workshop near the sea \u2014 \u65e5\u672c").split()


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_request: dict | None = None
        self.requests = 0
        self.completed = 0
        self.cancelled = 0

    def as_dict(self) -> dict:
        with self.lock:
            return {"last_request": self.last_request, "requests": self.requests,
                    "completed": self.completed, "cancelled": self.cancelled}


class BadRequest(Exception):
    pass


def validate(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty array")
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise BadRequest("each message needs a role (system, user, assistant) and a string content")

    def number(name: str, lo: float, hi: float, lo_open: bool = False) -> None:
        if name not in body or body[name] is None:
            return
        v = body[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRequest(f"'{name}' must be a number")
        if v < lo or v > hi or (lo_open and v == lo):
            raise BadRequest(f"'{name}' must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}")

    number("temperature", 0.0, 2.0)
    number("top_p", 0.0, 1.0, lo_open=True)
    if "max_tokens" in body and body["max_tokens"] is not None:
        v = body["max_tokens"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BadRequest(f"'max_tokens' must be a positive integer, got {v!r}")
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise BadRequest("'stream_options' must be an object")
        if not body.get("stream"):
            raise BadRequest("'stream_options' is only allowed with \"stream\": true")
    if "seed" in body and body["seed"] is not None:
        v = body["seed"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BadRequest(f"'seed' must be a whole number >= 0, got {v!r}")
    return body


def answer_words(body: dict) -> list[str]:
    """The reply: a sentence about the request, then filler words (a long answer when asked)."""
    msgs = body["messages"]
    last_user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    words = (f"You said: {last_user.strip()!r}. This conversation has {len(msgs)} messages.").split()
    wants_long = int(body.get("max_tokens") or 0) >= 200 or "long" in last_user.lower()
    n_filler = 600 if wants_long else len(FILLER)
    words += [FILLER[i % len(FILLER)] for i in range(n_filler)]
    return words


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lathe-mock/1"

    # Set on the class by make_server().
    api_key: str | None = None
    delay: float = 0.03
    page: Path = DEFAULT_PAGE
    stats: Stats

    def log_message(self, fmt: str, *args) -> None:  # quieter than the default
        sys.stderr.write("mock: " + (fmt % args) + "\n")

    # ---- helpers ----
    def send_json(self, status: int, obj: object) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def send_error_obj(self, status: int, message: str, etype: str, code: str | None = None) -> None:
        self.send_json(status, {"error": {"message": message, "type": etype, "code": code}})

    def authorized(self) -> bool:
        if not self.api_key:
            return True
        if self.headers.get("Authorization", "") == "Bearer " + self.api_key:
            return True
        self.send_error_obj(401, "Invalid API key", "authentication_error", "invalid_api_key")
        return False

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def write_event(self, data: bytes) -> None:
        """Writes one event in two pieces split mid-way (inside a line, maybe inside a UTF-8
        character), a little apart, so that the client has to put lines together."""
        half = len(data) // 2
        self.write_chunk(data[:half])
        time.sleep(0.002)
        self.write_chunk(data[half:])

    # ---- routes ----
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            data = self.page.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/health":
            self.send_json(200, {"status": "ok"})
        elif path == "/mock/stats":
            self.send_json(200, self.stats.as_dict())
        elif path == "/v1/models":
            if self.authorized():
                self.send_json(200, {"object": "list", "data": [
                    {"id": MODEL, "object": "model", "created": 0, "owned_by": "lathe"}]})
        else:
            self.send_error_obj(404, f"no route {path}", "not_found_error")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path != "/v1/chat/completions":
            self.send_error_obj(404, f"no route {path}", "not_found_error")
            return
        if not self.authorized():
            return
        try:
            body = validate(json.loads(raw or b"null"))
        except json.JSONDecodeError as e:
            self.send_error_obj(400, f"invalid JSON: {e}", "invalid_request_error")
            return
        except BadRequest as e:
            self.send_error_obj(400, str(e), "invalid_request_error")
            return
        with self.stats.lock:
            self.stats.last_request = body
            self.stats.requests += 1

        words = answer_words(body)
        max_tokens = body.get("max_tokens") or 10**9
        finish = "stop"
        if len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
        created = int(time.time())
        cid = f"chatcmpl-mock{self.stats.requests}"

        if not body.get("stream"):
            text = " ".join(words)
            self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(words),
                          "total_tokens": len(words)}})
            with self.stats.lock:
                self.stats.completed += 1
            return

        def chunk(delta: dict, finish_reason: str | None) -> bytes:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": MODEL,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.write_event(chunk({"role": "assistant", "content": ""}, None))
            for i, w in enumerate(words):
                time.sleep(self.delay)
                self.write_event(chunk({"content": (" " if i else "") + w}, None))
            self.write_event(chunk({}, finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"id": cid, "object": "chat.completion.chunk", "created": created,
                         "model": MODEL, "choices": [],
                         "usage": {"prompt_tokens": 0, "completion_tokens": len(words),
                                   "total_tokens": len(words)}}
                self.write_event(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self.write_event(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            with self.stats.lock:
                self.stats.cancelled += 1
            sys.stderr.write(f"mock: client went away, generation {cid} cancelled\n")
            self.close_connection = True
            return
        with self.stats.lock:
            self.stats.completed += 1


def make_server(host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                delay: float = 0.03, page: Path = DEFAULT_PAGE) -> ThreadingHTTPServer:
    handler = type("MockHandler", (Handler,), {"api_key": api_key, "delay": delay,
                                               "page": Path(page), "stats": Stats()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api-key", default=os.environ.get("LATHE_API_KEY"))
    ap.add_argument("--delay", type=float, default=0.03, help="seconds between streamed words")
    ap.add_argument("--page", default=str(DEFAULT_PAGE))
    args = ap.parse_args()
    server = make_server(args.host, args.port, args.api_key, args.delay, Path(args.page))
    sys.stderr.write(f"mock: listening on http://{args.host}:{server.server_address[1]}\n")
    sys.stderr.flush()
    import signal

    def _term(*_):
        # shutdown() blocks until serve_forever() returns, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, _term)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
