"""What the dashboard checks before it acts on a request, apart from the token itself.

- :func:`check_bind` and :func:`check_token`: where it may listen, and what a token must look like;
- :func:`safe_next`: where a form may send the browser back to (same-origin paths only);
- :func:`cross_site`: whether a POST came from a page of another origin (``Origin`` and
  ``Sec-Fetch-Site``), which is refused whatever the form carries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pgjobs.errors import ConfigError

MIN_TOKEN_LENGTH = 16
"""The shortest ``--token`` accepted: a token is the only thing between a network and actions."""

_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# A path on this server: one slash, then printable ASCII without a backslash. Browsers drop tabs
# and newlines from URLs and read "\" as "/", so "/\t/evil" and "/\evil" would leave the origin;
# anything outside 0x21-0x7e could also not be sent in a header as it is.
_SAFE_PATH = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> None:
    """Refuse a token that is short or holds characters a cookie cannot carry (ConfigError)."""
    if token is None:
        return
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"--token is too short ({len(token)} characters, at least {MIN_TOKEN_LENGTH}): "
            "use a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            "--token may only hold letters, digits and . _ ~ + / = - "
            "(it is sent in a cookie and a URL)"
        )


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bad token, and serving beyond loopback without one (:class:`ConfigError`)."""
    check_token(token)
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve the dashboard on non-loopback host {host!r} without --token"
        )


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this server (see ``_SAFE_PATH``), else ``/``."""
    if target and _SAFE_PATH.fullmatch(target):
        return target
    return "/"


def cross_site(headers: Any) -> str | None:
    """Why a POST with these headers comes from another origin, or None if it does not.

    Browsers send ``Sec-Fetch-Site`` (``same-origin``, or ``none`` for what the user typed) and
    ``Origin`` with every POST; either one naming another origin (another port of the same host
    included) is enough to refuse, and so is ``Origin: null`` (a sandboxed or hidden origin)
    without ``Sec-Fetch-Site``. A request with neither (curl, scripts) is not a browser's and is
    judged by its token alone.
    """
    site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = (headers.get("Origin") or "").strip()
    if not origin or (origin == "null" and site):
        # A browser that hides the origin (a no-referrer policy) still says where it comes from.
        return None
    host = (headers.get("Host") or "").strip().lower()
    parts = urlsplit(origin.lower())
    if parts.scheme not in ("http", "https") or parts.netloc != host or not host:
        return "Origin is not this dashboard"
    return None
