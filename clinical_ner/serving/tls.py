"""The PEM files of TLS: read and checked before a server listens or a client connects.

gRPC reports a missing, unreadable or malformed certificate only when the
port is bound or the first call fails, and without naming the file; these
checks name the setting and the path instead (:class:`ConfigError`, exit 2).
"""
from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from clinical_ner.errors import ConfigError, os_reason, setting_name

# Every PEM block opens with such a line (RFC 7468); gRPC reads no other encoding.
_PEM_BEGIN = b"-----BEGIN"


def read_pem(path: str | Path, setting: str, what: str) -> bytes:
    """The bytes of the PEM file at ``path``, which holds ``what`` and is given by ``setting``.

    A :class:`ConfigError` naming ``setting`` and ``path`` if it cannot be read
    or holds no PEM block.
    """
    setting = setting_name(setting)
    if not os.fspath(path):
        # Path("") is the working directory: "--root-certificates .: cannot read ... (Is a
        # directory)" named neither the mistake (an unset variable) nor the value given.
        raise ConfigError(f"{setting} is empty; give the PEM file of {what}")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting} {path}: cannot read {what} "
                          f"({os_reason(error)})") from None
    if _PEM_BEGIN not in data:
        raise ConfigError(f"{setting} {path}: not PEM (no '-----BEGIN' line); give {what} "
                          "in PEM format")
    return data


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context of the certificate chain ``cert`` and private key ``key``.

    A :class:`ConfigError` if OpenSSL cannot use them (a malformed block, a
    key that does not match the certificate), which also keeps gRPC from
    failing to listen on them with a message that blames the port.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise ConfigError(f"{setting_name('ssl_cert')} {cert} and {setting_name('ssl_key')} "
                          f"{key}: the certificate or key could not be used "
                          f"({error.reason or error})") from None
    return context


def speaks_tls(target: str, timeout: float) -> bool:
    """Whether the server at ``target`` (``host:port``) completes a TLS handshake.

    Its certificate is not verified: this only tells a TLS server from one
    that closed a plaintext connection for another reason.
    """
    host, _, port = target.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw):
                return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False
