"""Request validation shared by the gRPC and REST APIs: names, shapes, UTF-8, limits and contract.

Each check raises :class:`RequestError` with a message that names inputs,
positions and sizes but never quotes a document, so it is safe to send and
to log. Inputs are string tensors (documents, tokens) or integer tensors
(``classify_assertions``' span offsets). :func:`check_contract` holds the
inputs of the export's signatures to what their graphs can answer rightly.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf

from clinical_ner.export import signatures
from clinical_ner.serving import defaults
from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.model_metadata import datatype_name

# Letters, digits, "_", "-" and "."; starting with a letter or digit rules
# out "." and "..", so a name can never walk out of a directory.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Limits:
    """Most documents (first-dimension rows) per request, and characters per document.

    A document of tokens counts as its tokens joined by single spaces.
    """

    max_documents: int = defaults.MAX_DOCUMENTS
    max_document_chars: int = defaults.MAX_DOCUMENT_CHARS


def clip(name: str) -> str:
    """A client-chosen name in a log-safe, bounded form.

    A lone surrogate (from a JSON ``"\\ud800"`` escape) becomes U+FFFD: no answer quoting
    it could be encoded as UTF-8, and the REST connection closed unanswered.
    """
    return signatures.replace_lone_surrogates(name[:64])


#: The input types the server reads (a signature with another is not served).
SERVED_DTYPES = (tf.string, tf.int32, tf.int64)


def shape_text(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("-1" if size is None else str(size) for size in shape) + "]"


def dtype_name(spec: tf.TensorSpec) -> str:
    """TF Serving's name of the spec's type: ``DT_STRING``, ``DT_INT32``, ..."""
    return datatype_name(spec.dtype.as_datatype_enum)


def describe(specs: dict[str, tf.TensorSpec]) -> str:
    return ", ".join(
        f"'{name}' {dtype_name(spec)} {shape_text(spec.shape)}"
        for name, spec in sorted(specs.items())
    )


def check_model_name(requested: str, served: str) -> None:
    """INVALID_ARGUMENT for a malformed name, NOT_FOUND for another model's."""
    if not MODEL_NAME_PATTERN.fullmatch(requested):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "model_spec.name is empty or invalid: use 1-128 letters, digits, '_', '-' "
            f"or '.', starting with a letter or digit; this server serves '{served}'",
        )
    if requested != served:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"model '{requested}' not found; this server serves '{served}'",
        )


def check_input_names(
    signature_name: str, expected: dict[str, tf.TensorSpec], given: Iterable[str]
) -> None:
    given = set(given)
    if given != set(expected):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature '{signature_name}' takes inputs {describe(expected)}; "
            f"missing {sorted(set(expected) - given)}, "
            f"unexpected {sorted(clip(name) for name in given - set(expected))}",
        )


def check_shape(name: str, spec: tf.TensorSpec, dims: Sequence[int] | None, limits: Limits) -> None:
    """The shape fits ``spec`` (``dims=None``: unknown rank); the batch is neither empty nor
    too large."""
    wanted = f"{dtype_name(spec)} {shape_text(spec.shape)}"
    if (
        dims is None
        or len(dims) != spec.shape.rank
        or any(size < 0 for size in dims)
        or any(want is not None and want != size for want, size in zip(spec.shape, dims))
    ):
        shown = "unknown" if dims is None else str(list(dims))
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' must be {wanted}, got shape {shown}"
        )
    if dims and dims[0] == 0:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}' is an empty batch; send at least one document",
        )
    if dims and dims[0] > limits.max_documents:
        raise RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"input '{name}' has {dims[0]} documents; the limit is {limits.max_documents} "
            "per request (the server's --max-documents); split the batch",
        )


