"""The HTTP server of the REST API: a thread per connection, bounded requests, TLS, drain.

The standard library's ``ThreadingHTTPServer``: a thread per connection suits
the batcher, which parks request threads until their merged model call is
done (an asyncio server would need a thread pool for that anyway), it adds
no dependency to the core install, and TLS comes from ``ssl``.
``max_workers`` bounds the requests processed at once, as gRPC's thread pool
does, and the request bodies held at once to ``max_workers`` times the body
limit, however many clients send (503 beyond); idle keep-alive connections
cost a parked thread each and close after a minute of silence, and
``max_connections`` bounds the connections open, so the threads (503 beyond,
answered from the accepting thread).
http.server's own logging, which prints request lines, is replaced by fixed
messages; its HTML error pages by ``{"error": ...}``.
"""
from __future__ import annotations

import errno
import http
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from clinical_ner.errors import ConfigError, os_reason
from clinical_ner.serving.rest_api import RestApi
from clinical_ner.serving.validation import clip

logger = logging.getLogger(__name__)

# Seconds a connection may stay silent (between requests, or mid-request).
_IDLE_TIMEOUT_S = 60.0
# How long a refused body is read and dropped before the connection closes.
_LINGER_S = 2.0
# Connections refused past max_connections that are read until their client closes, at most.
MAX_LINGERING = 64
# A Content-Length as RFC 9112 writes it (1*DIGIT).
_DECIMAL_DIGITS = re.compile(r"[0-9]+")
# poll(2)'s events of a client that closed its side or reset the connection (closing it
# before its answer, as a client whose timeout ran out does): POLLRDHUP is Linux's.
_CLIENT_GONE = (getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0)
                | getattr(select, "POLLRDHUP", 0))


