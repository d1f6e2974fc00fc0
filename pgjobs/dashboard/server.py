"""The dashboard's HTTP server: the standard library's threaded server around
:class:`~pgjobs.dashboard.app.Dashboard`.

Every response carries a strict Content-Security-Policy (no inline script or style at all),
``X-Content-Type-Options: nosniff`` and no-cache headers; request bodies are capped.
"""

from __future__ import annotations

import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pgjobs.dashboard.app import Dashboard, DashboardSettings, Request, Response, check_bind
from pgjobs.dashboard.data import DashboardStore

log = logging.getLogger("pgjobs.dashboard")

MAX_BODY = 64 * 1024
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _first(values: dict[str, list[str]]) -> dict[str, str]:
    return {key: items[0] for key, items in values.items() if items}


class _Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "pgjobs-dashboard"

    def version_string(self) -> str:
        """The ``Server`` header: the product only, no Python version."""
        return self.server_version

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        form: dict[str, str] = {}
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, b"request too large", "text/plain; charset=utf-8"))
            return
        if length:
            raw = self.rfile.read(length).decode("utf-8", "replace")
            form = _first(parse_qs(raw, keep_blank_values=True))
        request = Request(method, parts.path, _first(parse_qs(parts.query)), self.headers, form)
        self._send(self.server.dashboard.handle(request))

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in (*SECURITY_HEADERS, *response.headers):
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        # The path only: a query string may hold the token.
        status = args[1] if len(args) > 1 else ""
        log.info("%s %s %s", self.command, urlsplit(self.path).path, status)


class Server(ThreadingHTTPServer):
    """The dashboard on a threaded HTTP server; ``server_address`` has the bound port."""

    daemon_threads = True

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        settings = dashboard.settings
        self.address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        super().__init__((settings.host, settings.port), _Handler)

    @property
    def url(self) -> str:
        """The base URL the server answers on."""
        host = self.dashboard.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.server_address[1]}/"

    def server_close(self) -> None:
        """Stop listening and close the dashboard's database connections."""
        super().server_close()
        self.dashboard.store.close()


def make_server(settings: DashboardSettings) -> Server:
    """A bound (not yet serving) dashboard server; call ``serve_forever()`` on it."""
    check_bind(settings.host, settings.token)
    store = DashboardStore(settings.dsn, settings.schema)
    server = Server(Dashboard(settings, store))
    store.open()
    return server