def check_same_documents(signature_name: str, inputs: dict[str, np.ndarray]) -> None:
    """The inputs of one request describe the same documents, and inputs of one rank align.

    ``classify_assertions`` takes ``text`` [B] with ``span_start`` and
    ``span_end`` [B, S]: a request whose spans miss a document, or whose ends
    miss a start, would otherwise be answered for what the graph can pair up.
    """
    names = sorted(inputs)
    batches = {inputs[name].shape[0] for name in names}
    if len(batches) > 1:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature '{signature_name}': every input needs one row per document; got "
            + ", ".join(f"'{name}' {inputs[name].shape[0]}" for name in names))
    first_of_rank: dict[int, str] = {}
    for name in names:
        first = first_of_rank.setdefault(inputs[name].ndim, name)
        if inputs[name].shape != inputs[first].shape:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature '{signature_name}': inputs '{first}' and '{name}' must have the "
                f"same shape, got {list(inputs[first].shape)} and {list(inputs[name].shape)}")


def string_tensor(
    name: str, dims: Sequence[int], values: Sequence[bytes], limits: Limits
) -> np.ndarray:
    """``values`` (row-major, already checked by :func:`check_shape`) as an array of ``dims``.

    Every value must be UTF-8 and every document (first-dimension row) within
    ``limits.max_document_chars``.
    """
    if len(values) != math.prod(dims):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}' has shape {list(dims)} ({math.prod(dims)} elements) but "
            f"{len(values)} string values",
        )
    array = np.empty(len(values), dtype=object)
    chars = np.empty(len(values), dtype=np.int64)
    for index, value in enumerate(values):
        try:
            chars[index] = len(value.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' element {_position(index, dims)} is not valid UTF-8 "
                f"(byte offset {error.start})",
            ) from None
        array[index] = value
    # A document is one row; its strings count as joined by single spaces,
    # so a row of one string counts exactly its characters.
    per_row = chars.reshape(dims[0], math.prod(dims[1:]))
    sizes = per_row.sum(axis=1) + max(per_row.shape[1] - 1, 0)
    too_long = np.flatnonzero(sizes > limits.max_document_chars)
    if too_long.size:
        row = int(too_long[0])
        raise RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"input '{name}' document {row} has {int(sizes[row])} characters; the limit "
            f"is {limits.max_document_chars} per document (--max-document-chars)",
        )
    return array.reshape(dims)


def integer_tensor(
    name: str, spec: tf.TensorSpec, dims: Sequence[int], values: Sequence[int],
    limits: Limits
) -> np.ndarray:
    """``values`` (row-major, already checked by :func:`check_shape`) as an array of ``dims``.

    A document's row holds at most ``limits.max_document_chars`` values (a
    span covers at least one character), checked before anything is made,
    and every value must fit ``spec``'s type.
    """
    per_row = math.prod(dims[1:])
    if per_row > limits.max_document_chars:
        raise RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"input '{name}' has {per_row} values per document; the limit is "
            f"{limits.max_document_chars} (--max-document-chars)",
        )
    if len(values) != math.prod(dims):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}' has shape {list(dims)} ({math.prod(dims)} elements) but "
            f"{len(values)} values",
        )
    try:
        array = np.array(values, dtype=np.int64)
    except OverflowError:
        # A JSON integer can be of any size; compared as Python ints, it is named below.
        array = np.array(values, dtype=object)
    bounds = np.iinfo(spec.dtype.as_numpy_dtype)
    outside = np.flatnonzero((array < bounds.min) | (array > bounds.max))
    if outside.size:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{name}' element {_position(int(outside[0]), dims)} does not fit "
            f"{dtype_name(spec)}",
        )
    return array.astype(spec.dtype.as_numpy_dtype).reshape(dims)


def _position(index: int, dims: Sequence[int]) -> list[int]:
    """The position ``[i, j, ...]`` of the row-major ``index`` in a tensor of ``dims``."""
    return [int(i) for i in np.unravel_index(index, dims)]


