"""What both APIs of the server do, in their terms: find the version, validate, predict, report.

The gRPC servicers (:mod:`clinical_ner.serving.grpc_api`) and the REST
handler (:mod:`clinical_ner.serving.rest_api`) only translate between their
wire format and :class:`ModelService`, so the two answer alike: same
versions, same limits, same merged model calls, same errors, same logs.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from clinical_ner.serving.batcher import Batcher
from clinical_ner.serving.errors import TF_ERROR_CODES, RequestError
from clinical_ner.serving.stats import RequestStats
from clinical_ner.serving.validation import (
    Limits,
    check_answer,
    check_contract,
    check_model_name,
    check_same_documents,
    clip,
)
from clinical_ner.serving.versions import ModelVersions, Signature, Version, call_signature
from clinical_ner.export.signatures import SERVING_DEFAULT, SIGNATURE_DEF_METADATA

logger = logging.getLogger(__name__)

# Reads a request's inputs once the signature is known: (name, signature) -> arrays.
InputReader = Callable[[str, Signature], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Prediction:
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]  # the requested outputs, sorted by name


@dataclass(frozen=True)
class Outcome:
    """How a request ended: its response (None on failure), status code and safe message."""

    response: Any
    code: grpc.StatusCode
    message: str = ""


class ModelService:
    """Validation and execution of requests for one model, shared by both APIs."""

    def __init__(
        self,
        versions: ModelVersions,
        model_name: str,
        limits: Limits,
        max_concurrent_calls: int,
        max_batch_documents: int,
    ) -> None:
        self.versions = versions
        self.model_name = model_name
        self.limits = limits
        self.batcher = Batcher(max_concurrent_calls, max_batch_documents, call_signature)
        self.draining = threading.Event()
        self.stats = RequestStats()

    def handle(self, method: str, handle: Callable[[dict[str, Any]], Any]) -> Outcome:
        """Run ``handle(fields)``, turning failures into status codes; log and count the request.

        ``handle`` may add ``key=value`` fields (never request text) to the log line.
        """
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        response = None
        if self.draining.is_set():
            code, message = grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
        else:
            try:
                response = handle(fields)
                code, message = grpc.StatusCode.OK, ""
            except RequestError as error:
                code, message = error.code, error.message
            except Exception as error:  # an unexpected bug must not end the server
                code = grpc.StatusCode.INTERNAL
                message = f"internal error ({type(error).__name__}); see the server log"
                # The exception's message is withheld: it could quote request data.
                logger.error(
                    "%s failed with %s (message withheld)\n%s",
                    method,
                    type(error).__name__,
                    "".join(traceback.format_tb(error.__traceback__)),
                )
        elapsed = time.perf_counter() - started
        self.stats.record(method, code.name, elapsed)
        logger.debug(
            "%s %s %.2f ms %s",
            method,
            code.name,
            elapsed * 1e3,
            " ".join(f"{key}={value}" for key, value in fields.items()),
        )
        return Outcome(response, code, message)

    def version(self, model_name: str, number: int | None) -> Version:
        check_model_name(model_name, self.model_name)
        return self.versions.get(number)

    def predict(
        self,
        model_name: str,
        number: int | None,
        signature_name: str,
        read_inputs: InputReader,
        output_filter: list[str],
        fields: dict[str, Any],
    ) -> Prediction:
        """Run a signature on the inputs ``read_inputs`` gives for it (merged with others)."""
        version = self.version(model_name, number)
        signature_name = signature_name or SERVING_DEFAULT
        signature = version.signatures.get(signature_name)
        # Logged by name only when it is one of the model's: a client may send anything.
        fields.update(version=version.number,
                      signature=signature_name if signature is not None else "(unknown)")
        if signature is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"signature '{clip(signature_name)}' not found in version {version.number}; "
                f"signatures: {sorted(version.signatures)}",
            )
        # Checked before the model runs, which an unknown name would only waste.
        unknown = sorted(set(output_filter) - set(signature.outputs))
        if unknown:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output_filter names unknown outputs {[clip(name) for name in unknown]}; "
                f"signature '{signature_name}' has outputs {list(signature.outputs)}",
            )
        inputs = read_inputs(signature_name, signature)
        check_same_documents(signature_name, inputs)
        check_contract(signature_name, inputs)
        fields["documents"] = next(iter(inputs.values())).shape[0]
        try:
            call = self.batcher.run(signature.function, inputs)
        except tf.errors.OpError as error:
            logger.error(
                "Signature %r of version %d failed with %s (message withheld)",
                signature_name,
                version.number,
                type(error).__name__,
            )
            raise RequestError(
                TF_ERROR_CODES.get(error.error_code, grpc.StatusCode.INTERNAL),
                f"signature '{signature_name}' failed with {type(error).__name__}; the "
                "TensorFlow message is withheld because it may quote the input",
            ) from None
        outputs = call.outputs
        fields["batch_documents"] = call.batch_documents
        check_answer(signature_name, inputs, outputs, version.classifies_assertions)
        wanted = output_filter or sorted(outputs)
        return Prediction(version.number, signature_name, {name: outputs[name] for name in wanted})

    def model_metadata(
        self,
        model_name: str,
        number: int | None,
        metadata_fields: list[str],
        fields: dict[str, Any],
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        version = self.version(model_name, number)
        fields["version"] = version.number
        if not metadata_fields:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field; "
                f"supported: '{SIGNATURE_DEF_METADATA}'",
            )
        unsupported = sorted(set(metadata_fields) - {SIGNATURE_DEF_METADATA})
        if unsupported:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata fields {[clip(field) for field in unsupported]} are not "
                f"supported; supported: '{SIGNATURE_DEF_METADATA}'",
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = version.number
        response.metadata[SIGNATURE_DEF_METADATA].Pack(version.signature_defs)
        return response

    def model_status(
        self, model_name: str, number: int | None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        # Not self.version: the status also reports versions that are not loaded.
        check_model_name(model_name, self.model_name)
        states = self.versions.states()
        if number is not None:
            states = {number: states[number]} if number in states else {}
        if not states:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model '{self.model_name}'"
                + (f" with version {number}" if number is not None else ""),
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for version_number, state in sorted(states.items()):
            status = response.model_version_status.add()
            status.version = version_number
            status.state = state.state
            status.status.error_code = state.error_code
            status.status.error_message = state.error_message
        return response
