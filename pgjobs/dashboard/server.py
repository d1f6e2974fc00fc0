"""The dashboard's HTTP server: the standard library's threaded server around
:class:`~pgjobs.dashboard.app.Dashboard`.

Every response carries a strict Content-Security-Policy (no inline script or style at all),
``X-Content-Type-Options: nosniff`` and no-cache headers. What a client can make it hold is
bounded before any page or token is looked at:

- a request body is read only with a valid ``Content-Length`` (digits, one header, no
  ``Transfer-Encoding``: else 400) of at most :data:`MAX_BODY` bytes (else 413);
- a connection that sends nothing for ``request_timeout`` seconds (10 by default, see
  :class:`~pgjobs.dashboard.app.DashboardSettings`) is closed: slow headers, slow bodies, idle
  keep-alive;
- at most ``max_connections`` connections (32 by default) are served at once, each on its own
  thread; one more is answered 503 and closed at once.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pgjobs.dashboard.app import Dashboard, DashboardSettings, Request, Response
from pgjobs.dashboard.data import DashboardStore
from pgjobs.dashboard.guards import check_bind

log = logging.getLogger("pgjobs.dashboard")

MAX_BODY = 64 * 1024
"""Largest request body read, in bytes (forms are a few hundred)."""

_LENGTH = re.compile(r"[0-9]{1,12}")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections"
)
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Not no-referrer: with it a browser sends "Origin: null" on the dashboard's own forms.
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


def _first(values: dict[str, list[str]]) -> dict[str, str]:
    return {key: items[0] for key, items in values.items() if items}


class _Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "pgjobs-dashboard"

    def setup(self) -> None:
        super().setup()
        # On the socket: every read and write of this connection.
        self.connection.settimeout(self.server.dashboard.settings.request_timeout)

    def version_string(self) -> str:
        """The ``Server`` header: the product only, no Python version."""
        return self.server_version

    def _body_length(self) -> int | Response:
        """The body's length, or the answer to a request whose body will not be read."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding"):
            return _refusal(400, "Transfer-Encoding is not supported: send a Content-Length")
        if len(lengths) > 1 or (lengths and not _LENGTH.fullmatch(lengths[0].strip())):
            return _refusal(400, "invalid Content-Length")
        length = int(lengths[0]) if lengths else 0
        if length > MAX_BODY:
            return _refusal(413, f"request body too large (at most {MAX_BODY} bytes)")
        return length

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = self._body_length()
        if isinstance(length, Response):
            # The unread body would be taken for the next request: end the connection.
            self.close_connection = True
            self._send(length)
            return
        form: dict[str, str] = {}
        if length:
            raw = self.rfile.read(length)
            if len(raw) < length:  # the client closed the connection early
                self.close_connection = True
                return
            form = _first(parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True))
        request = Request(method, parts.path, _first(parse_qs(parts.query)), self.headers, form)
        self._send(self.server.dashboard.handle(request))

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in (*SECURITY_HEADERS, *response.headers):
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
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
        if format.startswith('"%s"'):  # log_request: the path only, a query may hold the token
            status = args[1] if len(args) > 1 else ""
            log.info("%s %s %s", self.command, urlsplit(self.path).path, status)
        else:  # timeouts and malformed requests
            log.info("%s: %s", self.client_address[0], (format % args)[:200])


def _refusal(status: int, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


class Server(ThreadingHTTPServer):
    """The dashboard on a threaded HTTP server; ``server_address`` has the bound port.

    At most ``settings.max_connections`` connections are served at once (see the module
    docstring).
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.max_connections = dashboard.settings.max_connections
        self._slots = threading.BoundedSemaphore(self.max_connections)
        settings = dashboard.settings
        self.address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        super().__init__((settings.host, settings.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread of its own, or answer 503 if all slots are taken."""
        if not self._slots.acquire(blocking=False):
            log.warning("refused a connection: %d already served", self.max_connections)
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is one log line; anything else is a bug, logged in full."""
        if isinstance(sys.exc_info()[1], OSError):
            log.info("connection from %s ended: %s", client_address[0], sys.exc_info()[1])
        else:
            log.exception("error serving %s", client_address[0])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

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
    return Server(Dashboard(settings, store))
