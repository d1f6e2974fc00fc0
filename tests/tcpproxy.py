"""A TCP proxy the test drives: 127.0.0.1:port forwards to a target port, and can play dead.

Modes:

- ``pass_through()``: bytes flow both ways (the start mode);
- ``black_hole()``: connections, old and new, stay open but no byte is forwarded either way, as
  with a frozen host or a partition that drops packets: nothing is closed, so a client notices
  only through its own timeouts. New connections are accepted (the kernel completes the
  handshake) and wait, unconnected, for the next pass;
- ``pass_through()`` again: the frozen connections go on where they stopped, as after a freeze;
  ``pass_through(thaw=False)``: they stay frozen for good (a NAT or firewall that lost their
  state, a host that came back without them) and only new connections pass.

The proxy's own kernel still acknowledges what a client sends while its buffer has room, so
TCP keepalive probes are answered during a black hole: only timeouts above TCP (statement,
connect or application timeouts) see it. Threads, one pair per connection; :meth:`close` ends
them all.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._passing = threading.Event()
        self._passing.set()
        self._closed = False
        self._frozen_for_good: list[threading.Event] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        # One event per connection: set while its bytes may flow.
        self._flows: list[threading.Event] = []
        self.connections = 0
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._accepter.start()

    # -- modes --------------------------------------------------------------------------------

    def black_hole(self) -> None:
        with self._lock:
            self._passing.clear()
            for flow in self._flows:
                flow.clear()

    def pass_through(self, *, thaw: bool = True) -> None:
        with self._lock:
            if thaw:
                for flow in self._flows:
                    flow.set()
            else:
                self._frozen_for_good = list(self._flows)
                self._flows = []
            self._passing.set()

    @property
    def passing(self) -> bool:
        return self._passing.is_set()

    def close(self) -> None:
        """Stop accepting and close every connection (both sides)."""
        self._closed = True
        with self._lock:
            flows = [*self._flows, *self._frozen_for_good]
        for flow in flows:  # wake the pumps so they see the closed sockets and end
            flow.set()
        self._passing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._accepter.join(5)

    # -- forwarding -----------------------------------------------------------------------------

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(
                target=self._connect, args=(client,), name="proxy-conn", daemon=True
            ).start()

    def _connect(self, client: socket.socket) -> None:
        self._passing.wait()
        if self._closed:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        upstream.settimeout(None)
        self._track(upstream)
        flow = threading.Event()
        with self._lock:
            self._flows.append(flow)
            if self._passing.is_set():
                flow.set()
            self.connections += 1
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(src, dst, flow), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, flow: threading.Event) -> None:
        try:
            while True:
                flow.wait()
                data = src.recv(65536)
                if not data:
                    break
                # Bytes read just before a black hole are held until the next pass.
                flow.wait()
                if self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side closed: pass the close on, as a real connection would.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
