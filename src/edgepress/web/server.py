"""A static HTTP server on 127.0.0.1 that serves a page, the JavaScript runtimes and the models.

Why by hand: ``http.server`` serves one folder and sets no headers; the browser target needs a
few folders under URL prefixes, and cross-origin isolation (COOP and COEP), without which browsers
give WebAssembly no shared memory and onnxruntime-web runs on one thread whatever it is asked.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",  # a model changed between runs must never come from a cache
}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}

    def __init__(self, *args, routes: dict[str, Path], **kwargs):
        self.routes = routes
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        """URL path -> file: the longest route prefix that matches; nothing outside its folder."""
        path = unquote(urlsplit(path).path)
        for prefix in sorted(self.routes, key=len, reverse=True):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                base = self.routes[prefix].resolve()
                target = (base / path[len(prefix):].lstrip("/")).resolve()
                if target == base or base in target.parents:
                    return str(target)
        return "/nonexistent"  # 404

    def end_headers(self) -> None:
        for key, value in ISOLATION.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # requests are not news; errors reach the page, which reports them


@contextmanager
def serving(routes: dict[str, Path]) -> Iterator[str]:
    """Serve ``routes`` (URL prefix -> folder) on 127.0.0.1 at a free port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, routes=routes))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
