"""A loopback stand-in for a provider's control API (RunPod, Vast.ai): records every request and answers with
scripted status codes, so tests assert on the exact method, path, body and headers sent."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Answer = Callable[[dict], "tuple[int, Any]"]
"""A recorded request -> (status, JSON body, or bytes sent as an event stream): a stand-in with state (pods that
change as they are created)."""


class FakeApi:
    def __init__(self, status: int = 200, body: dict | None = None, answer: Answer | None = None) -> None:
        self.requests: list[dict] = []
        self.status, self.body = status, body or {}
        self.answer: Answer = answer or (lambda request: (self.status, self.body))
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                           "body": json.loads(raw) if raw else None}
                api.requests.append(request)
                status, body = api.answer(request)
                stream = isinstance(body, bytes)  # a Server-Sent Events stream, sent as it is
                data = body if stream else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
