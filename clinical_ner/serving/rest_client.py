"""A small client for TensorFlow Serving's REST API (``tensorflow_model_server --rest_api_port``
or ``clinical-ner serve --rest-port``), with the standard library's HTTP client.

Keep-alive connections, one for each request in flight: threads may share a client
(a web framework's thread pool). Outputs are decoded by
:mod:`clinical_ner.export.signatures`, as the gRPC client's are, so both give the same
:class:`~clinical_ner.text.document.Entity` objects. Error messages never quote document text.

>>> with RestClient("127.0.0.1", 8501) as client:  # doctest: +SKIP
...     client.annotate(["Chest x-ray showed pneumonia."])
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from clinical_ner.text.document import Entity
from clinical_ner.artifacts.saved_model import MAX_VERSION
from clinical_ner.serving import defaults
from clinical_ner.export.signatures import (
    SERVING_DEFAULT, TEXT, ModelOutputError, checked_texts, entities_from_outputs,
    replace_lone_surrogates,
)
from clinical_ner.errors import (
    ClinicalNERError, ConfigError, check_host_port, check_integer, check_seconds, os_reason,
)
from clinical_ner.serving.client_errors import handshake_refusal, unknown_host
from clinical_ner.serving.tls import speaks_tls
from clinical_ner.untrusted_json import UntrustedJSONError, json_kind, parse_untrusted_json


class RestError(ClinicalNERError):
    """A REST request failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestClient:
    """Requests to one REST server; ``ssl_context`` switches to HTTPS.

    Thread-safe: concurrent requests each borrow a keep-alive connection (one is
    opened when none is idle), so threads may share one client.
    """

    def __init__(
        self,
        host: str,
        port: int = defaults.REST_PORT,
        model_name: str = defaults.MODEL_NAME,
        *,
        timeout: float = defaults.TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # As ServingClient checks its target: http.client wrapped port 99999 round to
        # another port (34463), took None for 80, and -1 or "[::1]" for unknown hosts.
        if not isinstance(host, str):
            raise ConfigError(f"host is {type(host).__name__}, expected a str (a host name or "
                              "IP address)")
        bare_ipv6 = host.count(":") >= 2 and not host.startswith("[")
        check_host_port("host and port", f"[{host}]:{port}" if bare_ipv6 else f"{host}:{port}")
        check_seconds("timeout", timeout, maximum=defaults.MAX_WAIT_S)
        self.host = host
        self.port = port
        self.model_name = model_name
        self._timeout = timeout
        self._ssl_context = ssl_context
        # Idle keep-alive connections. An http.client connection carries one request at a
        # time: shared by threads, one's request failed with CannotSendRequest, or with
        # "Bad file descriptor" once another had closed it.
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send ``body`` (JSON-encoded unless bytes); the status and the decoded JSON answer.

        A keep-alive connection the server closed meanwhile is reopened once.
        """
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            # A second attempt opens a new connection: other idle ones may be
            # closed by the server too.
            connection = self._borrow(new=attempt == 2)
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                if response.will_close:
                    connection.close()
                else:
                    self._give_back(connection)
                break
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as error:
                connection.close()
                if attempt == 2:
                    raise self._unanswered(method, path, error) from None
            except http.client.HTTPException as error:
                # Bytes that are no HTTP/1.1 answer (a gRPC port's HTTP/2 frames: a
                # BadStatusLine), which http.client quoted: not quoted.
                connection.close()
                hint = ("; is it a gRPC port? Give the server's REST port"
                        if isinstance(error, http.client.BadStatusLine) else "")
                raise RestError(f"{method} {path} to {self.host}:{self.port}: the answer is not "
                                f"valid HTTP/1.1 ({type(error).__name__}){hint}") from None
            except socket.gaierror as error:
                connection.close()
                # As the gRPC client says it: socket's own error named no host.
                unknown = unknown_host(f"{method} {path}", f"{self.host}:{self.port}",
                                       error.strerror or "", setting="host", code=None)
                if unknown is None:
                    # A name server that cannot be reached: no wrong host, but no answer.
                    raise self._unanswered(method, path, error) from None
                raise unknown from None
            except OSError as error:
                # Refused, unreachable, timed out: socket's own error named no server.
                connection.close()
                raise self._unanswered(method, path, error) from None
        try:
            return response.status, parse_untrusted_json(payload)
        except UntrustedJSONError:
            raise RestError(
                f"{method} {path}: HTTP {response.status} with a body that is not JSON",
                response.status,
            ) from None

    def _unanswered(self, method: str, path: str, error: OSError) -> RestError:
        """The error of a request to this server that got no answer, for ``error``'s reason."""
        address = f"{self.host}:{self.port}"
        if (self._ssl_context is None and isinstance(error, (ConnectionResetError,
                                                              BrokenPipeError))
                and speaks_tls(address, min(self._timeout, defaults.TLS_PROBE_S))):
            # A TLS server closes a plaintext connection: "Connection reset by peer" alone
            # named no TLS.
            return RestError(f"{method} {path} to {address} got no answer: {address} speaks "
                             "TLS and this client does not; give ssl_context (e.g. "
                             "ssl.create_default_context(cafile=CA_PEM))")
        if self._ssl_context is not None and isinstance(error, ssl.SSLError):
            # The SSL reason alone said nothing of what to do, as gRPC's handshake errors do.
            refusal = handshake_refusal(os_reason(error), "ssl_context", self.host)
            if refusal is not None:
                return RestError(f"{method} {path} to {address}: {refusal}")
        # A timeout has no words of the system's (os_reason would say "TimeoutError").
        reason = (f"none within {self._timeout} s (timeout)" if isinstance(error, TimeoutError)
                  else os_reason(error))
        return RestError(f"{method} {path} to {address} got no answer: {reason}")

    def predict(self, body: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        """POST ``body`` to ``:predict``; the answer, or :class:`RestError`."""
        return self._predict(self._model_path(version), body)

    def _predict(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """:meth:`predict` of the model at ``path`` (:meth:`_model_path`)."""
        status, answer = self.request("POST", path + ":predict", body)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            # TF Serving's {"error": "..."}; another server's answer is not quoted (an
            # {"error": 5} raised TypeError below).
            message = error if isinstance(error, str) else (
                f"(no error message: the answer is {json_kind(answer)}"
                + (" without a string 'error')" if isinstance(answer, dict) else ")"))
            quoted = [text for text in _strings(body) if len(text) >= 4 and text[:32] in message]
            if quoted:
                message = "(server message withheld: it quoted request text)"
            raise RestError(f"POST {path}:predict failed with HTTP {status}: {message}", status)
        return answer

    def _model_path(self, version: int | None) -> str:
        path = f"/v1/models/{self.model_name}"
        if version is None:
            return path
        # As ServingClient checks it: True or "1; x" went into the path (400 Malformed).
        check_integer("version", version, maximum=MAX_VERSION)
        return f"{path}/versions/{version}"

    def annotate(self, texts: Sequence[str], version: int | None = None) -> list[list[Entity]]:
        """The entities of each document (one request, columnar format)."""
        if isinstance(texts, str):
            # Each of its characters would be a document.
            raise TypeError("texts is str, expected a list of str (give [text] for one "
                            "document)")
        # As the in-process API checks them: a mapping's keys or a DataFrame's column names
        # were annotated.
        texts = checked_texts(texts)
        if not texts:
            return []  # as ServingClient and the in-process API answer (the server: 400)
        # As ServingClient sends them (encode_text): a lone surrogate, which UTF-8 cannot
        # encode, as U+FFFD; the server refused it (400, not valid UTF-8).
        sent = [replace_lone_surrogates(text) for text in texts]
        path = self._model_path(version)
        answer = self._predict(path, {"signature_name": SERVING_DEFAULT, "inputs": {TEXT: sent}})
        # Another service on the port, or a proxy's own answer: no KeyError or AttributeError.
        where = f"POST {path}:predict: HTTP 200"
        if not isinstance(answer, dict) or "outputs" not in answer:
            got = (f"fields {sorted(name[:64] for name in answer)[:8]}"
                   if isinstance(answer, dict) else json_kind(answer))
            raise RestError(f"{where} without 'outputs' (the columnar format's answer); got "
                            f"{got}", 200)
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):
            raise RestError(f"{where} whose 'outputs' is {json_kind(outputs)}, not an object "
                            "of the signature's outputs", 200)
        try:
            arrays = outputs_as_arrays(outputs)
            return entities_from_outputs(texts, arrays)
        except ModelOutputError:
            raise
        except (ValueError, TypeError) as error:
            # Ragged lists, or a string where a number belongs; the values are not quoted.
            raise ModelOutputError(f"{where} with outputs that are not lists of one shape and "
                                   f"type each ({type(error).__name__})") from None

    def _borrow(self, new: bool = False) -> http.client.HTTPConnection:
        """An idle keep-alive connection for one request, or (none idle, or ``new``) a new one."""
        if not new:
            with self._idle_lock:
                if self._idle:
                    return self._idle.pop()
        host = self.host.removeprefix("[").removesuffix("]")  # an IPv6 address's brackets
        if self._ssl_context is None:
            return http.client.HTTPConnection(host, self.port, timeout=self._timeout)
        return http.client.HTTPSConnection(host, self.port, timeout=self._timeout,
                                           context=self._ssl_context)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            self._idle.append(connection)

    def close(self) -> None:
        """Close the idle connections (a later request opens one again)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def outputs_as_arrays(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Columnar ``outputs`` as arrays, strings as bytes (as the gRPC client gets them)."""
    arrays = {}
    for name, value in outputs.items():
        array = np.array(value)
        if array.dtype.kind == "U":
            array = np.char.encode(array, "utf-8").astype(object)
        arrays[name] = array
    return arrays


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
