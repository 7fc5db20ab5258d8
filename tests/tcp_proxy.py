"""A TCP proxy on 127.0.0.1 with injectable network faults, for serving tests.

Each accepted connection gets its own upstream connection and two pump
threads (client->server "up", server->client "down"). Faults act on real
sockets, so gRPC on both ends meets them as it would on a bad network:

* ``down_rate``: server->client bytes per second (a slow client). The proxy
  also *reads* from the server at that rate, so TCP back-pressure reaches
  the server, as with a client that reads slowly.
* ``down_paused``: the proxy stops reading from the server (a client that
  never reads its response).
* ``partition()``: nothing is forwarded either way and sockets stay open (a
  black hole: no FIN, no RST); new connections wait in the listen backlog.
  The proxy's kernel still acknowledges TCP segments, so only gRPC's own
  liveness checks (HTTP/2 pings) can tell, the harder case for a client.
  ``heal()`` ends it: the old connections carry traffic again (``"resume"``),
  are reset (``"reset"``), or stay black for good while new connections work
  (``"stale"``: a NAT or firewall that forgot them).
* ``reset_connections()``: every connection is closed with RST.
"""
from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
import time
from typing import Literal

_CHUNK = 1024
# Small kernel buffers on the proxy's upstream side, so that a proxy that
# reads slowly (or not at all) pushes back on the server after a few KB.
_UPSTREAM_RCVBUF = 8192
_POLL_S = 0.02

Heal = Literal["resume", "reset", "stale"]


class ProxyConnection:
    """One proxied client connection and its upstream twin."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self._proxy = proxy
        self.client = client
        self.upstream = upstream
        self.blackholed = proxy.partitioned
        self.up_bytes = 0
        self.down_bytes = 0
        self.closed = threading.Event()
        self._reset = False
        self._lock = threading.Lock()
        self._pumps_running = 2
        for sock in (client, upstream):
            # Timeouts let the pumps notice faults and close() promptly.
            sock.settimeout(_POLL_S * 5)
        self._threads = [
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client, "down"), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def unread_from_server(self) -> int:
        """Bytes the server sent that wait, unread, in the proxy's socket."""
        with self._lock:
            if self._pumps_running == 0:
                return 0
            data = fcntl.ioctl(self.upstream.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", data)[0]

    def _may_forward(self, direction: str) -> bool:
        if self.blackholed:
            return False
        return not (direction == "down" and self._proxy.down_paused)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while not self.closed.is_set():
                if not self._may_forward(direction):
                    # Not reading is what makes the peer's sends back up.
                    time.sleep(_POLL_S)
                    continue
                try:
                    data = source.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    # Pass a clean end of stream on, like a real network.
                    sink.shutdown(socket.SHUT_WR)
                    return
                # A fault switched on while we waited in recv(): hold the bytes.
                while not self._may_forward(direction) and not self.closed.is_set():
                    time.sleep(_POLL_S)
                rate = self._proxy.down_rate if direction == "down" else None
                if rate:
                    time.sleep(len(data) / rate)
                if not self._send_all(sink, data):
                    return
                if direction == "up":
                    self.up_bytes += len(data)
                else:
                    self.down_bytes += len(data)
        except OSError:
            # A peer reset its connection: reset the other side too.
            self.close(reset=True, wait=False)
        finally:
            self._pump_done()

    def _send_all(self, sink: socket.socket, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                return False
            try:
                view = view[sink.send(view):]
            except TimeoutError:
                continue
        return True

    def _pump_done(self) -> None:
        # Only the last pump closes the sockets: closing a socket another
        # thread is using could hand its descriptor number to a new socket.
        with self._lock:
            self._pumps_running -= 1
            if self._pumps_running:
                return
            self.closed.set()
            for sock in (self.client, self.upstream):
                try:
                    if self._reset:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    sock.close()
                except OSError:
                    pass

    def close(self, reset: bool = False, wait: bool = True) -> None:
        """Close both sockets; with ``reset``, with RST (as when a process dies)."""
        self._reset = self._reset or reset
        self.closed.set()
        if wait:
            self.join()

    def join(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a proxy pump did not stop"


class TcpProxy:
    """Listen on 127.0.0.1 (a free port) and forward to ``upstream`` ("host:port")."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.down_rate: float | None = None
        self.down_paused = False
        self.partitioned = False
        self.connections: list[ProxyConnection] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S * 5)
        self.port = self._listener.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            if self.partitioned:
                # New connections wait in the listen backlog, as a client's
                # SYNs would be retried, and go through once the network heals.
                time.sleep(_POLL_S)
                continue
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket()
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UPSTREAM_RCVBUF)
            try:
                upstream.connect(self._upstream)
            except OSError:
                upstream.close()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections.append(ProxyConnection(self, client, upstream))

    def open_connections(self) -> list[ProxyConnection]:
        with self._lock:
            return [conn for conn in self.connections if not conn.closed.is_set()]

    def partition(self) -> None:
        """Black-hole the open connections both ways; hold new ones until healed."""
        with self._lock:
            self.partitioned = True
            for conn in self.connections:
                conn.blackholed = True

    def heal(self, how: Heal) -> None:
        with self._lock:
            self.partitioned = False
            connections = list(self.connections)
        for conn in connections:
            if how == "resume":
                conn.blackholed = False
            elif how == "reset":
                conn.close(reset=True)
            # "stale": the old connections stay black; new ones are forwarded.

    def reset_connections(self) -> None:
        with self._lock:
            connections = list(self.connections)
        for conn in connections:
            conn.close(reset=True)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._acceptor.join(5)
        self.reset_connections()
        for conn in self.connections:
            conn.join()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
