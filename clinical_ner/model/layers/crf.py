"""Linear-chain conditional random field in core TensorFlow ops.

All tensors are batch-major: ``potentials`` (emission scores) are
``[batch, steps, num_tags]``, ``tags`` are ``[batch, steps]`` and ``lengths``
(int32 ``[batch]``) say how many leading steps of each row are real. Padding
steps never change a result, whatever they hold (they are zeroed before use),
and a row of length 0 (an empty sentence) has score 0, log-partition 0, all
tags 0 and all marginals 0. Padding steps of every per-step output hold tag 0
and marginals 0. Lengths are clipped to ``[0, steps]``.

The score of a tag path ``y`` of length ``n`` is::

    start[y_0] + sum_t potentials[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t]
    + end[y_{n-1}]

The functions run eagerly and inside ``tf.function`` with fully dynamic shapes
(``[None, None, K]``, even ``steps == 0``), and use only core ops (``while``
loops, ``TensorArray``, gathers, reductions), so a graph that calls them
exports to a SavedModel that stock TensorFlow Serving runs. The time loops are
time-major ``tf.while_loop`` calls vectorised over batch and tags. Eagerly
they are Python loops over time; wrap hot calls in a ``tf.function`` with an
``input_signature`` of dynamic shapes so that one trace serves every batch
(:meth:`CRF.decode` does).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Added to the score of a forbidden transition, start or end. It is finite so
# that forbidden-only sums never compute inf - inf = NaN, and large enough
# that one forbidden step outweighs any realistic difference in emission and
# learned transition scores (|scores| of a few tens per token): Viterbi never
# picks a forbidden path while an allowed one exists, and the marginal weight
# of forbidden paths, exp(-1e4), is exactly 0 in float32 and float64.
FORBIDDEN_SCORE = -1e4


def _prepare(
    potentials: tf.Tensor, lengths: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Validated potentials, clipped lengths and the step mask.

    Returns ``(potentials, lengths, mask, num_steps)`` where ``num_steps`` is
    the caller's step count and ``potentials``/``mask`` have at least one
    step: the loops write their first step before looping, so a batch whose
    rows are all empty (``steps == 0``) gets one masked dummy step, which
    callers slice off their per-step outputs.
    """
    potentials = tf.convert_to_tensor(potentials)
    if not potentials.dtype.is_floating:
        raise TypeError(f"potentials must be floating point, got {potentials.dtype.name}")
    shape = tf.shape(potentials)
    num_steps = shape[1]
    lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, num_steps)
    missing_steps = tf.maximum(1 - num_steps, 0)
    potentials = tf.concat(
        [potentials, tf.zeros([shape[0], missing_steps, shape[2]], potentials.dtype)], axis=1
    )
    mask = tf.sequence_mask(lengths, tf.shape(potentials)[1])
    # tf.where rather than a multiplication, so that NaN or inf padding
    # cannot leak through 0 * NaN.
    potentials = tf.where(mask[:, :, tf.newaxis], potentials, tf.zeros_like(potentials))
    return potentials, lengths, mask, num_steps