# The inputs of the export's signatures that check_contract reads, and their ranks: a
# SavedModel made elsewhere may give these names other inputs, which it leaves alone.
_CONTRACT_RANKS = {
    signatures.PREDICT_TOKENS: {signatures.TOKENS: 2},
    signatures.CLASSIFY_ASSERTIONS: {
        signatures.TEXT: 1, signatures.SPAN_START: 2, signatures.SPAN_END: 2},
}


def check_contract(signature_name: str, inputs: dict[str, np.ndarray]) -> None:
    """Refuse what the export's graphs would answer wrongly instead of failing.

    ``predict_tokens``: ``""`` is a row's padding, so one before a token of
    its row would be skipped and the tags would not line up with the tokens
    (``""`` after the last token pads the row, as TF Serving's tensors must).
    ``classify_assertions``: a span is ``-1, -1`` (padding) or within its text,
    as the in-process API requires; the graph answered others with a guess or ``""``.
    """
    if {name: array.ndim for name, array in inputs.items()} != _CONTRACT_RANKS.get(
            signature_name):
        return
    if signature_name == signatures.PREDICT_TOKENS:
        _check_token_padding(inputs[signatures.TOKENS])
    else:
        _check_spans(inputs)


def _check_token_padding(tokens: np.ndarray) -> None:
    empty = tokens == signatures.PAD_TOKEN.encode()
    # Whether a token comes at or after each position of its row.
    token_follows = np.flip(np.logical_or.accumulate(np.flip(~empty, axis=1), axis=1), axis=1)
    misplaced = np.argwhere(empty & token_follows)
    if misplaced.size:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{signatures.TOKENS}' element {[int(i) for i in misplaced[0]]} is \"\" "
            f"before a token of its row: {signatures.EMPTY_TOKEN_RULE}; pad a row only "
            "after its last token",
        )


def _check_spans(inputs: dict[str, np.ndarray]) -> None:
    # Code points, as the offsets count them (the texts are checked UTF-8).
    lengths = np.array([len(text.decode("utf-8")) for text in inputs[signatures.TEXT]],
                       dtype=np.int64)
    starts = inputs[signatures.SPAN_START].astype(np.int64)
    ends = inputs[signatures.SPAN_END].astype(np.int64)
    within = signatures.span_within(starts, ends, lengths[:, None])
    _refuse_first_span(~(_padding(starts, ends) | within), starts, ends, lambda row: (
        f"is neither -1, -1 (padding) nor 0 <= start < end <= {lengths[row]} (text {row}'s "
        "length in code points)"))


def check_answer(signature_name: str, inputs: dict[str, np.ndarray],
                 outputs: dict[str, np.ndarray], classifies_assertions: bool) -> None:
    """Refuse an answer the graph gave where the in-process API raises.

    ``classify_assertions`` of a model with assertions answers ``""`` for a
    span that covers no token (only whitespace, or separators such as a
    zero-width space), for which ``Annotator.classify_assertions`` raises.
    """
    if not classifies_assertions or signature_name != signatures.CLASSIFY_ASSERTIONS:
        return
    starts, ends = inputs[signatures.SPAN_START], inputs[signatures.SPAN_END]
    uncovered = ~_padding(starts, ends) & (outputs[signatures.ASSERTION] == b"")
    _refuse_first_span(uncovered, starts, ends, lambda row: (
        f"covers no token of text {row} (only whitespace or separators)"))


def _padding(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    return (starts == -1) & (ends == -1)


def _refuse_first_span(refused: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                       problem: Callable[[int], str]) -> None:
    """INVALID_ARGUMENT naming the first span where ``refused`` holds and, by its row, why."""
    if refused.any():
        row, column = (int(i) for i in np.argwhere(refused)[0])
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"inputs '{signatures.SPAN_START}' and '{signatures.SPAN_END}' element "
            f"[{row}, {column}]: span [{starts[row, column]}, {ends[row, column]}) "
            f"{problem(row)}",
        )
