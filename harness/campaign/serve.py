"""The campaign lists served read-only on loopback (``list_url``), for a SUT that fetches its list over
HTTP instead of reading ``list_path``: GET or HEAD of ``/<id>.csv``, nothing else (no listing, no other
method, no path outside the directory)."""

from __future__ import annotations

import threading
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args, directory: Path, **kwargs) -> None:
        self.directory = directory
        super().__init__(*args, **kwargs)

    def _file(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        if "/" in name or not name.endswith(".csv") or name.startswith("."):
            return None
        path = self.directory / name
        return path if path.is_file() else None

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        data = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _refuse(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args) -> None:
        pass  # the SUT's fetches are not the run's news


class ListServer:
    """Serves ``directory`` on a free loopback port from a thread; ``url(id)`` is a list's address."""

    def __init__(self, directory: Path) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), partial(_Handler, directory=directory))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="campaign-lists", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, campaign_id: str) -> str:
        return f"http://{HOST}:{self.port}/{campaign_id}.csv"

    def start(self) -> ListServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
