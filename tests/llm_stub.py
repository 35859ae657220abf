"""Local LLM servers for tests: a real HTTP server on 127.0.0.1 that answers with recorded
responses, in order, in the wire protocol of the provider that asks, and records every request.

Protocols, chosen by the request path:
- OpenAI chat completions (``.../chat/completions``): OpenAI, Gemini's OpenAI-compatible
  endpoint, and Azure OpenAI (``/openai/deployments/<name>/chat/completions?api-version=...``);
- Anthropic messages (``/v1/messages``);
- Ollama chat (``/api/chat``).

Recordings (tests/recordings/*.json): {"description": str, "responses": [chat.completion, ...]}
in the OpenAI response format; the server translates each into the asking protocol. A response
may instead be a fault: {"fault": "status", "status": 503, "retry_after": 1} (an HTTP error,
optionally with Retry-After), {"fault": "delay", "seconds": 3, "then": <response>} (a slow reply,
for client timeouts) or {"fault": "malformed"} (a 200 whose body is not JSON). Truncated and
refused replies are ordinary completions with finish_reason "length" / "content_filter". When the
recording runs out the server answers 500, so a client that asks more often than the recording
expects fails loudly.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDINGS = Path(__file__).with_name("recordings")
ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


def load_recording(name: str) -> list[dict]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())["responses"]


def protocol_of(path: str) -> str | None:
    p = path.split("?", 1)[0].rstrip("/")
    if p.endswith("/chat/completions"):
        return "azure" if "/openai/deployments/" in p else "openai"
    if p.endswith("/v1/messages"):
        return "anthropic"
    if p.endswith("/api/chat"):
        return "ollama"
    return None


def translate(reply: dict, protocol: str, model: str) -> dict:
    """An OpenAI chat.completion as the asking protocol would have sent it."""
    choice = reply["choices"][0]
    text = choice["message"].get("content") or ""
    finish = choice.get("finish_reason", "stop")
    usage = reply.get("usage", {})
    if protocol == "anthropic":
        return {"id": reply.get("id", "msg_rec"), "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}] if text else [],
                "stop_reason": ANTHROPIC_STOP.get(finish, finish), "stop_sequence": None,
                "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                          "output_tokens": usage.get("completion_tokens", 0)}}
    if protocol == "ollama":
        return {"model": model, "created_at": "2025-11-21T00:00:00Z",
                "message": {"role": "assistant", "content": text}, "done": True,
                "done_reason": "length" if finish == "length" else "stop",
                "prompt_eval_count": usage.get("prompt_tokens", 0),
                "eval_count": usage.get("completion_tokens", 0), "total_duration": 1000}
    out = dict(reply)
    out["model"] = model
    return out


class StubServer:
    def __init__(self, responses: list[dict]):
        self.responses = list(responses)
        self.requests: list[dict] = []  # request bodies, in order (all protocols)
        self.log: list[dict] = []  # {"path", "protocol", "headers", "body"} per request
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw or b"{}")
                proto = protocol_of(self.path)
                if proto is None:
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                stub.requests.append(body)
                stub.log.append({"path": self.path, "protocol": proto, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
                if not stub.responses:
                    return self._send(500, {"error": {"message": "recording exhausted"}})
                reply = stub.responses.pop(0)
                while reply.get("fault") == "delay":
                    time.sleep(float(reply["seconds"]))
                    reply = reply["then"]
                if reply.get("fault") == "status":
                    headers = {"Retry-After": str(reply["retry_after"])} if "retry_after" in reply else {}
                    return self._send(int(reply["status"]), {"error": {"message": reply.get("message", "fault"),
                                                                       "type": "server_error"}}, headers)
                if reply.get("fault") == "malformed":
                    return self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [{"mess')
                self._send(200, translate(reply, proto, body.get("model", "stub")))

            def _send(self, code: int, obj: dict, headers: dict | None = None):
                self._send_raw(code, json.dumps(obj).encode(), headers)

            def _send_raw(self, code: int, data: bytes, headers: dict | None = None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"{self.root}/v1"

    def base_url_for(self, provider: str) -> str:
        """What a user would write as base_url for ``provider`` if this were its server."""
        return {"openai": self.base_url, "gemini": f"{self.root}/v1beta/openai/"}.get(provider, self.root)

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_completion(content: str, idx: int = 0, finish_reason: str = "stop",
                    prompt_tokens: int = 1000, completion_tokens: int = 400) -> dict:
    """A chat.completion object in the OpenAI format (used to write recordings)."""
    return {
        "id": f"chatcmpl-rec{idx}", "object": "chat.completion", "created": 1763700000,
        "model": "recorded-model",
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
