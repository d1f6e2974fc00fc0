"""The operator's actions: run now, pause and resume a job or a queue, retry, cancel.

The server checks that actions are allowed and that the request carries the token; this module
only turns a checked form into one guarded statement and says what happened, as the query string
of the page the browser goes back to (``done=paused&ref=my-job&sig=…``, shown by
:func:`flash_text`). The ``sig`` is an HMAC of the message with a key only this dashboard process
knows, so a link cannot make the dashboard show text of someone else's choosing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from pgjobs.dashboard.data import DashboardStore
from pgjobs.limits import name_error

FLASH_PARAMS = ("done", "ref", "sig")
"""Query parameters that only carry the message of the last action."""

Outcome = tuple[str, object] | None
"""What an action did (its message's key and reference), or None if it did nothing."""

_MESSAGES = {
    "queued": "Queued run #{ref} for the workers.",
    "paused": "Paused {ref}: no ticks, and its queued runs wait until it is resumed.",
    "resumed": "Resumed {ref}.",
    "queue-paused": "Paused queue {ref}: its queued runs wait until it is resumed; running runs "
    "finish.",
    "queue-resumed": "Resumed queue {ref}: its queued runs can start again.",
    "retried": "Queued run #{ref} as a retry.",
    "cancelled": "Cancelled run #{ref}.",
    "stopping": "Asked run #{ref} to stop; its worker sees the request at its next heartbeat.",
}


def _run_id(form: Mapping[str, str]) -> int | None:
    value = form.get("run", "")
    return int(value) if value.isdigit() else None


def _run_now(store: DashboardStore, form: Mapping[str, str]) -> tuple[str, object] | None:
    run_id = store.run_now(form.get("job", ""))
    return None if run_id is None else ("queued", run_id)


def _pause(store: DashboardStore, form: Mapping[str, str]) -> tuple[str, object] | None:
    job = form.get("job", "")
    return ("paused", job) if store.set_paused(job, True) else None


def _resume(store: DashboardStore, form: Mapping[str, str]) -> tuple[str, object] | None:
    job = form.get("job", "")
    return ("resumed", job) if store.set_paused(job, False) else None


def _queue_pause(paused: bool) -> Callable[[DashboardStore, Mapping[str, str]], Outcome]:
    """Pause or resume the form's ``queue``: a valid name (see :func:`name_error`) whose state
    changes, else nothing is done."""

    def act(store: DashboardStore, form: Mapping[str, str]) -> Outcome:
        queue = form.get("queue", "")
        if name_error("queue", queue) is not None or not store.set_queue_paused(queue, paused):
            return None
        return ("queue-paused" if paused else "queue-resumed"), queue

    return act


def _retry(store: DashboardStore, form: Mapping[str, str]) -> tuple[str, object] | None:
    run_id = _run_id(form)
    new_id = None if run_id is None else store.retry(run_id)
    return None if new_id is None else ("retried", new_id)


def _cancel(store: DashboardStore, form: Mapping[str, str]) -> tuple[str, object] | None:
    run_id = _run_id(form)
    status = None if run_id is None else store.cancel(run_id)
    if status is None:
        return None
    return ("cancelled" if status == "cancelled" else "stopping"), run_id


ACTIONS: dict[str, Callable[[DashboardStore, Mapping[str, str]], Outcome]] = {
    "run-now": _run_now,
    "pause": _pause,
    "resume": _resume,
    "pause-queue": _queue_pause(True),
    "resume-queue": _queue_pause(False),
    "retry": _retry,
    "cancel": _cancel,
}
"""Action name (the path after ``/actions/``) to its implementation."""


def _signature(key: bytes, done: str, ref: str) -> str:
    return hmac.new(key, f"{done}\0{ref}".encode(), hashlib.sha256).hexdigest()[:32]


def perform(store: DashboardStore, name: str, form: Mapping[str, str], key: bytes) -> str | None:
    """Do action ``name`` with ``form``; the flash query string (signed with ``key``), or None
    if nothing was done."""
    outcome = ACTIONS[name](store, form)
    if outcome is None:
        return None
    done, ref = outcome[0], str(outcome[1])
    return urlencode({"done": done, "ref": ref, "sig": _signature(key, done, ref)})


def flash_text(query: Mapping[str, str], key: bytes) -> str | None:
    """The sentence for a ``done=…&ref=…&sig=…`` query string that :func:`perform` made with
    ``key`` (plain text, escaped when shown); None for anything else."""
    done, ref = query.get("done", ""), query.get("ref", "")
    template = _MESSAGES.get(done)
    if template is None or not hmac.compare_digest(
        query.get("sig", "").encode(), _signature(key, done, ref).encode()
    ):
        return None
    return template.format(ref=ref)
