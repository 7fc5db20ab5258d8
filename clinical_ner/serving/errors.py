"""The one failure a request can end in, whichever protocol carried it."""
from __future__ import annotations

import grpc

# TensorFlow's error codes are numerically gRPC's, so grpc.StatusCode names the
# codes of both APIs; the REST API maps them to HTTP statuses as TF Serving does.
TF_ERROR_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RequestError(Exception):
    """A request failed with a status code; the message is safe to send and log."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