class _HttpRefusal(Exception):
    """A request refused at the HTTP level (no TensorFlow error code)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    server_version = "clinical-ner-dev-server"
    timeout = _IDLE_TIMEOUT_S
    server: RestServer

    def setup(self) -> None:
        super().setup()
        # The stop may answer a request from its own thread (grace over): one answer each.
        # Reentrant: the stop holds it while it checks and sends (answer_cut_short).
        self._answer_lock = threading.RLock()
        self._answered = False
        self._body_read = False
        self._body_bytes = 0  # of the server's budget for bodies, held by this request

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.release_body_bytes(self._body_bytes)
            self._body_bytes = 0
            self.server.request_ended(self)

    def parse_request(self) -> bool:
        # A request is in progress from its first line, not from its body: a stop then waits
        # for one whose headers or body are still arriving, instead of closing its connection.
        with self._answer_lock:
            self._answered = self._body_read = False
        self.server.request_started(self)
        return super().parse_request()

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._request()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815 (others: 400 Malformed)
    # A GET's status and headers without its body (HTTP's HEAD): it was a 501 with a body,
    # which an HTTP client reads as the start of its next answer on the connection.
    do_HEAD = do_GET  # noqa: N815

    def _request(self) -> None:
        try:
            length, gzipped = self._body_length()
            self._reserve_body(length)
            body = self._read_body(length)
            self._body_read = True
            self._serve(body, gzipped)
        except _HttpRefusal as refusal:
            self._refuse(refusal)

    def answer_cut_short(self, grace: float, deadline: float) -> None:
        """Answer 503 for a request still running when the stop's ``grace`` s ran out (called
        from the stopping thread), so that its client gets a status, not a closed connection.

        A request whose body is still arriving is left alone: its thread reads the
        connection, which the stop then closes. Neither an answer being written nor the 503
        keeps the stop past ``deadline`` (``time.monotonic()``): a client that does not read
        held it for as long as the connection's timeout (a minute) while the socket buffers
        stayed full; the stop then closes the connection under them.
        """
        if not self._body_read or not self._answer_lock.acquire(
                timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            self.close_connection = True
            if not self._answered:
                self.connection.settimeout(max(0.0, deadline - time.monotonic()))
                self._send(503, {"error": "the server stopped before the request finished "
                                          f"(it ran longer than the {grace:g} s grace period)"})
        except OSError:
            pass  # the client has gone, or does not read
        finally:
            self._answer_lock.release()

    def handle_expect_100(self) -> bool:
        # "Expect: 100-continue" asks whether to send the body: a body that would be
        # refused (too large, chunked, an unclear length, no room) is refused before it is sent.
        try:
            self._reserve_body(self._body_length()[0])
        except _HttpRefusal as refusal:
            self._refuse(refusal)
            return False
        return super().handle_expect_100()

    def _refuse(self, refusal: _HttpRefusal) -> None:
        logger.debug("REST %s refused: %d %s", self.command, refusal.status, refusal.message)
        self.close_connection = True
        self._send(refusal.status, {"error": refusal.message})
        self._discard_unread_body()

    def _discard_unread_body(self) -> None:
        """A lingering close: closing with the body unread would reset the connection,
        and the client could lose the answer; read (and drop) what arrives for a moment."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_S)
            deadline = time.monotonic() + _LINGER_S
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    def _reserve_body(self, length: int) -> None:
        """Count the body's ``length`` bytes in the server's budget for bodies before it is
        read (once per request), or refuse it with 503. A connection reads its body before it
        waits for one of the ``max_workers`` slots: without the budget, many clients sending
        at once made the server hold as many bodies. Its whole length, not the bytes as they
        come: counted as they came, large bodies sent at once shared the budget until none
        could finish, and all were refused."""
        if self._body_bytes:
            return  # at "Expect: 100-continue"
        if not self.server.take_body_bytes(length):
            raise _HttpRefusal(503, (
                "the server is busy: the request bodies it holds would pass its limit of "
                f"{self.server.body_budget} bytes (--max-workers x --max-message-bytes); "
                "retry later"))
        self._body_bytes = length

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            # A Content-Length larger than the body sent, on a connection left open: the
            # client gets a status, not a connection closed without one.
            raise _HttpRefusal(408, (
                f"the body stopped arriving before its {length} bytes (Content-Length): "
                f"nothing came for {self.timeout:g} s")) from None
        if len(body) < length:
            # The client stopped sending (closed its side): the JSON parser would blame
            # the JSON at the cut, and a cut body can even parse ("[1, 23" of "[1, 234]").
            raise _HttpRefusal(
                400, f"the body ended after {len(body)} of its {length} bytes (Content-Length)"
            )
        return body

    def _gzipped(self) -> bool:
        """Whether the body is gzip-compressed, which TF Serving reads too; other
        Content-Encodings are refused (their bytes were read as JSON: "not UTF-8")."""
        header = ",".join(self.headers.get_all("Content-Encoding") or [])
        codings = [coding.strip().lower() for coding in header.split(",")]
        codings = [coding for coding in codings if coding not in ("", "identity")]
        if codings in ([], ["gzip"], ["x-gzip"]):
            return bool(codings)
        raise _HttpRefusal(
            415, f"Content-Encoding {clip(', '.join(codings))} is not supported; send the body "
                 "uncompressed or gzip-compressed"
        )

    def _body_length(self) -> tuple[int, bool]:
        """The body's length in bytes from the headers, and whether it is gzip-compressed;
        refused if unclear, too large or in an encoding not read here (before it is sent)."""
        # Every Transfer-Encoding header: with the first only, a chunked body named in a
        # second was read as none, and its chunks as the next request.
        if "chunked" in ",".join(self.headers.get_all("Transfer-Encoding") or []).lower():
            raise _HttpRefusal(
                411, "send the body with a Content-Length (chunked bodies are not supported)"
            )
        # RFC 9112: decimal digits only (int() would also take "1_5", "+15", " 15" or
        # other scripts' digits), and several different lengths make the framing unknown.
        values = set(self.headers.get_all("Content-Length") or ["0"])
        if len(values) > 1:
            raise _HttpRefusal(400, "the request has Content-Length headers that disagree")
        length_text = values.pop()
        if not _DECIMAL_DIGITS.fullmatch(length_text):
            raise _HttpRefusal(400, "Content-Length is not a number of bytes (digits 0-9 only)")
        digits = length_text.lstrip("0") or "0"
        limit = self.server.max_body_bytes
        # int() refuses more than 4300 digits, and more digits than the limit's are over it.
        if len(digits) > len(str(limit)) or int(digits) > limit:
            size = f"{digits} bytes" if len(digits) <= 20 else f"a length of {len(digits)} digits"
            raise _HttpRefusal(
                413, f"the body has {size}; the limit is {limit} (--max-message-bytes)"
            )
        return int(digits), digits != "0" and self._gzipped()

    def _serve(self, body: bytes, gzipped: bool) -> None:
        try:
            path = urlsplit(self.path).path
        except ValueError:
            # An absolute URL whose host is malformed ("http://[/v1/..."): the connection
            # was dropped unanswered. As given, it is no path of the API (404).
            path = self.path
        with self.server.admission:
            if self._client_gone():
                # It closed while the request waited for a slot: the model would run for
                # nobody, and hold the slot from the requests of clients still waiting.
                logger.debug("REST request dropped: its client closed the connection")
                self.close_connection = True
                return
            if gzipped:
                # Only with a slot: a small body can expand to the limit, and the bodies
                # that wait for one are held as sent (and counted so).
                body = _gunzip(body, self.server.max_body_bytes)
            method = "GET" if self.command == "HEAD" else self.command
            status, answer = self.server.api.answer(method, path, body)
        if status == 503:
            self.close_connection = True
        self._send(status, answer)

    def _client_gone(self) -> bool:
        """Whether the client has closed its side of the connection or reset it (without
        reading from it, so a TLS connection is asked too)."""
        if not hasattr(select, "poll"):  # Windows: not known, so served
            return False
        poller = select.poll()
        poller.register(self.connection, _CLIENT_GONE)
        return bool(poller.poll(0))

    def _send(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8") + b"\n"
        with self._answer_lock:
            if self._answered:
                return  # by the stop, whose grace ran out first
            self._answered = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            elif self.request_version == "HTTP/1.0":
                # An HTTP/1.0 client keeps the connection only if the answer says so;
                # otherwise it waits for the close (ab -k: the server's idle minute).
                self.send_header("Connection", "keep-alive")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line, headers too long, ...)
        # would echo the raw request back as HTML; answer with the phrase only.
        self.close_connection = True
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        logger.debug("REST request refused by the HTTP parser: %d %s", code, phrase)
        if self.request_version == "HTTP/0.9" and len(self.requestline.split()) != 2:
            # A version it refuses ("HTTP/2.0", "HTTP/1.1.1") or a line of one word (bytes
            # after a body shorter than they said) is left at HTTP/0.9, whose answers have no
            # status line or headers: the client took the JSON for a status line. Only a
            # request line of two words is HTTP/0.9's.
            self.request_version = "HTTP/1.1"
        self._send(code, {"error": phrase})

    def version_string(self) -> str:
        return self.server_version  # without the Python version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one DEBUG line per request comes from ModelService, without the path

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        # The arguments can hold the raw request line: log the event only.
        logger.debug("REST connection error (details withheld)")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body (one or more members) uncompressed, at most ``limit`` bytes of it."""
    data = b""
    rest = body
    try:
        while rest:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # At most one byte over the limit is uncompressed: a small body can expand to GBs.
            data += decompressor.decompress(rest, limit + 1 - len(data))
            if len(data) > limit:
                raise _HttpRefusal(413, f"the body has more than {limit} bytes uncompressed; "
                                        f"the limit is {limit} (--max-message-bytes)")
            if not decompressor.eof:
                raise _HttpRefusal(400, "the gzip body (Content-Encoding: gzip) is cut short")
            rest = decompressor.unused_data
    except zlib.error:
        raise _HttpRefusal(400, "the body is not valid gzip (Content-Encoding: gzip)") from None
    return data


def listen_failure(address: str, error: OSError, api: str = "") -> ConfigError:
    """The error of a server that cannot listen on ``address`` (for ``api``: `` for REST``),
    in the operating system's words of ``error``."""
    reason = os_reason(error)
    if error.errno == errno.EACCES:
        # A non-root user's --port 80 was said to be "in use?".
        reason += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    return ConfigError(f"could not listen on {address}{api}: {reason}")


