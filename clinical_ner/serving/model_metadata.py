"""What TensorFlow Serving reports about a served model: signatures and version states."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tensorflow.core.framework import types_pb2


@dataclass(frozen=True)
class TensorInfo:
    """dtype name (``"DT_STRING"``) and shape (-1 for any size; None if the rank is unknown)."""

    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    """A served signature: its method name and its input and output tensors."""

    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclass(frozen=True)
class ModelMetadata:
    """What ``GetModelMetadata`` reports: the version answering and its signatures."""

    model_name: str
    version: int
    signatures: dict[str, SignatureInfo]


@dataclass(frozen=True)
class VersionStatus:
    """One version's state (``"AVAILABLE"``, ``"LOADING"``, ``"END"``, ...)."""

    version: int
    state: str
    error_message: str = ""


def tensor_info(info: Any) -> TensorInfo:
    """A ``TensorInfo`` protobuf of a ``SignatureDef`` as a :class:`TensorInfo`."""
    dims = info.tensor_shape.dim
    shape = None if info.tensor_shape.unknown_rank else tuple(dim.size for dim in dims)
    return TensorInfo(dtype=datatype_name(info.dtype), shape=shape)


def datatype_name(value: int) -> str:
    """TF Serving's name of a ``DataType`` value, or ``dtype N`` for a value that names none.

    ``dtype`` is an open enum: a request (or a newer server's answer) may hold any number.
    """
    return enum_name(types_pb2.DataType, value, "dtype")


def enum_name(enum: Any, value: int, what: str) -> str:
    """The name of ``value`` in the protobuf ``enum``, or ``"<what> <value>"`` if it has none.

    Protobuf enums are open: a newer server may answer with a value this
    version of the API does not know, which ``enum.Name`` raises on.
    """
    try:
        return enum.Name(value)
    except ValueError:
        return f"{what} {value}"
