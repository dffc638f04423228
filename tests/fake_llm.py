"""An OpenAI-compatible chat endpoint on 127.0.0.1 for tests: real HTTP, scripted faults.

It answers POST /v1/chat/completions. By default it places the objects named in the last
user message ("Canvas: WxH. Scene: ... Objects: a, b.") side by side on the ground, the
same way every time. A script of faults can be queued: an HTTP status (429, 500...), a
delay longer than the client's timeout, or a fixed answer text (truncated or malformed
JSON, boxes off the canvas). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def good_answer(question: str) -> str:
    canvas = int(re.search(r"Canvas: (\d+)x", question).group(1))
    names = [n.strip() for n in re.search(r"Objects: (.*)\.$", question).group(1).split(",")]
    width = canvas // len(names)
    boxes = [
        {"name": n, "box": [i * width + width // 8, canvas // 2, width * 3 // 4, canvas // 2 - canvas // 20]}
        for i, n in enumerate(names)
    ]
    return json.dumps({"boxes": boxes})


class FakeLLM:
    def __init__(self):
        self.script: list[tuple[str, object]] = []
        self.requests: list[dict] = []
        self.every: tuple[int, tuple[str, object]] | None = None  # fail every n-th request
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                    n = len(fake.requests)
                    if fake.script:
                        action = fake.script.pop(0)
                    elif fake.every and n % fake.every[0] == 0:
                        action = fake.every[1]
                    else:
                        action = ("good", None)
                kind, arg = action
                if kind == "status":
                    self._send(arg, {"error": {"message": "injected", "type": "server_error"}})
                    return
                if kind == "sleep":
                    time.sleep(arg)
                    kind = "good"
                text = arg if kind == "text" else good_answer(_last_question(body["messages"]))
                self._send(200, {
                    "id": f"fake-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "10")  # keep the client's backoff short
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:
                    pass  # the client timed out and hung up, as the test meant it to

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _last_question(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user" and m["content"].startswith("Canvas"))