def _cast_parameters(
    dtype: tf.DType, transitions, start_transitions, end_transitions
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    return (
        tf.cast(transitions, dtype),
        tf.cast(start_transitions, dtype),
        tf.cast(end_transitions, dtype),
    )


def _swap_batch_and_time(tensor: tf.Tensor) -> tf.Tensor:
    """Batch-major to time-major and back (the loops index steps on axis 0)."""
    return tf.transpose(tensor, [1, 0] + list(range(2, tensor.shape.rank)))


def _at_last_step(values: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Each row's value at its last real step (at step 0 for empty rows), batch-major."""
    return tf.gather(values, tf.maximum(lengths - 1, 0), batch_dims=1)


def _log_sums_unmasked(potentials_tm: tf.Tensor, transitions: tf.Tensor,
                       start_transitions: tf.Tensor) -> tf.Tensor:
    """Forward-algorithm log-sums of every step, time-major ``[steps, batch, tags]``.

    The loop runs on through each row's padding unmasked: the caller reads
    only real steps, which depend only on earlier real steps, and masking
    would cost ops at every step. The log-sum-exp over the previous tag is a
    matrix product of exponentials, each side shifted by its maximum so that
    nothing overflows (forbidden transitions become exact zeros): a 2-D
    MatMul per step is several times faster than reduce_logsumexp over a
    ``[batch, tags, tags]`` sum (and than a batched matmul, which costs
    ~50 us per call on oneDNN however small).
    """
    transition_shift = tf.reduce_max(transitions, axis=0, keepdims=True)
    exp_transitions = tf.exp(transitions - transition_shift)
    shifted_potentials_tm = potentials_tm + transition_shift
    initial = start_transitions[tf.newaxis, :] + potentials_tm[0]
    num_steps = tf.shape(potentials_tm)[0]

    def step(t, sums, all_sums):
        sums_shift = tf.reduce_max(sums, axis=1, keepdims=True)
        sums = (
            tf.math.log(tf.matmul(tf.exp(sums - sums_shift), exp_transitions))
            + sums_shift + shifted_potentials_tm[t]
        )
        return t + 1, sums, all_sums.write(t, sums)

    all_sums = tf.TensorArray(potentials_tm.dtype, size=num_steps, element_shape=initial.shape)
    _, _, all_sums = tf.while_loop(
        lambda t, *_: t < num_steps, step, (tf.constant(1), initial, all_sums.write(0, initial))
    )
    return all_sums.stack()


def crf_sequence_score(
    potentials: tf.Tensor,
    tags: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
) -> tf.Tensor:
    """Score of the given tag path of each row, ``[batch]``.

    Args:
        potentials: emission scores ``[batch, steps, num_tags]``.
        tags: int tag ids ``[batch, steps]``; padding steps may hold anything.
        lengths: int ``[batch]``, real steps per row.
        transitions: ``[num_tags, num_tags]``, ``[i, j]`` scores tag ``i``
            followed by tag ``j``.
        start_transitions: ``[num_tags]``, score of the first tag.
        end_transitions: ``[num_tags]``, score of the last tag.
    """
    potentials, lengths, mask, _ = _prepare(potentials, lengths)
    transitions, start_transitions, end_transitions = _cast_parameters(
        potentials.dtype, transitions, start_transitions, end_transitions
    )
    tags = tf.cast(tags, tf.int32)
    tags = tf.concat(
        [tags, tf.zeros([tf.shape(tags)[0], tf.shape(mask)[1] - tf.shape(tags)[1]], tf.int32)],
        axis=1,
    )
    # Out-of-range ids in the padding would make the gathers fail.
    tags = tf.where(mask, tags, tf.zeros_like(tags))
    is_real = lengths > 0
    zeros = tf.zeros_like(lengths, potentials.dtype)

    # Padding potentials are zero, so their gathered values add nothing.
    emission_score = tf.reduce_sum(tf.gather(potentials, tags, batch_dims=2), axis=1)
    start_score = tf.where(is_real, tf.gather(start_transitions, tags[:, 0]), zeros)
    last_tags = _at_last_step(tags, lengths)
    end_score = tf.where(is_real, tf.gather(end_transitions, last_tags), zeros)
    num_tags = tf.shape(transitions)[0]
    pair_scores = tf.gather(
        tf.reshape(transitions, [-1]), tags[:, :-1] * num_tags + tags[:, 1:]
    )
    # A pair counts when its second step is real.
    pair_scores = tf.where(mask[:, 1:], pair_scores, tf.zeros_like(pair_scores))
    return emission_score + start_score + tf.reduce_sum(pair_scores, axis=1) + end_score


def crf_log_norm(
    potentials: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
) -> tf.Tensor:
    """Log-partition function (log-sum-exp of all path scores) per row, ``[batch]``.

    Arguments as in :func:`crf_sequence_score`. Computed by the forward
    algorithm in log space.
    """
    potentials, lengths, _, _ = _prepare(potentials, lengths)
    transitions, start_transitions, end_transitions = _cast_parameters(
        potentials.dtype, transitions, start_transitions, end_transitions
    )
    alphas = _log_sums_unmasked(_swap_batch_and_time(potentials), transitions, start_transitions)
    final_alphas = _at_last_step(_swap_batch_and_time(alphas), lengths)
    log_norm = tf.reduce_logsumexp(final_alphas + end_transitions, axis=1)
    return tf.where(lengths > 0, log_norm, tf.zeros_like(log_norm))


def crf_log_likelihood(
    potentials: tf.Tensor,
    tags: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
) -> tf.Tensor:
    """Log-probability of the given tag path of each row, ``[batch]``.

    Arguments as in :func:`crf_sequence_score`. Differentiable with respect
    to the potentials and the three parameter tensors.
    """
    score = crf_sequence_score(
        potentials, tags, lengths, transitions, start_transitions, end_transitions
    )
    log_norm = crf_log_norm(potentials, lengths, transitions, start_transitions, end_transitions)
    return score - log_norm


def _allowed_log_sum(
    potentials: tf.Tensor,
    allowed_tags: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
) -> tf.Tensor:
    """Log-sum-exp of the scores of the paths through ``allowed_tags``, ``[batch]``.

    A forbidden tag's potential gets ``FORBIDDEN_SCORE``. The forward loop
    takes a ``reduce_logsumexp`` over ``[batch, tags, tags]`` rather than the
    matrix product of :func:`_log_sums_unmasked`: with forbidden scores that
    product underflows to ``log(0) = -inf``, whose gradient is NaN, while
    the log-sum-exp of finite scores has the softmax for gradient. Each row
    keeps its sums of its last real step (no per-step output is needed).
    """
    allowed_tags = tf.cast(allowed_tags, tf.bool)
    shape = tf.shape(potentials)
    # _prepare may have added one dummy step; pad the mask alike (padding is allowed).
    allowed_tags = tf.concat(
        [allowed_tags,
         tf.ones([shape[0], shape[1] - tf.shape(allowed_tags)[1], shape[2]], tf.bool)], axis=1)
    masked_tm = _swap_batch_and_time(
        tf.where(allowed_tags, potentials, potentials + FORBIDDEN_SCORE))
    num_steps = tf.shape(masked_tm)[0]

    def step(t, sums):
        following = (tf.reduce_logsumexp(sums[:, :, tf.newaxis] + transitions, axis=1)
                     + masked_tm[t])
        return t + 1, tf.where((t < lengths)[:, tf.newaxis], following, sums)

    _, sums = tf.while_loop(
        lambda t, _: t < num_steps, step,
        (tf.constant(1), start_transitions[tf.newaxis, :] + masked_tm[0]),
    )
    log_sum = tf.reduce_logsumexp(sums + end_transitions, axis=1)
    return tf.where(lengths > 0, log_sum, tf.zeros_like(log_sum))


def crf_partial_log_likelihood(
    potentials: tf.Tensor,
    allowed_tags: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
    transition_penalties: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """Log-probability of the set of tag paths that ``allowed_tags`` allows, ``[batch]``.

    ``allowed_tags`` is bool ``[batch, steps, num_tags]``: the tags each
    token may take (padding steps may hold anything). The result is
    ``log sum_{y allowed} exp(score(y)) - log Z``, the marginal likelihood
    of partly labelled data (Greenberg et al., EMNLP 2018). The sum over
    allowed paths also leaves out the paths that ``transition_penalties``
    (added to transitions, start and end, as the CRF layer's decoding
    masks) forbid; log Z is :func:`crf_log_norm`'s, unconstrained, as in
    :func:`crf_log_likelihood`.

    A row that allows exactly one tag at every real step is fully labelled:
    its result is :func:`crf_log_likelihood` of that path, computed by the
    same ops, so fully labelled data trains exactly as with tag ids, also in
    a batch shared with partly labelled rows. A batch of fully labelled rows
    skips the forward pass over allowed paths altogether.
    """
    potentials, lengths, mask, _ = _prepare(potentials, lengths)
    transitions, start_transitions, end_transitions = _cast_parameters(
        potentials.dtype, transitions, start_transitions, end_transitions
    )
    allowed_tags = tf.cast(allowed_tags, tf.bool)
    allowed_counts = tf.reduce_sum(tf.cast(allowed_tags, tf.int32), axis=2)
    real_counts = tf.where(mask[:, :tf.shape(allowed_counts)[1]], allowed_counts,
                           tf.ones_like(allowed_counts))
    single_path = tf.reduce_all(tf.equal(real_counts, 1), axis=1)
    path = tf.argmax(allowed_tags, axis=2, output_type=tf.int32)
    path_score = crf_sequence_score(
        potentials, path, lengths, transitions, start_transitions, end_transitions)
    log_norm = crf_log_norm(potentials, lengths, transitions, start_transitions, end_transitions)

    def allowed_score():
        penalties = transition_penalties or (0.0, 0.0, 0.0)
        parameters = [parameter + tf.cast(penalty, potentials.dtype) for parameter, penalty
                      in zip((transitions, start_transitions, end_transitions), penalties)]
        log_sum = _allowed_log_sum(potentials, allowed_tags, lengths, *parameters)
        return tf.where(single_path, path_score, log_sum)

    numerator = tf.cond(tf.reduce_all(single_path), lambda: path_score, allowed_score)
    return numerator - log_norm


def crf_decode(
    potentials: tf.Tensor,
    lengths: tf.Tensor,
    transitions: tf.Tensor,
    start_transitions: tf.Tensor,
    end_transitions: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Highest-scoring tag path, its score and the tag marginals of each row.

    Arguments as in :func:`crf_log_norm`. Returns ``(tags, best_score,
    marginals)``: int32 ``[batch, steps]`` (0 on padding), the path scores
    ``[batch]`` in the potentials' dtype (0 for empty rows), and
    ``P(y_t = k | x)`` ``[batch, steps, num_tags]`` by forward-backward (each
    real step's row sums to 1, padding rows are 0).

    At inference the time loops' per-step overhead, not arithmetic on
    ``num_tags``-sized tensors, is what costs, so the three loops (Viterbi,
    forward, backward) are independent of each other (the executor runs them
    in parallel), keep a handful of ops per step, and run on through each
    row's padding unmasked (nothing computed there is read); what needs no
    loop (the backpointers) is computed outside them.
    """
    potentials, lengths, mask, num_steps = _prepare(potentials, lengths)
    transitions, start_transitions, end_transitions = _cast_parameters(
        potentials.dtype, transitions, start_transitions, end_transitions
    )
    potentials_tm = _swap_batch_and_time(potentials)
    mask_tm = _swap_batch_and_time(mask)
    padded_steps = tf.shape(potentials_tm)[0]
    batch_size = tf.shape(potentials_tm)[1]
    num_tags = tf.shape(potentials_tm)[2]

    def viterbi_step(t, best, bests):
        # [batch, previous, 1] + [previous, next], maximised over previous.
        best = tf.reduce_max(best[:, :, tf.newaxis] + transitions, axis=1) + potentials_tm[t]
        return t + 1, best, bests.write(t, best)

    initial_best = start_transitions[tf.newaxis, :] + potentials_tm[0]
    bests = tf.TensorArray(potentials.dtype, size=padded_steps, element_shape=initial_best.shape)
    _, _, bests = tf.while_loop(
        lambda t, *_: t < padded_steps, viterbi_step,
        (tf.constant(1), initial_best, bests.write(0, initial_best)),
    )
    bests = bests.stack()
    final_best = _at_last_step(_swap_batch_and_time(bests), lengths)

    # Backpointers of every step at once, outside the loop (an argmax over
    # [batch, tags, tags] inside it would cost more than the rest of a step).
    # Steps that do not move (the first and padding steps) point each tag to
    # itself, so the backtrace carries the last real tag through the padding.
    stay = tf.broadcast_to(tf.range(num_tags), [padded_steps, batch_size, num_tags])
    moves = tf.argmax(bests[:-1, :, :, tf.newaxis] + transitions, axis=2, output_type=tf.int32)
    backpointers = tf.where(
        mask_tm[:, :, tf.newaxis], tf.concat([stay[:1], moves], axis=0), stay
    )
    final_scores = final_best + end_transitions
    last_tags = tf.argmax(final_scores, axis=1, output_type=tf.int32)
    best_score = tf.reduce_max(final_scores, axis=1)

    # Step t's tag is backpointers[t + 1][tag at t + 1]; the last step has no
    # successor, so it is paired with `stay`, which also keeps the scan's
    # input non-empty (an empty scan cannot stack its unknown-batch output).
    successor_backpointers = tf.concat([backpointers[1:], stay[:1]], axis=0)
    tags_tm = tf.scan(
        lambda next_tags, pointers: tf.gather(pointers, next_tags, batch_dims=1),
        successor_backpointers,
        initializer=last_tags,
        reverse=True,
    )
    tags = tf.where(mask, _swap_batch_and_time(tags_tm), tf.zeros_like(mask, tf.int32))
    best_score = tf.where(lengths > 0, best_score, tf.zeros_like(best_score))

    alphas = _log_sums_unmasked(potentials_tm, transitions, start_transitions)
    # The backward pass is the forward pass over each row reversed in place,
    # with transposed transitions and start and end swapped.
    reversed_potentials = tf.reverse_sequence(potentials, lengths, seq_axis=1, batch_axis=0)
    reversed_betas = _log_sums_unmasked(
        _swap_batch_and_time(reversed_potentials), tf.transpose(transitions), end_transitions
    )
    betas = tf.reverse_sequence(
        _swap_batch_and_time(reversed_betas), lengths, seq_axis=1, batch_axis=0
    )
    # Both sums include the current step's potential, so it is subtracted
    # once. Normalising each step by itself (rather than subtracting log Z)
    # makes the rows sum to 1 up to rounding, however large the scores are.
    marginals = tf.nn.softmax(_swap_batch_and_time(alphas) + betas - potentials, axis=-1)
    marginals = tf.where(mask[:, :, tf.newaxis], marginals, tf.zeros_like(marginals))
    return tags[:, :num_steps], best_score, marginals[:, :num_steps]


def _bool_mask(name: str, mask, shape: tuple[int, ...]) -> np.ndarray | None:
    """``mask`` as a bool array, shape-checked (None stays None)."""
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.dtype != bool:
        raise ValueError(f"{name} must hold booleans, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def _penalties(mask: np.ndarray | None) -> np.ndarray | float:
    """``FORBIDDEN_SCORE`` where ``mask`` is False, 0 elsewhere (0 when no mask)."""
    if mask is None:
        return 0.0
    return np.where(mask, 0.0, FORBIDDEN_SCORE).astype(np.float32)


def _json_mask(mask: np.ndarray | None) -> list | None:
    return None if mask is None else mask.tolist()


@keras.saving.register_keras_serializable(package="clinical_ner")
class CRF(keras.layers.Layer):
    """Linear-chain CRF output layer holding the transition scores.

    Calling the layer returns the emission scores (``potentials``) unchanged,
    as float32, so that a functional model's output is the emissions while the
    CRF's weights (``transitions`` ``[K, K]``, ``start_transitions`` ``[K]``,
    ``end_transitions`` ``[K]``) live in this layer. Train with
    :meth:`log_likelihood`, predict with :meth:`decode`.

    The optional masks forbid transitions, first tags and last tags at
    decoding time by adding ``FORBIDDEN_SCORE`` to their scores, in the
    Viterbi path and in the marginals alike, so that the confidence matches
    the decoded path. The training likelihood ignores them, except in the sum
    over the allowed paths of partly labelled data
    (:meth:`partial_log_likelihood`). The layer knows
    tag ids only; :func:`clinical_ner.model.tag_space.transition_mask` makes the masks
    of a tag scheme.

    Args:
        num_tags: number of tags ``K``.
        allowed_transitions: ``[K, K]`` booleans (array or nested lists),
            ``[i, j]`` true when tag ``i`` may be followed by tag ``j``; None
            allows all.
        allowed_start: ``[K]`` booleans, tags that may start a sentence.
        allowed_end: ``[K]`` booleans, tags that may end a sentence.

    Example (tag 2 may only follow tags 1 and 2, and cannot start):
    >>> import numpy as np
    >>> allowed = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    >>> crf = CRF(3, allowed, allowed_start=np.array([1, 1, 0], bool))
    >>> potentials = np.array([[[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]]], "float32")
    >>> crf(potentials).shape
    TensorShape([1, 2, 3])
    >>> tags, marginals = crf.decode(potentials, lengths=np.array([2]))
    >>> tags.numpy().tolist()
    [[1, 2]]
    >>> marginals.shape
    TensorShape([1, 2, 3])
    >>> CRF.from_config(crf.get_config()).get_config() == crf.get_config()
    True
    """

    def __init__(
        self,
        num_tags: int,
        allowed_transitions=None,
        allowed_start=None,
        allowed_end=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_tags) < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = int(num_tags)
        self.allowed_transitions = _bool_mask(
            "allowed_transitions", allowed_transitions, (self.num_tags, self.num_tags)
        )
        self.allowed_start = _bool_mask("allowed_start", allowed_start, (self.num_tags,))
        self.allowed_end = _bool_mask("allowed_end", allowed_end, (self.num_tags,))
        self.supports_masking = True

    def build(self, input_shape) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.num_tags:
            raise ValueError(
                f"CRF with {self.num_tags} tags got potentials of {input_shape[-1]} tags"
            )
        self.transitions = self.add_weight(
            name="transitions", shape=(self.num_tags, self.num_tags),
            initializer="glorot_uniform",
        )
        self.start_transitions = self.add_weight(
            name="start_transitions", shape=(self.num_tags,), initializer="zeros"
        )
        self.end_transitions = self.add_weight(
            name="end_transitions", shape=(self.num_tags,), initializer="zeros"
        )
        # Called eagerly (evaluation, prediction), the time loops would run as
        # Python loops, ~60 times slower at 32 x 50 tokens; one trace serves
        # every batch size and sentence length. Inside another tf.function it
        # is a nested call.
        # autograph=False: see clinical_ner/model/inference_graph.py.
        self._traced_decode = tf.function(
            self._decode,
            input_signature=[
                tf.TensorSpec([None, None, self.num_tags], self.variable_dtype),
                tf.TensorSpec([None], tf.int32),
            ],
            autograph=False,
        )
        self.built = True

    def call(self, potentials):
        return tf.cast(potentials, self.variable_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def _parameters(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return (
            tf.convert_to_tensor(self.transitions),
            tf.convert_to_tensor(self.start_transitions),
            tf.convert_to_tensor(self.end_transitions),
        )

    def log_likelihood(self, potentials, tags, lengths) -> tf.Tensor:
        """Unconstrained log-probability of ``tags`` ``[batch, steps]``, ``[batch]``."""
        return crf_log_likelihood(
            tf.cast(potentials, self.variable_dtype), tags, lengths, *self._parameters()
        )

    def partial_log_likelihood(self, potentials, allowed_tags, lengths) -> tf.Tensor:
        """Log-probability of the paths through ``allowed_tags`` ``[batch, steps, K]``, ``[batch]``.

        See :func:`crf_partial_log_likelihood`; the sum over allowed paths
        respects this layer's masks (transitions, start and end), which a
        fully labelled path always does.
        """
        penalties = tuple(
            _penalties(mask) for mask in
            (self.allowed_transitions, self.allowed_start, self.allowed_end))
        return crf_partial_log_likelihood(
            tf.cast(potentials, self.variable_dtype), allowed_tags, lengths,
            *self._parameters(), transition_penalties=penalties,
        )

    def decode(self, potentials, lengths) -> tuple[tf.Tensor, tf.Tensor]:
        """Constrained best tags (int32 ``[batch, steps]``) and marginals ``[batch, steps, K]``."""
        return self._traced_decode(
            tf.cast(potentials, self.variable_dtype), tf.cast(lengths, tf.int32)
        )

    def _decode(self, potentials: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        transitions, start_transitions, end_transitions = self._parameters()
        dtype = transitions.dtype
        parameters = (
            transitions + tf.cast(_penalties(self.allowed_transitions), dtype),
            start_transitions + tf.cast(_penalties(self.allowed_start), dtype),
            end_transitions + tf.cast(_penalties(self.allowed_end), dtype),
        )
        tags, _, marginals = crf_decode(potentials, lengths, *parameters)
        return tags, marginals

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_tags": self.num_tags,
                "allowed_transitions": _json_mask(self.allowed_transitions),
                "allowed_start": _json_mask(self.allowed_start),
                "allowed_end": _json_mask(self.allowed_end),
            }
        )
        return config
