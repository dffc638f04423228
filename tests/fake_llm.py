"""An OpenAI-compatible chat endpoint on 127.0.0.1 for tests: real HTTP, scripted faults.

It answers POST /v1/chat/completions, and tells the four kinds of request apart by the
last user message:
- layout ("Canvas: WxH. Scene: ... Objects: a, b."): the objects side by side on the ground;
- scenes ("Scenes for objects: a, b. Count: N."): N scene phrases;
- sizes ("Rank sizes of objects: a, b."): ranks from a small size table, ties shared;
- association ("Concepts (id: category): x: cat; y: mug. Propose up to N compositions."):
  neighbouring concepts in pairs and a triple, skipping taken ones.
The same every time. Faults can be queued: `script` for whatever request comes next (an
HTTP status, a delay longer than the client's timeout, a fixed answer text), and
`turns[kind]` for the next requests of one kind: "good", "malformed" (broken JSON or a
wrong shape) or "out_of_range" (valid JSON that breaks a rule: a box off the canvas, a rank
of 0, an unknown concept id, two scenes where three were asked). Every request is recorded
with its kind.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {"Canvas:": "layout", "Scenes for objects:": "scenes", "Rank sizes of objects:": "sizes", "Concepts (id: category):": "associate"}
SIZE_TABLE = {"person": 1, "astronaut": 1, "motorcycle": 2, "rocket": 2, "dog": 3, "cat": 4, "mug": 5}
SCENE_POOL = ["in the garden", "on a kitchen table", "in a living room", "on a city street", "at the beach"]


def kind_of(question: str) -> str:
    return next(k for prefix, k in KINDS.items() if question.startswith(prefix))


def good_answer(question: str) -> str:
    kind = kind_of(question)
    if kind == "scenes":
        count = int(re.search(r"Count: (\d+)\.$", question).group(1))
        return json.dumps({"scenes": [SCENE_POOL[i % len(SCENE_POOL)] + ("" if i < len(SCENE_POOL) else f" number {i}") for i in range(count)]})
    if kind == "sizes":
        names = _list(question, r"Rank sizes of objects: (.*)\.$")
        order = sorted({SIZE_TABLE.get(n, 3) for n in names})
        return json.dumps({"sizes": [{"name": n, "rank": order.index(SIZE_TABLE.get(n, 3)) + 1} for n in names]})
    if kind == "associate":
        pool = [p.split(":")[0].strip() for p in re.search(r"category\): (.*)\. Propose", question).group(1).split(";")]
        most = int(re.search(r"Propose up to (\d+)", question).group(1))
        taken = re.search(r"Taken: (.*)\.$", question)
        taken_sets = [frozenset(t.split(", ")) for t in taken.group(1).split("; ")] if taken else []
        groups = [pool[i : i + 2] for i in range(len(pool) - 1)] + ([pool[:3]] if len(pool) >= 3 else [])
        fresh = [g for g in groups if frozenset(g) not in taken_sets][:most]
        return json.dumps({"compositions": [{"concepts": g, "why": f"{' and '.join(g)} go together"} for g in fresh]})
    canvas = int(re.search(r"Canvas: (\d+)x", question).group(1))
    names = _list(question, r"Objects: (.*)\.$")
    width = canvas // len(names)
    boxes = [
        {"name": n, "box": [i * width + width // 8, canvas // 2, width * 3 // 4, canvas // 2 - canvas // 20]}
        for i, n in enumerate(names)
    ]
    return json.dumps({"boxes": boxes})


def bad_answer(question: str, flavour: str) -> str:
    """A malformed or out-of-range answer to this question."""
    kind = kind_of(question)
    good = json.loads(good_answer(question))
    if flavour == "malformed":
        text = json.dumps(good)
        return {"scenes": '{"scenes": "in the garden"}', "sizes": '{"sizes": [{"name": "cat", "rank": "big"}]}'}.get(kind, text[: len(text) // 2])
    if kind == "layout":
        good["boxes"][0]["box"][0] = 10 * int(re.search(r"Canvas: (\d+)x", question).group(1))
    elif kind == "scenes":
        good["scenes"] = good["scenes"][:-1]
    elif kind == "sizes":
        good["sizes"][0]["rank"] = 0
    else:
        good["compositions"][0]["concepts"] = good["compositions"][0]["concepts"] + ["no-such-concept"]
    return json.dumps(good)


class FakeLLM:
    def __init__(self):
        self.script: list[tuple[str, object]] = []
        self.turns: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.every: tuple[int, tuple[str, object]] | None = None  # fail every n-th request
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = _last_question(body["messages"])
                kind = kind_of(question)
                with fake._lock:
                    fake.requests.append({"body": body, "kind": kind, "authorization": self.headers.get("Authorization")})
                    n = len(fake.requests)
                    if fake.script:
                        action = fake.script.pop(0)
                    elif fake.turns.get(kind):
                        action = (fake.turns[kind].pop(0), None)
                    elif fake.every and n % fake.every[0] == 0:
                        action = fake.every[1]
                    else:
                        action = ("good", None)
                kind_, arg = action
                if kind_ == "status":
                    self._send(arg, {"error": {"message": "injected", "type": "server_error"}})
                    return
                if kind_ == "sleep":
                    time.sleep(arg)
                    kind_ = "good"
                if kind_ == "text":
                    text = arg
                elif kind_ in ("malformed", "out_of_range"):
                    text = bad_answer(question, kind_)
                else:
                    text = good_answer(question)
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

    def of(self, kind: str) -> list[dict]:
        """The requests of one kind, in order."""
        return [r for r in self.requests if r["kind"] == kind]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _list(question: str, pattern: str) -> list[str]:
    return [n.strip() for n in re.search(pattern, question).group(1).split(",")]


def _last_question(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user" and m["content"].startswith(tuple(KINDS)))
