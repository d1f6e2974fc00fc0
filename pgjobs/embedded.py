"""The embedded database of ``pgjobs demo``: a PostgreSQL server from the ``pgserver`` package.

The server keeps its data in a local folder (``.pgjobs-demo/pgdata`` by default) and listens on a
Unix socket inside it only, so it never clashes with another server's port. Its folder is kept on
stop: the next start reuses its databases. One process at a time owns a folder (a lock file next
to it says so); whatever server it finds running there at start, a leftover of a process that
died, it adopts and stops at the end.

As root, PostgreSQL refuses to run; pgserver then creates a system user ``pgserver`` (with
``useradd``), gives it the data folder, makes the folder's parents traversable by others and runs
the server as that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pgjobs.discovery import exception_line
from pgjobs.errors import PgJobsError

#: Where ``pgjobs demo`` keeps its database, relative to the current directory.
DEFAULT_DATA_DIR = Path(".pgjobs-demo") / "pgdata"

INSTALL_HINT = "pip install 'pgjobs[embedded]'"


class EmbeddedPostgres:
    """A PostgreSQL server in ``data_dir``: :meth:`start` returns its DSN, :meth:`stop` stops it.

    Also a context manager. Failures are one-line :class:`~pgjobs.errors.PgJobsError`.
    """

    def __init__(self, data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: Any = None
        self._lock: IO[str] | None = None
        self._dsn: str | None = None

    @property
    def dsn(self) -> str:
        """The DSN of the running server (its ``postgres`` database, over the Unix socket)."""
        if self._dsn is None:
            raise PgJobsError("the embedded PostgreSQL is not running")
        return self._dsn

    @property
    def pid(self) -> int | None:
        """The pid of the server's postmaster, or None when it does not run."""
        return _postmaster_pid(self.data_dir)

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / "log"

    def start(self) -> str:
        """Initialise the folder on first use, start the server (or adopt a running one) and
        return its DSN."""
        if self._dsn is not None:
            return self._dsn
        pgserver = _import_pgserver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.data_dir)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # cleanup_mode=None: stopping is ours to do, in stop(), not at interpreter exit.
                self._server = pgserver.PostgresServer(self.data_dir, cleanup_mode=None)
            self._dsn = str(self._server.get_uri())
        except Exception as err:
            self._release()
            raise PgJobsError(
                f"cannot start the embedded PostgreSQL in {self.data_dir}: "
                f"{exception_line(err)}{_log_hint(self.log_path)}"
            ) from err
        return self._dsn

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server (fast shutdown: open sessions are ended) and wait until it has exited;
        True if a server was stopped.

        The data folder stays. Stopping a server that does not run, or whose folder another
        process owns, does nothing.
        """
        if self._lock is None:
            return False
        try:
            pid = self.pid
            if pid is not None:
                self._pg_ctl_stop(timeout)
                if not _wait_gone(pid, timeout=5.0):
                    # pg_ctl failed: an immediate shutdown, which the next start recovers from.
                    _signal(pid, signal.SIGQUIT)
                if not _wait_gone(pid, timeout=5.0):
                    raise PgJobsError(
                        f"the embedded PostgreSQL (pid {pid}) did not stop; see {self.log_path}"
                    )
            return pid is not None
        finally:
            self._release()

    def _pg_ctl_stop(self, timeout: float) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        # pg_ctl must run as the owner of the folder: as root, pgserver's own user.
        user = _owner(self.data_dir) if os.geteuid() == 0 else None
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir)]
        command += ["-m", "fast", "-w", "-t", str(int(timeout)), "stop"]
        subprocess.run(
            command,
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout + 5,
            check=False,
        )

    def _release(self) -> None:
        self._dsn = None
        self._server = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock
            self._lock = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime directory at import time.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise PgJobsError(
            f"the embedded PostgreSQL needs the pgserver package: {INSTALL_HINT} "
            "(or pass --dsn to use a running server)"
        ) from None
    return pgserver


def _lock_folder(data_dir: Path) -> IO[str]:
    path = data_dir.with_name(data_dir.name + ".lock")
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise PgJobsError(
            f"the embedded PostgreSQL in {data_dir} is in use by pid {holder}; "
            "stop it first or use another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process is alive (and not a zombie), else None."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


def process_alive(pid: int) -> bool:
    """True if process ``pid`` exists and has not exited (a zombie, exited but not yet reaped by
    its parent, counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _owner(path: Path) -> str | None:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return None


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _log_hint(log_path: Path) -> str:
    return f" (server log: {log_path})" if log_path.is_file() else ""