class RestServer(ThreadingHTTPServer):
    """The REST API on a socket: a thread per connection, at most ``max_connections`` of
    them, ``max_workers`` requests at once, request bodies of at most ``max_workers`` x
    ``max_body_bytes`` bytes held at once."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: with it, 32 clients connecting at once
    # on a busy machine saw 6 connection resets in 10,000 requests (one run of
    # benchmarks.load_test --protocol rest); with 128, none in the next run.
    request_queue_size = 128
    # Refuse a second server on the same port rather than share it.
    allow_reuse_port = False

    def __init__(
        self,
        api: RestApi,
        host: str,
        port: int,
        *,
        max_workers: int,
        max_body_bytes: int,
        max_connections: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.api = api
        self.max_connections = max_connections
        self.admission = threading.BoundedSemaphore(max_workers)
        self.max_body_bytes = max_body_bytes
        # The bytes of request bodies held at once (being received, or waiting for a slot
        # or its answer): those of max_workers full-size requests, whatever the clients do.
        self.body_budget = max_workers * max_body_bytes
        self._body_bytes = 0
        self._body_bytes_lock = threading.Lock()
        self._tls = tls
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Each accepted socket (its thread's, so the connections counted against
        # max_connections), and the socket to close it by: the TLS one once wrapped (the
        # accepted one is then detached, and shutting it down did nothing).
        self._connections: dict[socket.socket, socket.socket] = {}
        self._connections_lock = threading.Lock()
        self._refusing = False  # over max_connections: warned once until below again
        # Refused connections, answered, read until their client closes or until the time
        # (time.monotonic()) given here; changed by the accepting thread only.
        self._lingering: dict[socket.socket, float] = {}
        self._requests: set[_Handler] = set()  # whose request is in progress
        self._requests_done = threading.Condition()
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            raise listen_failure(f"{host}:{port}", error, " for REST") from None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def bound_port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request: socket.socket, client_address: Any) -> bool:
        """Count a new connection in, or refuse it when ``max_connections`` are open: each
        took a thread, however many clients (or a load balancer's idle pool) held open.
        Runs in the accepting thread, before the connection has a thread of its own."""
        with self._connections_lock:
            if len(self._connections) < self.max_connections:
                self._refusing = False
                self._connections[request] = request
                return True
            warn, self._refusing = not self._refusing, True
        if warn:
            logger.warning("REST connections refused (503): %d are open, the limit "
                           "(--max-connections)", self.max_connections)
        self._refuse_connection(request)
        return False  # socketserver then calls shutdown_request

    def _refuse_connection(self, request: socket.socket) -> None:
        """Answer 503 with Retry-After on a connection over ``max_connections``, without
        blocking the accepting thread; a TLS connection is closed unanswered (an answer
        would need the handshake, which can take as long as the client likes)."""
        if self._tls is not None:
            return
        body = json.dumps({"error": (
            f"the server is busy: it has {self.max_connections} connections open, its limit "
            "(--max-connections); retry later")}).encode() + b"\n"
        head = (f"HTTP/1.1 503 Service Unavailable\r\nServer: {_Handler.server_version}\r\n"
                "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        try:
            request.settimeout(0)
            request.send(head.encode() + body)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the client has gone
        # Closed at once, the request arriving after it reset the connection: a client still
        # sending (a POST's body) got "Broken pipe", not the 503. Read by service_actions.
        if len(self._lingering) < MAX_LINGERING:
            self._lingering[request] = time.monotonic() + _LINGER_S

    def service_actions(self) -> None:
        """Read (and drop) what the refused connections' clients send, and close each once its
        client has closed, or after a couple of seconds (in the accepting thread, after each
        connection and every half second)."""
        for connection, deadline in list(self._lingering.items()):
            try:
                while connection.recv(1 << 16) and time.monotonic() < deadline:
                    pass
                done = True  # the client closed, or sends for too long
            except BlockingIOError:
                done = time.monotonic() >= deadline
            except OSError:
                done = True
            if done:
                del self._lingering[connection]
                connection.close()

    def shutdown_request(self, request: socket.socket) -> None:
        # After the connection's thread, or for a connection refused or never started.
        if request in self._lingering:
            return  # closed by service_actions
        with self._connections_lock:
            connection = self._connections.pop(request, request)
        super().shutdown_request(connection)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake holds
        # only that thread.
        connection = request
        if self._tls is not None:
            request.settimeout(_IDLE_TIMEOUT_S)
            try:
                connection = self._tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                logger.debug("REST TLS handshake failed (details withheld)")
                return
            with self._connections_lock:
                self._connections[request] = connection
        super().finish_request(connection, client_address)

    def take_body_bytes(self, count: int) -> bool:
        """Count ``count`` more bytes of request bodies as held; False, counting nothing, if
        that would pass :attr:`body_budget`."""
        with self._body_bytes_lock:
            if self._body_bytes + count > self.body_budget:
                return False
            self._body_bytes += count
            return True

    def release_body_bytes(self, count: int) -> None:
        """Count ``count`` bytes of request bodies (taken by :meth:`take_body_bytes`) as freed."""
        with self._body_bytes_lock:
            self._body_bytes -= count

    def request_started(self, handler: _Handler) -> None:
        """Counts ``handler``'s request as in progress, from its first line, for :meth:`drain`."""
        with self._requests_done:
            self._requests.add(handler)

    def request_ended(self, handler: _Handler) -> None:
        """Counts ``handler``'s request as done (answered, or its connection gone)."""
        with self._requests_done:
            self._requests.discard(handler)
            self._requests_done.notify_all()

    def drain(self, grace: float | None) -> None:
        """Wait up to ``grace`` s for requests in progress, answer those still running 503,
        then stop and close every connection: at most a couple of seconds past ``grace``,
        whether or not clients read their answers."""
        with self._requests_done:
            self._requests_done.wait_for(lambda: not self._requests, grace)
            unfinished = list(self._requests)
        # Answers still being written (or not read) get a moment more, not a minute each.
        deadline = time.monotonic() + _LINGER_S
        for handler in unfinished:
            handler.answer_cut_short(grace, deadline)
        self.shutdown()
        self.close_connections()
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        for connection in self._lingering:  # the accepting thread has stopped
            connection.close()
        self._lingering.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback, with locals' reprs, to stderr.
        logger.debug("REST connection ended with an error (details withheld)")

    def close_connections(self) -> None:
        """Close every open connection (idle keep-alive ones would otherwise linger)."""
        with self._connections_lock:
            connections = list(self._connections.values())
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
