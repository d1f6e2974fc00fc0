"""The dashboard's HTTP surface against hostile clients: where a form may send the browser,
cross-site posts, request bodies, silent connections and how many connections it serves."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from pgjobs.dashboard import Server
from pgjobs.dashboard.server import MAX_BODY
from tests.test_dashboard import TOKEN, call, scalar, serving
from tests.workers import wait_until

EVIL_NEXT = [
    "/\r\nSet-Cookie: pgjobs_token=evil; Path=/",
    "/ok\nSet-Cookie: pgjobs_token=evil",
    "/\t/evil.example/",
    "/\x0b/evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "/runs\\..\\..\\evil",
    "https://evil.example/",
    " /runs",
    "/r\u00e9sum\u00e9",
    "/\u20ac",
]


@pytest.fixture
def actions(dsn: str) -> Iterator[Server]:
    with serving(dsn, allow_actions=True, token=TOKEN) as server:
        yield server


def exchange(server: Server, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection; all the server answered until it closed it."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


# -- where a form sends the browser back to -----------------------------------------------------


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_logout_sends_the_browser_nowhere_but_this_dashboard(actions: Server, target: str) -> None:
    reply = call(actions, "/logout", {"next": target})

    assert reply.status == 303
    assert reply.headers.get_all("Location") == ["/"]
    cookies = reply.headers.get_all("Set-Cookie")
    assert cookies == ["pgjobs_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"]


@pytest.mark.parametrize("target", ["/runs?job=obs-report&status=failed", "/runs/12", "/"])
def test_logout_and_login_go_back_to_a_page_of_this_dashboard(actions: Server, target: str) -> None:
    assert call(actions, "/logout", {"next": target}).headers["Location"] == target
    login = call(actions, "/login", {"token": TOKEN, "next": target})
    assert login.status == 303 and login.headers["Location"] == target


def test_login_and_actions_also_refuse_a_foreign_next(actions: Server, dsn: str) -> None:
    scalar(dsn, "INSERT INTO pgjobs.jobs (name, extension) VALUES ('obs-x', 'obs') RETURNING 1")
    for target in EVIL_NEXT:
        login = call(actions, "/login", {"token": TOKEN, "next": target})
        assert login.headers.get_all("Location") == ["/"], target
        assert len(login.headers.get_all("Set-Cookie") or []) == 1, target
        act = call(actions, "/actions/pause", {"job": "obs-x", "token": TOKEN, "next": target})
        assert act.status == 303 and act.headers["Location"].startswith("/?done=paused"), target


# -- cross-site posts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another port of the same host: another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_post_from_another_origin_is_refused_logout_included(
    actions: Server, dsn: str, headers: dict[str, str]
) -> None:
    scalar(dsn, "INSERT INTO pgjobs.jobs (name, extension) VALUES ('obs-x', 'obs') RETURNING 1")

    logout = call(actions, "/logout", {"next": "/"}, headers)
    login = call(actions, "/login", {"token": TOKEN, "next": "/"}, headers)
    act = call(actions, "/actions/pause", {"job": "obs-x", "token": TOKEN}, headers)

    for reply in (logout, login, act):
        assert reply.status == 403 and "cross-site request refused" in reply.text
        assert "Set-Cookie" not in reply.headers and "Location" not in reply.headers
    assert scalar(dsn, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-x'") is False


def test_a_post_from_the_dashboards_own_pages_is_accepted(actions: Server) -> None:
    host, port = actions.server_address[:2]
    own = {"Origin": f"http://{host}:{port}", "Sec-Fetch-Site": "same-origin"}
    assert call(actions, "/logout", {"next": "/runs"}, own).status == 303
    typed = {"Sec-Fetch-Site": "none"}
    assert call(actions, "/login", {"token": TOKEN, "next": "/"}, typed).status == 303


# -- request bodies -----------------------------------------------------------------------------


def post_head(server: Server, length: str, extra: str = "") -> bytes:
    host, port = server.server_address[:2]
    return (
        f"POST /logout HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "+5", " ", "0x10", "99999999999999"])
def test_an_invalid_content_length_is_answered_400_before_any_body_is_read(
    actions: Server, length: str
) -> None:
    # The body never comes: a server that waited for it would time the client out.
    reply = exchange(actions, post_head(actions, length), timeout=5)

    assert status_of(reply) in (400, 413), reply[:200]
    assert b"Connection: close" in reply


def test_a_body_over_the_cap_is_answered_413_unread(actions: Server) -> None:
    started = time.monotonic()
    reply = exchange(actions, post_head(actions, str(300 * 1024 * 1024)), timeout=5)

    assert status_of(reply) == 413 and f"at most {MAX_BODY} bytes".encode() in reply
    assert time.monotonic() - started < 2


def test_two_lengths_or_a_chunked_body_are_refused(actions: Server) -> None:
    assert status_of(exchange(actions, post_head(actions, "5", "Content-Length: 6\r\n"))) == 400
    chunked = post_head(actions, "5", "Transfer-Encoding: chunked\r\n")
    assert status_of(exchange(actions, chunked)) == 400


def test_a_form_within_the_cap_is_read(actions: Server) -> None:
    body = "next=%2Fruns&pad=" + "x" * (MAX_BODY - 100)
    head = post_head(actions, str(len(body)), "Connection: close\r\n")
    reply = exchange(actions, head + body.encode())
    assert status_of(reply) == 303 and b"Location: /runs\r\n" in reply


# -- silent and too many connections ------------------------------------------------------------


def test_a_silent_connection_is_closed_after_the_request_timeout(dsn: str) -> None:
    with serving(dsn, request_timeout=0.5) as server:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), int(port)), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server, not by our 10 s timeout
            assert time.monotonic() - started < 5


def test_connections_beyond_the_cap_are_answered_503_until_one_ends(dsn: str) -> None:
    with serving(dsn, max_connections=2, request_timeout=30) as server:
        host, port = server.server_address[:2]
        address = (str(host), int(port))
        held = [socket.create_connection(address, timeout=10) for _ in range(2)]
        try:
            for sock in held:  # each holds a slot: a request that never ends
                sock.sendall(b"GET / HTTP/1.1\r\n")

            def refused() -> bytes | None:
                reply = exchange(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                return reply if status_of(reply) == 503 else None

            reply = wait_until(refused, 5, "a connection beyond the cap to be refused")
            assert b"too many connections" in reply
        finally:
            held.pop().close()
        wait_until(lambda: call(server, "/").status == 200, 5, "a freed slot to serve a page")
        for sock in held:
            sock.close()
