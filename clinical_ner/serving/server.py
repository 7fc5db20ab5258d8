"""A development stand-in for ``tensorflow_model_server``: the server's lifecycle.

Production runs the official TensorFlow Serving binary (or the
``tensorflow/serving`` Docker image, see ``serving/README.md``). That binary
cannot be installed everywhere (no PyPI or Debian package), so this server
answers the same ``tensorflow.serving`` gRPC API with the stock servicer
classes and protos from ``tensorflow-serving-api``, and optionally TF
Serving's REST API: clients cannot tell the two apart for ``Predict``,
``GetModelMetadata`` and ``GetModelStatus`` (REST: ``:predict``, status and
``/metadata``). It is meant for development, tests and demos.

Where each job lives, and where it differs from TF Serving:

* :mod:`~clinical_ner.serving.versions`: every numbered version directory is
  loaded and the base path is polled, so versions appear and disappear
  without a restart.
* :mod:`~clinical_ner.serving.validation`: only signatures whose inputs are
  all ``DT_STRING``, ``DT_INT32`` or ``DT_INT64`` batches are served; each
  string must be valid UTF-8, each integer fit its type, and the number of
  values must equal the elements of the shape (TF would repeat the last
  value). Requests are limited in documents and characters (or integer
  values) per document (``RESOURCE_EXHAUSTED``). The export's signatures get
  only what their graphs answer rightly: ``classify_assertions`` spans within
  their text (and, for a model with assertions, covering a token: checked on
  the answer), ``predict_tokens`` rows without ``""`` before a token.
* :mod:`~clinical_ner.serving.batcher`: requests that wait for the model
  together are merged into calls of at most ``max_batch_documents`` rows,
  as TF Serving's batching does; a merged call that fails is rerun request
  by request, so one bad request fails alone (TF Serving fails the batch).
* :mod:`~clinical_ner.serving.service`: both APIs' requests; an unknown
  signature is ``NOT_FOUND`` (TF Serving: ``FAILED_PRECONDITION``); error
  messages and logs never contain request text.
* :mod:`~clinical_ner.serving.grpc_api`, and :mod:`~clinical_ner.serving.rest_api`
  with ``rest_json`` and ``rest_server``: the wire formats;
  ``model_spec.version_label`` and ``/labels/`` answer ``UNIMPLEMENTED``.
* :mod:`~clinical_ner.serving.serve_until_stopped`: serving in the foreground until
  SIGTERM or SIGINT (``clinical-ner serve``).
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from clinical_ner.artifacts.saved_model import VERSION_DIR_PATTERN, holds_saved_model, versions
from clinical_ner.errors import (
    MAX_PORT, ConfigError, ModelError, check_integer, check_seconds, os_reason, setting_name,
)
from clinical_ner.serving import defaults
from clinical_ner.serving.grpc_api import add_servicers
from clinical_ner.serving.rest_api import RestApi
from clinical_ner.serving.rest_server import MAX_LINGERING, RestServer, listen_failure
from clinical_ner.serving.service import ModelService
from clinical_ner.serving.tls import read_pem, server_context
from clinical_ner.serving.validation import MODEL_NAME_PATTERN, Limits
from clinical_ner.serving.versions import ModelVersions

logger = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Open files a server takes beside its REST connections: gRPC's, the model's, logs (about
# 12), and refused connections being closed.
_FILES_BESIDE_CONNECTIONS = 64 + MAX_LINGERING


@dataclass(frozen=True)
class ServerTLS:
    """A server's TLS files, read and checked: the PEM bytes gRPC takes, the REST server's
    context."""

    cert_chain: bytes
    private_key: bytes
    context: ssl.SSLContext


def check_server_options(
    *,
    model_name: str,
    host: str,
    port: int | None,
    rest_port: int | None,
    max_workers: int,
    max_connections: int,
    max_concurrent_calls: int | None,
    poll_interval_s: float,
    max_documents: int,
    max_document_chars: int,
    max_message_bytes: int,
    ssl_cert: str | Path | None,
    ssl_key: str | Path | None,
    max_batch_documents: int,
) -> ServerTLS | None:
    """Raise :class:`ConfigError` for a :class:`ModelServer` argument that cannot work.

    ``ModelServer`` checks its arguments so; ``clinical-ner serve`` checks its
    options before it exports a model directory to serve (which takes a
    while). The TLS files are read and checked too, and returned (``None``
    without TLS) for the server to use; with a REST port, the soft limit of
    open files is raised for ``max_connections`` (:func:`make_room_for_connections`).
    """
    if not MODEL_NAME_PATTERN.fullmatch(model_name):
        raise ConfigError(
            f"invalid model name {model_name[:64]!r}: use 1-128 letters, digits, '_', "
            "'-' or '.', starting with a letter or digit"
        )
    for option, value in (
        ("max_workers", max_workers),
        ("max_connections", max_connections),
        ("max_concurrent_calls", max_concurrent_calls),
        ("max_documents", max_documents),
        ("max_batch_documents", max_batch_documents),
        ("max_document_chars", max_document_chars),
    ):
        if value is not None:  # max_concurrent_calls: the number of CPUs
            check_integer(option, value)
    # (An infinite interval overflowed the poller's timer and ended its thread.)
    check_seconds("poll_interval_s", poll_interval_s, maximum=24 * 3600)
    check_integer("max_message_bytes", max_message_bytes,
                  maximum=defaults.MAX_GRPC_MESSAGE_BYTES)
    for option, value in (("port", port), ("rest_port", rest_port)):
        if value is not None:
            check_integer(option, value, minimum=0, maximum=MAX_PORT)
    if rest_port is not None:
        make_room_for_connections(max_connections)
    if port is not None and port != 0 and port == rest_port:
        # Else the REST listener failed as "in use?", by the gRPC one of this server.
        raise ConfigError(f"{setting_name('port')} and {setting_name('rest_port')} are both "
                          f"{port}; REST needs a port of its own")
    if (ssl_cert is None) != (ssl_key is None):
        raise ConfigError(f"TLS needs both {setting_name('ssl_cert')} and "
                          f"{setting_name('ssl_key')}")
    tls = None if ssl_cert is None else ServerTLS(
        cert_chain=read_pem(ssl_cert, "ssl_cert", "a certificate chain"),
        private_key=read_pem(ssl_key, "ssl_key", "a private key"),
        context=server_context(Path(ssl_cert), Path(ssl_key)))
    check_listen_host(host)
    return tls


def make_room_for_connections(max_connections: int) -> None:
    """Make room for ``max_connections`` REST connections, an open file each, or raise
    :class:`ConfigError`: past the files this process may open (``ulimit -n``), accepting
    failed, and the REST server's loop spun a CPU while new clients hung unanswered.

    As servers do (nginx's ``worker_rlimit_nofile``), the soft limit is raised as far as
    the hard one allows, which needs no privilege: a soft limit of 256 (macOS's default)
    or 1024 then still serves the default 256 connections.
    """
    try:
        import resource  # POSIX only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = len(os.listdir("/dev/fd")) + _FILES_BESIDE_CONNECTIONS + max_connections
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return
        except (ValueError, OSError):  # a system maximum below the hard limit (macOS)
            pass
    raise ConfigError(
        f"{setting_name('max_connections')} {max_connections}: the server would need "
        f"about {needed} open files (one per connection), more than this process may "
        f"open ({soft}, ulimit -n; at most {hard}, ulimit -Hn); lower "
        f"{setting_name('max_connections')} or raise ulimit -Hn")


def check_listen_host(host: str) -> None:
    """Raise :class:`ConfigError` if ``host`` cannot be resolved or is no address of this
    machine: gRPC and the REST server said only "could not listen ... (in use?)"."""
    if not host:
        raise ConfigError(f"{setting_name('host')} is empty; give the address to listen on "
                          "(0.0.0.0 for all interfaces)")
    try:
        addresses = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else "not a host name"
        raise ConfigError(f"{setting_name('host')} {host}: cannot be resolved ({reason})") \
            from None
    unavailable = None
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.bind(address)
            return
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:
                return  # not the address's fault: listening names the port's problem
            unavailable = error
    raise ConfigError(f"{setting_name('host')} {host}: not an address of this machine "
                      f"({os_reason(unavailable)}); 0.0.0.0 listens on all of its interfaces")


def _bind_error(host: str, port: int) -> OSError | None:
    """The operating system's error of binding ``host:port`` (``EACCES``, ``EADDRINUSE``),
    or ``None`` if it can be bound."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, protocol) as probe:
            # As gRPC binds: connections of an earlier server left in TIME_WAIT don't count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return error
    return None


class _CallCountingPool(futures.ThreadPoolExecutor):
    """gRPC's thread pool, counting the calls it has not finished."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.unfinished = 0

    def submit(self, fn, /, *args, **kwargs) -> futures.Future:
        future = super().submit(fn, *args, **kwargs)
        with self._lock:
            self.unfinished += 1
        future.add_done_callback(self._finished)  # at once if it is done already
        return future

    def _finished(self, _future: futures.Future) -> None:
        with self._lock:
            self.unfinished -= 1


class ModelServer:
    """Serve the versions of one SavedModel over TensorFlow Serving's gRPC (and REST) API.

    ``port=0`` binds a free port; read it from :attr:`bound_port` after
    :meth:`start`. ``rest_port`` (None: no REST) likewise, read from
    :attr:`bound_rest_port`. With ``ssl_cert`` and ``ssl_key`` (PEM files)
    both ports speak TLS. ``max_message_bytes`` is gRPC's receive limit and
    the REST body limit, so larger messages are refused before being parsed.
    Of the ``max_workers`` requests handled at once (per API), at most
    ``max_concurrent_calls`` run the model at the same time (default: the
    number of CPUs this process may use); the others wait for a turn.
    Requests that wait together are merged into model calls of at most
    ``max_batch_documents`` rows, as TensorFlow Serving's batching does; 1
    runs every request on its own. The REST port holds at most
    ``max_connections`` connections open (a thread each); more get 503.

    >>> with ModelServer("models/clinical_ner", "clinical_ner", port=0, rest_port=0) as server:
    ...     print(server.bound_port, server.bound_rest_port)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_path: str | Path,
        model_name: str,
        host: str = defaults.HOST,
        port: int = defaults.GRPC_PORT,
        *,
        rest_port: int | None = None,
        max_workers: int = defaults.MAX_WORKERS,
        max_connections: int = defaults.MAX_CONNECTIONS,
        max_concurrent_calls: int | None = None,
        poll_interval_s: float = defaults.POLL_INTERVAL_S,
        max_documents: int = defaults.MAX_DOCUMENTS,
        max_document_chars: int = defaults.MAX_DOCUMENT_CHARS,
        max_message_bytes: int = defaults.MAX_MESSAGE_BYTES,
        ssl_cert: str | Path | None = None,
        ssl_key: str | Path | None = None,
        max_batch_documents: int = defaults.BATCH_DOCUMENTS,
    ) -> None:
        tls = check_server_options(
            model_name=model_name, host=host, port=port, rest_port=rest_port,
            max_workers=max_workers, max_connections=max_connections,
            max_concurrent_calls=max_concurrent_calls, poll_interval_s=poll_interval_s,
            max_documents=max_documents, max_document_chars=max_document_chars,
            max_message_bytes=max_message_bytes,
            ssl_cert=ssl_cert, ssl_key=ssl_key, max_batch_documents=max_batch_documents,
        )
        self.base_path = Path(base_path)
        if not self.base_path.is_dir():
            # A missing model, exit status 4 as for every command.
            raise ModelError(f"model base path {self.base_path} is not a directory")
        if holds_saved_model(self.base_path) and not versions(self.base_path):
            # Else served as a base path without versions: NOT_FOUND for good.
            name = self.base_path.resolve().name
            parent = os.path.normpath(self.base_path / os.pardir)  # of "." too
            remedy = (f"serve {parent}, which holds it as version {name}"
                      if VERSION_DIR_PATTERN.fullmatch(name) else
                      "put it in a folder named 1 under a base path, and serve that")
            raise ModelError(f"model base path {self.base_path} is a SavedModel (one version), "
                             f"not a base path of numbered versions: {remedy}")
        if max_concurrent_calls is None:
            max_concurrent_calls = len(os.sched_getaffinity(0))
        self.model_name = model_name
        self.host = host
        self.port = port
        self.rest_port = rest_port
        self._max_workers = max_workers
        self._max_connections = max_connections
        self._poll_interval_s = poll_interval_s
        self._max_message_bytes = max_message_bytes
        # Read and checked above, so that a bad file stops the server before it listens.
        self._tls_context = None if tls is None else tls.context
        self._credentials = (None if tls is None else grpc.ssl_server_credentials(
            [(tls.private_key, tls.cert_chain)]))
        self._versions = ModelVersions(self.base_path, model_name)
        self._service = ModelService(
            self._versions, model_name, Limits(max_documents, max_document_chars),
            max_concurrent_calls, max_batch_documents,
        )
        self._server: grpc.Server | None = None
        self._pool: _CallCountingPool | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self.bound_port: int | None = None
        self.bound_rest_port: int | None = None

    @property
    def versions(self) -> list[int]:
        """The versions loaded now."""
        return self._versions.numbers()

    def start(self) -> None:
        """Load the versions present now, then listen. Returns once serving."""
        self._versions.poll()
        if not self._versions.numbers():
            logger.warning(
                "No loadable version under %s yet; requests get NOT_FOUND until one appears",
                self.base_path,
            )
        self._start_grpc()
        if self.rest_port is not None:
            self._start_rest()
        if self._credentials is None and self.host not in _LOOPBACK_HOSTS:
            logger.warning(
                "Listening on %s without TLS: clinical text crosses the network in clear; "
                "use --ssl-cert and --ssl-key",
                self.host,
            )
        self._poller = threading.Thread(
            target=self._poll_loop, name="clinical-ner-model-poller", daemon=True
        )
        self._poller.start()
        logger.info(
            "Serving model %r (versions %s) on %s:%d%s%s",
            self.model_name,
            self._versions.numbers(),
            self.host,
            self.bound_port,
            "" if self._rest is None else f", REST on port {self.bound_rest_port}",
            " with TLS" if self._credentials else "",
        )

    def _start_grpc(self) -> None:
        self._pool = _CallCountingPool(max_workers=self._max_workers,
                                       thread_name_prefix="clinical-ner-serve")
        server = grpc.server(
            self._pool,
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                # Otherwise a second server could bind the same port and steal requests.
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicers(self._service, server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self._credentials is None:
                self.bound_port = server.add_insecure_port(address)
            else:
                self.bound_port = server.add_secure_port(address, self._credentials)
        except RuntimeError as error:
            # gRPC says no more than that it failed: the operating system says why, if it
            # refuses the port.
            refused = _bind_error(self.host, self.port)
            if refused is not None:
                raise listen_failure(address, refused) from None
            # The files passed OpenSSL's checks.
            doubt = "in use?" if self._credentials is None else \
                "in use, or the certificate or key could not be used?"
            raise ConfigError(f"could not listen on {address} ({doubt}): {error}") from None
        server.start()
        self._server = server

    def _start_rest(self) -> None:
        try:
            self._rest = RestServer(
                RestApi(self._service), self.host, self.rest_port,
                max_workers=self._max_workers, max_body_bytes=self._max_message_bytes,
                max_connections=self._max_connections, tls=self._tls_context,
            )
        except ConfigError:
            self._server.stop(None)
            raise
        self.bound_rest_port = self._rest.bound_port
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, name="clinical-ner-rest", daemon=True
        )
        self._rest_thread.start()

    def _poll_loop(self) -> None:
        while not self._stop_polling.wait(self._poll_interval_s):
            try:
                self._versions.poll()
            except Exception:  # e.g. the base path vanished; keep serving what is loaded
                logger.exception("Polling %s failed", self.base_path)

    def stop(self, grace: float | None = defaults.GRACE_S) -> None:
        """Refuse new requests (UNAVAILABLE, REST 503); in-flight ones get ``grace`` s to finish.

        Those still running then are cancelled: gRPC's get UNAVAILABLE, REST's a 503 that
        says the grace period ran out.
        """
        self._service.draining.set()
        self._stop_polling.set()
        stopped = None if self._server is None else self._server.stop(grace)
        if self._rest is not None:
            self._rest.drain(grace)
            self._rest_thread.join()
        if stopped is not None:
            stopped.wait()
        if self._poller is not None:
            self._poller.join()
        logger.info("Stopped. Requests served: %s", self._service.stats.summary())
        running = self.running_grpc_calls()
        if grace is not None and running:
            logger.warning("%d gRPC call(s) still running past the %g s grace period: their "
                           "clients got UNAVAILABLE; the model calls go on in the background",
                           running, grace)

    def running_grpc_calls(self) -> int:
        """gRPC calls whose thread is still running; after :meth:`stop`, those its grace
        period cut off, which keep their thread until the model call returns (Python
        waits for them at exit)."""
        return 0 if self._pool is None else self._pool.unfinished

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if ``timeout`` passed first."""
        if self._server is None:
            raise RuntimeError("the server was not started")
        # gRPC returns True when the timeout passed.
        return not self._server.wait_for_termination(timeout)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
