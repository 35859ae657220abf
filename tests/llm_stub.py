"""A local OpenAI-compatible server for tests: a real HTTP server on 127.0.0.1 that answers
POST /v1/chat/completions with recorded responses, in order, and records every request.

Recordings (tests/recordings/*.json): {"description": str, "responses": [chat.completion, ...]}
in the OpenAI response format. When the recording runs out the server answers 500, so a client
that asks more often than the recording expects fails loudly.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDINGS = Path(__file__).with_name("recordings")


def load_recording(name: str) -> list[dict]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())["responses"]


class StubServer:
    def __init__(self, responses: list[dict]):
        self.responses = list(responses)
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                stub.requests.append(body)
                if not stub.responses:
                    return self._send(500, {"error": {"message": "recording exhausted"}})
                reply = dict(stub.responses.pop(0))
                reply.setdefault("model", body.get("model", "stub"))
                self._send(200, reply)

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_completion(content: str, idx: int = 0) -> dict:
    """A chat.completion object in the OpenAI format (used to write recordings)."""
    return {
        "id": f"chatcmpl-rec{idx}", "object": "chat.completion", "created": 1763700000,
        "model": "recorded-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 400, "total_tokens": 1400},
    }
