"""TensorFlow Serving's gRPC API (PredictionService, ModelService) over :class:`ModelService`.

The servicers implement the stock services of ``tensorflow-serving-api``;
this module only reads request protos into the service's terms and writes
its answers back as protos. ``model_spec.version_label`` answers
``UNIMPLEMENTED`` (no label configuration here), and Classify, Regress,
MultiInference and HandleReloadConfigRequest are not implemented. A request
that is not a valid protobuf message of its method answers
``INVALID_ARGUMENT``.
"""
from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.service import ModelService
from clinical_ner.serving.validation import (
    check_input_names,
    check_shape,
    datatype_name,
    dtype_name,
    integer_tensor,
    shape_text,
    string_tensor,
)
from clinical_ner.serving.versions import Signature


def requested_version(spec: Any) -> int | None:
    """The version a ModelSpec asks for; None for the highest."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        raise RequestError(
            grpc.StatusCode.UNIMPLEMENTED,
            "version labels are not supported by the development server; request a "
            "version number, or use TensorFlow Serving with version_labels in models.config",
        )
    return spec.version.value if choice == "version" else None


def _model_spec(request: Any) -> tuple[str, int | None]:
    if not request.HasField("model_spec"):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    return request.model_spec.name, requested_version(request.model_spec)


def _read_inputs(
    service: ModelService, request: predict_pb2.PredictRequest
) -> Any:
    def read(signature_name: str, signature: Signature) -> dict[str, np.ndarray]:
        check_input_names(signature_name, signature.inputs, request.inputs)
        return {
            name: _input_tensor(service, name, signature.inputs[name], request.inputs[name])
            for name in sorted(signature.inputs)
        }

    return read


def _input_tensor(service: ModelService, name: str, spec: tf.TensorSpec, proto: Any) -> np.ndarray:
    if proto.dtype != spec.dtype.as_datatype_enum:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}' must be {dtype_name(spec)} {shape_text(spec.shape)}, "
            f"got {datatype_name(proto.dtype)}",
        )
    dims = None if proto.tensor_shape.unknown_rank else [d.size for d in proto.tensor_shape.dim]
    check_shape(name, spec, dims, service.limits)
    if spec.dtype != tf.string:
        # make_tensor_proto packs numbers into tensor_content (little-endian).
        little_endian = np.dtype(spec.dtype.as_numpy_dtype).newbyteorder("<")
        if proto.tensor_content:
            if len(proto.tensor_content) % little_endian.itemsize:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input '{name}' has a truncated tensor_content")
            values = np.frombuffer(proto.tensor_content, little_endian)
        else:
            values = proto.int_val if spec.dtype == tf.int32 else proto.int64_val
        return integer_tensor(name, spec, dims, values, service.limits)
    if proto.tensor_content:
        # String tensors have no tensor_content encoding; count it as no values.
        return string_tensor(name, dims, [], service.limits)
    return string_tensor(name, dims, proto.string_val, service.limits)


class _Undecodable:
    """What a request's bytes deserialize to when they are not a message of its type."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


class _Servicer:
    def __init__(self, service: ModelService) -> None:
        self._service = service

    def _answer(self, method: str, handle: Any, context: grpc.ServicerContext) -> Any:
        outcome = self._service.handle(method, handle)
        if outcome.code is not grpc.StatusCode.OK:
            context.abort(outcome.code, outcome.message)
        return outcome.response

    def _refuse_undecodable(self, method: str, request: _Undecodable,
                            context: grpc.ServicerContext) -> None:
        def refuse(fields: dict[str, Any]) -> None:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request.type_name} (it could not be parsed "
                "as that protobuf message)",
            )

        self._answer(method, refuse, context)


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):  # noqa: N802 (gRPC method names)
        def predict(fields: dict[str, Any]) -> predict_pb2.PredictResponse:
            name, version = _model_spec(request)
            prediction = self._service.predict(
                name, version, request.model_spec.signature_name,
                _read_inputs(self._service, request), list(request.output_filter), fields,
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = self._service.model_name
            response.model_spec.version.value = prediction.version
            response.model_spec.signature_name = prediction.signature_name
            for output, value in prediction.outputs.items():
                response.outputs[output].CopyFrom(tf.make_tensor_proto(value))
            return response

        return self._answer("Predict", predict, context)

    def GetModelMetadata(self, request, context):  # noqa: N802
        def metadata(fields: dict[str, Any]) -> Any:
            name, version = _model_spec(request)
            return self._service.model_metadata(
                name, version, list(request.metadata_field), fields
            )

        return self._answer("GetModelMetadata", metadata, context)

    def Classify(self, request, context):  # noqa: N802
        _unimplemented("Classify", context)

    def Regress(self, request, context):  # noqa: N802
        _unimplemented("Regress", context)

    def MultiInference(self, request, context):  # noqa: N802
        _unimplemented("MultiInference", context)


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):  # noqa: N802
        def status(fields: dict[str, Any]) -> Any:
            return self._service.model_status(*_model_spec(request))

        return self._answer("GetModelStatus", status, context)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        _unimplemented("HandleReloadConfigRequest", context)


def _unimplemented(method: str, context: grpc.ServicerContext) -> None:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not implemented by the clinical-ner development server; use Predict",
    )


def add_servicers(service: ModelService, server: grpc.Server) -> None:
    """Serve PredictionService and ModelService of ``service`` on ``server``.

    As the generated ``add_*Servicer_to_server`` functions do, from the
    services' descriptors, except that bytes that are not a valid request
    reach the servicer as :class:`_Undecodable`: with the generated
    deserializers, gRPC logs a traceback at ERROR and answers ``INTERNAL``.
    """
    for servicer, descriptor in (
        (PredictionServicer(service),
         prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]),
        (ModelServicer(service), model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]),
    ):
        server.add_generic_rpc_handlers((_generic_handler(servicer, descriptor),))


def _generic_handler(servicer: _Servicer, service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        service.full_name,
        {method.name: _method_handler(servicer, method) for method in service.methods},
    )


def _method_handler(servicer: _Servicer, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behaviour = getattr(servicer, method.name)

    def deserialize(data: bytes) -> Any:
        try:
            return request_class.FromString(data)
        except DecodeError:  # raised here, gRPC would log a traceback and answer INTERNAL
            return _Undecodable(method.input_type.name)

    def serve(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            return servicer._refuse_undecodable(method.name, request, context)
        return behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        serve, request_deserializer=deserialize,
        response_serializer=response_class.SerializeToString,
    )
