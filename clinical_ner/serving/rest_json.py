"""TF Serving's REST JSON formats: request values to string tensors, output tensors to JSON.

Row format (``instances``) and columnar format (``inputs``), each with named
inputs (objects) or, for a one-input signature, bare values; strings are
JSON strings or ``{"b64": "..."}``, integers JSON integers. Output strings are text (``{"b64": ...}``
if not UTF-8), floats the shortest decimal of their float32 value. Messages
name inputs and positions, never values.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf

from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.validation import (
    Limits,
    check_input_names,
    check_shape,
    describe,
    integer_tensor,
    string_tensor,
)
from clinical_ner.serving.versions import Signature
from clinical_ner.untrusted_json import UntrustedJSONError, json_kind, parse_untrusted_json


def parse_json(body: bytes) -> Any:
    """The request body as JSON, or INVALID_ARGUMENT naming the syntax error's offset.

    Also for what ``json.loads`` raises besides syntax errors (a value nested
    too deeply, a number too long), as TF Serving answers 400 to those.
    """
    try:
        return parse_untrusted_json(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"JSON Parse error: the body is not UTF-8 (byte offset {error.start})",
        ) from None
    except UntrustedJSONError as error:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"JSON Parse error: {error.located(' at offset: {pos}')}",
        ) from None


# -- JSON to tensors -------------------------------------------------------------


def _leaf_bytes(name: str, value: Any, position: list[int]) -> bytes:
    if isinstance(value, str):
        # surrogatepass: a lone surrogate from a JSON \ud800 escape becomes bytes
        # that are not UTF-8, refused below with its position, as over gRPC.
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' element {position} is not valid base64",
            ) from None
    raise RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input '{name}' element {position} is {json_kind(value)}; expected a string "
        'or {"b64": "..."}',
    )


def _leaf_integer(name: str, value: Any, position: list[int]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input '{name}' element {position} is {json_kind(value)}; expected an integer",
    )


def _shape(value: Any) -> list[int]:
    """The shape of a nested JSON list, read along its first items."""
    dims = []
    probe = value
    while isinstance(probe, list):
        dims.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    return dims


def _values(name: str, value: Any, dims: list[int],
            leaf: Callable[[str, Any, list[int]], Any] = _leaf_bytes) -> list[Any]:
    """The row-major values of a nested JSON list of shape ``dims``: strings, or what
    ``leaf`` reads."""
    values: list[Any] = []
    padding = ' (pad token rows with "")' if leaf is _leaf_bytes else ""

    def visit(item: Any, position: list[int]) -> None:
        depth = len(position)
        if depth == len(dims):
            values.append(leaf(name, item, position))
            return
        if not isinstance(item, list) or len(item) != dims[depth]:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' is not a rectangular list at element {position}: every "
                f"list at depth {depth} must have {dims[depth]} items{padding}",
            )
        for index, child in enumerate(item):
            visit(child, position + [index])

    visit(value, [])
    return values


def _is_named(value: Any) -> bool:
    """An object of input names (not a ``{"b64": ...}`` string)."""
    return isinstance(value, dict) and not (set(value) == {"b64"})


def _read_tensor(limits: Limits, name: str, spec: Any, value: Any) -> np.ndarray:
    dims = _shape(value)
    # The rank is checked first: visiting the values recurses once per level,
    # and a value nested hundreds of levels deep must not exhaust the stack.
    check_shape(name, spec, dims, limits)
    if spec.dtype != tf.string:
        return integer_tensor(name, spec, dims, _values(name, value, dims, _leaf_integer),
                              limits)
    return string_tensor(name, dims, _values(name, value, dims), limits)


def row_inputs(
    limits: Limits, signature_name: str, signature: Signature, instances: Any
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"'instances' must be a list, got {json_kind(instances)}",
        )
    named = [_is_named(instance) for instance in instances]
    if instances and all(named):
        for index, instance in enumerate(instances):
            try:
                check_input_names(signature_name, signature.inputs, instance)
            except RequestError as error:
                raise RequestError(error.code, f"instance {index}: {error.message}") from None
        columns = {name: [instance[name] for instance in instances] for name in signature.inputs}
    elif any(named):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "'instances' mixes objects of named inputs with bare values; use one form",
        )
    else:
        columns = _single_input(signature_name, signature, instances, "each instance")
    return _read_columns(limits, signature, columns)


def columnar_inputs(
    limits: Limits, signature_name: str, signature: Signature, inputs: Any
) -> dict[str, np.ndarray]:
    if _is_named(inputs):
        check_input_names(signature_name, signature.inputs, inputs)
        columns = inputs
    else:
        columns = _single_input(signature_name, signature, inputs, "'inputs'")
    return _read_columns(limits, signature, columns)


def _single_input(
    signature_name: str, signature: Signature, value: Any, what: str
) -> dict[str, Any]:
    """``value`` as the only input of a one-input signature (TF Serving's unnamed form)."""
    if len(signature.inputs) != 1:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature '{signature_name}' takes inputs {describe(signature.inputs)}; "
            f"{what} must be an object naming them",
        )
    return {next(iter(signature.inputs)): value}


def _read_columns(
    limits: Limits, signature: Signature, columns: dict[str, Any]
) -> dict[str, np.ndarray]:
    return {
        name: _read_tensor(limits, name, signature.inputs[name], columns[name])
        for name in sorted(signature.inputs)
    }


# -- tensors to JSON ---------------------------------------------------------------


def _json_value(value: np.ndarray) -> Any:
    """An output tensor as nested JSON lists (strings as text, floats at float32 precision)."""
    if value.dtype == object or value.dtype.kind == "S":
        flat = [_json_string(item) for item in value.ravel()]
        return np.array(flat + [None], dtype=object)[:-1].reshape(value.shape).tolist()
    if value.dtype == np.float32:
        # The shortest decimal that reads back as the same float32 (0.9, not
        # 0.8999999761581421), as TF Serving writes floats.
        return value.astype(str).astype(np.float64).tolist()
    return value.tolist()


def _json_string(item: Any) -> Any:
    data = item if isinstance(item, bytes) else str(item).encode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def predict_body(row_format: bool, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    if not row_format:
        values = {name: _json_value(value) for name, value in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {name: (value.shape[0] if value.ndim else None) for name, value in outputs.items()}
    batch = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size is None or size != batch:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}; "
                "use the columnar format ('inputs')",
            )
    values = {name: _json_value(value) for name, value in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: rows[index] for name, rows in values.items()}
                            for index in range(batch)]}
