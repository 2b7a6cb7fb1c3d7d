"""A scripted OpenAI-compatible chat-completions server for the openai backend's tests.

Run as ``python vlm_chat_server.py``: it binds 127.0.0.1 on a free port and prints the port. The test
scripts it over HTTP:

* ``POST /control`` ``{"default": {...}, "queue": [{...}, ...], "delay_s": float}`` resets the state.
  Each request consumes the next queue entry (then the default): ``{"content": text}`` answers 200
  with that message content, ``{"status": code}`` answers that error (``retry_after`` adds the header),
  ``{"sleep_s": s, ...}`` waits first. ``delay_s`` is added to every request (to make them overlap).
* ``GET /stats`` returns the request count, the most requests ever in flight at once, and the bodies.
* ``GET /v1/models`` lists one model.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_state: dict = {}


def _reset(control: dict) -> None:
    generation = _state.get("generation", 0) + 1
    _state.clear()
    _state.update(
        generation=generation,
        default=control.get("default", {"status": 500}),
        queue=list(control.get("queue", [])),
        delay_s=float(control.get("delay_s", 0.0)),
        requests=0,
        in_flight=0,
        max_in_flight=0,
        bodies=[],
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read /stats instead."""

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        elif self.path == "/stats":
            with _lock:
                stats = {key: _state[key] for key in ("requests", "max_in_flight", "bodies")}
            self._send(200, stats)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/control":
            with _lock:
                _reset(body)
            self._send(200, {"ok": True})
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        with _lock:
            _state["requests"] += 1
            _state["in_flight"] += 1
            _state["max_in_flight"] = max(_state["max_in_flight"], _state["in_flight"])
            _state["bodies"].append(body)
            step = _state["queue"].pop(0) if _state["queue"] else _state["default"]
            delay = _state["delay_s"]
            generation = _state["generation"]
        try:
            time.sleep(delay + float(step.get("sleep_s", 0.0)))
            if "content" in step:
                message = {"role": "assistant", "content": step["content"]}
                self._send(200, {"id": "x", "object": "chat.completion", "model": body.get("model"),
                                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
            else:
                headers = {"Retry-After": str(step["retry_after"])} if "retry_after" in step else {}
                self._send(int(step.get("status", 500)), {"error": {"message": "scripted failure"}}, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with _lock:
                # a request still sleeping from before the last /control must not skew the new count
                if _state["generation"] == generation:
                    _state["in_flight"] -= 1

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    _reset({})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
