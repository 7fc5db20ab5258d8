"""Tests of the linear-chain CRF against brute-force enumeration of tag paths."""
from __future__ import annotations

import doctest
import functools
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.model.layers import crf as crf_module
from clinical_ner.model.layers.crf import (
    CRF,
    crf_log_likelihood,
    crf_decode,
    crf_log_norm,
    crf_partial_log_likelihood,
    crf_sequence_score,
)
from clinical_ner.model.tag_space import transition_mask
from helpers import CONFIDENCE_TOLERANCE

BIO_TAGS = ["O", "B-problem", "I-problem", "B-test", "I-test"]
BIOES_TAGS = ["O", "B-problem", "I-problem", "E-problem", "S-problem", "S-test"]
SCHEME_TAGS = {"bio": BIO_TAGS, "bioes": BIOES_TAGS}


def path_score(potentials, path, transitions, start, end) -> float:
    if not path:
        return 0.0
    score = start[path[0]] + end[path[-1]]
    score += sum(potentials[t, tag] for t, tag in enumerate(path))
    score += sum(transitions[a, b] for a, b in zip(path[:-1], path[1:]))
    return float(score)


def is_allowed(path, allowed, allowed_start, allowed_end) -> bool:
    if not path:
        return True
    return bool(
        allowed_start[path[0]]
        and allowed_end[path[-1]]
        and all(allowed[a, b] for a, b in zip(path[:-1], path[1:]))
    )


def brute_force(potentials, length, transitions, start, end, constraints=None) -> dict:
    """log Z, best path, best score and marginals of one row by enumerating all paths."""
    num_tags = potentials.shape[-1]
    paths = list(itertools.product(range(num_tags), repeat=length))
    if constraints is not None:
        paths = [path for path in paths if is_allowed(path, *constraints)]
    scores = np.array(
        [path_score(potentials, path, transitions, start, end) for path in paths]
    )
    log_z = np.logaddexp.reduce(scores) if length else 0.0
    marginals = np.zeros((length, num_tags))
    for path, score in zip(paths, scores):
        marginals[np.arange(length), list(path)] += np.exp(score - log_z)
    best = int(np.argmax(scores))
    return {
        "log_norm": log_z,
        "tags": list(paths[best]),
        "best_score": scores[best],
        "marginals": marginals,
    }


def all_results(potentials, tags, lengths, transitions, start, end) -> dict:
    best_tags, best_score, marginals = crf_decode(potentials, lengths, transitions, start, end)
    return {
        "score": crf_sequence_score(potentials, tags, lengths, transitions, start, end),
        "log_norm": crf_log_norm(potentials, lengths, transitions, start, end),
        "log_likelihood": crf_log_likelihood(
            potentials, tags, lengths, transitions, start, end
        ),
        "tags": best_tags,
        "best_score": best_score,
        "marginals": marginals,
    }


@functools.lru_cache(maxsize=None)
def traced_all_results(num_tags: int, dtype: str):
    """``all_results`` traced once for any batch size and length, as when exported."""
    return tf.function(
        all_results,
        input_signature=[
            tf.TensorSpec([None, None, num_tags], dtype),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([num_tags, num_tags], dtype),
            tf.TensorSpec([num_tags], dtype),
            tf.TensorSpec([num_tags], dtype),
        ],
    )


def run_all(mode: str, potentials, tags, lengths, transitions, start, end) -> dict:
    function = all_results
    if mode == "graph":
        function = traced_all_results(potentials.shape[-1], potentials.dtype.name)
    results = function(
        tf.constant(potentials), tf.constant(tags, tf.int32), tf.constant(lengths, tf.int32),
        tf.constant(transitions), tf.constant(start), tf.constant(end),
    )
    return {name: value.numpy() for name, value in results.items()}


def random_case(seed: int, num_tags: int, num_steps: int, lengths: list[int], dtype: str):
    rng = np.random.default_rng(seed)
    batch_size = len(lengths)
    return (
        (2 * rng.normal(size=(batch_size, num_steps, num_tags))).astype(dtype),
        rng.integers(0, num_tags, size=(batch_size, num_steps)).astype(np.int32),
        np.array(lengths, np.int32),
        rng.normal(size=(num_tags, num_tags)).astype(dtype),
        rng.normal(size=num_tags).astype(dtype),
        rng.normal(size=num_tags).astype(dtype),
    )


def tolerance(dtype: str) -> dict:
    return {"rtol": 1e-9, "atol": 1e-9} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-4}


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "num_tags, num_steps, lengths, seed",
    [(2, 5, [5, 1, 3, 0], 0), (3, 4, [2, 4, 1], 1), (4, 5, [1, 5, 4, 2], 2), (4, 1, [1, 0], 3)],
)
def test_matches_brute_force(mode, dtype, num_tags, num_steps, lengths, seed):
    potentials, tags, lengths, transitions, start, end = random_case(
        seed, num_tags, num_steps, lengths, dtype
    )
    results = run_all(mode, potentials, tags, lengths, transitions, start, end)
    close = tolerance(dtype)
    for row, length in enumerate(lengths):
        expected = brute_force(potentials[row], length, transitions, start, end)
        score = path_score(potentials[row], list(tags[row, :length]), transitions, start, end)
        np.testing.assert_allclose(results["score"][row], score, **close)
        np.testing.assert_allclose(results["log_norm"][row], expected["log_norm"], **close)
        np.testing.assert_allclose(
            results["log_likelihood"][row], score - expected["log_norm"], **close
        )
        assert results["tags"][row].tolist() == expected["tags"] + [0] * (num_steps - length)
        np.testing.assert_allclose(results["best_score"][row], expected["best_score"], **close)
        np.testing.assert_allclose(
            results["marginals"][row, :length], expected["marginals"], **close
        )
        np.testing.assert_array_equal(results["marginals"][row, length:], 0.0)
    assert results["tags"].dtype == np.int32
    assert results["marginals"].shape == potentials.shape


def constrained_layer(scheme: str, seed: int) -> CRF:
    tags = SCHEME_TAGS[scheme]
    allowed, allowed_start, allowed_end = transition_mask(tags, scheme)
    layer = CRF(len(tags), allowed, allowed_start, allowed_end)
    layer.build((None, None, len(tags)))
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(size=weight.shape).astype("float32") for weight in layer.weights]
    )
    return layer


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_constrained_decode_matches_brute_force_over_allowed_paths(mode, scheme):
    tags = SCHEME_TAGS[scheme]
    layer = constrained_layer(scheme, seed=4)
    num_steps = 4
    potentials, _, lengths, _, _, _ = random_case(5, len(tags), num_steps, [4, 1, 3, 0], "float32")
    # Favour I- tags everywhere so that the unconstrained best paths are invalid.
    for index, tag in enumerate(tags):
        if tag.startswith("I-"):
            potentials[..., index] += 3.0
    decode = layer.decode
    if mode == "graph":
        decode = tf.function(
            layer.decode,
            input_signature=[
                tf.TensorSpec([None, None, len(tags)], tf.float32),
                tf.TensorSpec([None], tf.int32),
            ],
        )
    best_tags, marginals = (value.numpy() for value in decode(potentials, lengths))
    transitions, start, end = (weight.numpy().astype("float64") for weight in layer.weights)
    constraints = transition_mask(tags, scheme)
    for row, length in enumerate(lengths):
        expected = brute_force(potentials[row], length, transitions, start, end, constraints)
        assert best_tags[row].tolist() == expected["tags"] + [0] * (num_steps - length)
        np.testing.assert_allclose(
            marginals[row, :length], expected["marginals"], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(marginals[row, length:], 0.0)


def test_constraints_change_the_unconstrained_answer():
    layer = constrained_layer("bio", seed=4)
    potentials = np.zeros((1, 2, len(BIO_TAGS)), "float32")
    potentials[0, :, BIO_TAGS.index("I-test")] = 10.0
    unconstrained_tags, _, _ = crf_decode(potentials, [2], *layer.weights)
    best_tags, marginals = layer.decode(potentials, np.array([2]))
    assert unconstrained_tags.numpy().tolist() == [[4, 4]]
    assert best_tags.numpy().tolist() == [[3, 4]]
    assert marginals.numpy()[0, 0, BIO_TAGS.index("I-test")] < 1e-6


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_padding_with_garbage_changes_nothing(mode):
    potentials, tags, lengths, transitions, start, end = random_case(6, 3, 4, [4, 2], "float32")
    alone = run_all(mode, potentials, tags, lengths, transitions, start, end)
    garbage_potentials = np.concatenate(
        [potentials, np.full((2, 3, 3), np.nan, "float32")], axis=1
    )
    garbage_potentials[:, 4, :] = np.inf
    garbage_potentials[:, 5, :] = -1e30
    garbage_potentials[1, 2:4] = 1e6
    garbage_tags = np.concatenate([tags, np.full((2, 3), 99, np.int32)], axis=1)
    garbage_tags[1, 2:] = -7
    padded = run_all(
        mode, garbage_potentials, garbage_tags, lengths, transitions, start, end
    )
    for name in ("score", "log_norm", "log_likelihood", "best_score"):
        np.testing.assert_allclose(padded[name], alone[name], rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(padded["tags"][0, :4], alone["tags"][0])
    np.testing.assert_array_equal(padded["tags"][1, :2], alone["tags"][1, :2])
    np.testing.assert_array_equal(padded["tags"][1, 2:], 0)
    np.testing.assert_allclose(padded["marginals"][0, :4], alone["marginals"][0], rtol=1e-6)
    np.testing.assert_allclose(padded["marginals"][1, :2], alone["marginals"][1, :2], rtol=1e-6)
    np.testing.assert_array_equal(padded["marginals"][1, 2:], 0.0)

    potentials_variable = tf.Variable(garbage_potentials)
    with tf.GradientTape() as tape:
        log_likelihood = crf_log_likelihood(
            potentials_variable, garbage_tags, lengths, transitions, start, end
        )
    gradient = tape.gradient(log_likelihood, potentials_variable).numpy()
    assert np.isfinite(gradient).all()
    np.testing.assert_array_equal(gradient[1, 2:], 0.0)


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("num_steps", [0, 3])
def test_empty_sentences_give_zeros_not_nan(mode, num_steps):
    potentials, tags, lengths, transitions, start, end = random_case(
        7, 3, num_steps, [0, 0], "float32"
    )
    results = run_all(mode, potentials, tags, lengths, transitions, start, end)
    for name in ("score", "log_norm", "log_likelihood", "best_score"):
        np.testing.assert_array_equal(results[name], 0.0, err_msg=name)
    np.testing.assert_array_equal(results["tags"], np.zeros((2, num_steps)))
    np.testing.assert_array_equal(results["marginals"], np.zeros((2, num_steps, 3)))

    parameters = [tf.Variable(value) for value in (potentials, transitions, start, end)]
    with tf.GradientTape() as tape:
        log_likelihood = crf_log_likelihood(parameters[0], tags, lengths, *parameters[1:])
    for gradient in tape.gradient(log_likelihood, parameters):
        np.testing.assert_array_equal(gradient, 0.0)


def test_log_norm_gradient_is_the_marginals_and_likelihood_gradients_are_finite():
    potentials, tags, lengths, transitions, start, end = random_case(
        8, 4, 5, [5, 3, 1, 0], "float64"
    )
    parameters = [tf.Variable(value) for value in (potentials, transitions, start, end)]
    with tf.GradientTape(persistent=True) as tape:
        log_norm = tf.reduce_sum(crf_log_norm(parameters[0], lengths, *parameters[1:]))
        log_likelihood = tf.reduce_sum(
            crf_log_likelihood(parameters[0], tags, lengths, *parameters[1:])
        )
    # d log Z / d potentials[t, k] = P(y_t = k), a classic identity of CRFs.
    np.testing.assert_allclose(
        tape.gradient(log_norm, parameters[0]),
        crf_decode(potentials, lengths, transitions, start, end)[2],
        rtol=1e-9, atol=1e-12,
    )
    for gradient in tape.gradient(log_likelihood, parameters):
        assert np.isfinite(gradient.numpy()).all()
        assert np.abs(gradient.numpy()).sum() > 0


def test_training_learns_tags_that_only_transitions_can_tell_apart():
    # Word kinds: 0 starts an entity (B), 2 is outside (O), and 1 is
    # ambiguous: I after B or I, O after O. Emissions see only the word kind,
    # so the transitions must learn the rest.
    tags = ["O", "B-problem", "I-problem"]
    words = np.array([[0, 1, 1, 2, 1], [2, 1, 0, 1, 0], [1, 0, 1, 1, 0]])
    gold = np.array([[1, 2, 2, 0, 0], [0, 0, 1, 2, 1], [0, 1, 2, 2, 1]], np.int32)
    features = np.eye(3, dtype="float32")[words]
    lengths = np.array([5, 5, 4], np.int32)

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, 3))
    crf = CRF(len(tags), *(mask.tolist() for mask in transition_mask(tags, "bio")))
    model = keras.Model(inputs, crf(keras.layers.Dense(len(tags))(inputs)))
    optimizer = keras.optimizers.Adam(learning_rate=0.1)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            log_likelihood = tf.reduce_mean(crf.log_likelihood(model(features), gold, lengths))
            loss = -log_likelihood
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return log_likelihood

    first = float(train_step())
    for _ in range(150):
        last = float(train_step())
    assert last > first
    assert last > -0.1
    decoded, marginals = crf.decode(model(features), lengths)
    np.testing.assert_array_equal(decoded.numpy()[:, :4], gold[:, :4])
    np.testing.assert_array_equal(decoded.numpy()[:2], gold[:2])
    assert decoded.numpy()[2, 4] == 0
    assert marginals.numpy()[lengths[:, None] > np.arange(5)].max(axis=-1).min() > 0.9


def brute_force_partial(potentials, length, allowed_tags, transitions, start, end,
                        constraints=None) -> float:
    """log sum over allowed paths - log Z of one row, by enumerating all paths."""
    if length == 0:
        return 0.0
    num_tags = potentials.shape[-1]
    paths = list(itertools.product(range(num_tags), repeat=length))
    scores = np.array([path_score(potentials, path, transitions, start, end) for path in paths])
    allowed = np.array([
        all(allowed_tags[t, tag] for t, tag in enumerate(path))
        and (constraints is None or is_allowed(path, *constraints))
        for path in paths])
    return float(np.logaddexp.reduce(scores[allowed]) - np.logaddexp.reduce(scores))


def random_allowed_tags(rng, num_rows: int, num_steps: int, num_tags: int, lengths,
                        constraints=None) -> np.ndarray:
    """Random per-token tag sets, each holding at least one path the constraints allow."""
    allowed = rng.random((num_rows, num_steps, num_tags)) < 0.5
    for row in range(num_rows):
        # One path the constraints allow, kept in the set.
        while True:
            path = rng.integers(0, num_tags, size=lengths[row])
            if constraints is None or is_allowed(list(path), *constraints):
                break
        allowed[row, np.arange(lengths[row]), path] = True
    # Garbage on padding (all-False steps) must change nothing.
    allowed[np.arange(num_steps) >= np.asarray(lengths)[:, None]] = False
    return allowed


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("scheme", [None, "bio", "bioes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_likelihood_matches_brute_force_over_allowed_paths(mode, scheme, seed):
    num_tags = len(SCHEME_TAGS[scheme]) if scheme else 3
    lengths = [4, 1, 3, 0, 2]
    potentials, _, lengths, transitions, start, end = random_case(
        seed, num_tags, 4, lengths, "float64")
    rng = np.random.default_rng(100 + seed)
    constraints = None
    penalties = None
    if scheme:
        mask = transition_mask(SCHEME_TAGS[scheme], scheme)
        constraints = (mask.allowed, mask.start, mask.end)
        penalties = tuple(crf_module._penalties(m).astype("float64") for m in constraints)
    allowed = random_allowed_tags(rng, len(lengths), 4, num_tags, lengths, constraints)
    function = functools.partial(crf_partial_log_likelihood, transition_penalties=penalties)
    if mode == "graph":
        function = tf.function(function)
    result = function(potentials, allowed, lengths, transitions, start, end).numpy()
    for row, length in enumerate(lengths):
        expected = brute_force_partial(potentials[row], length, allowed[row], transitions,
                                       start, end, constraints)
        np.testing.assert_allclose(result[row], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_partial_likelihood_of_one_allowed_path_is_todays_likelihood(dtype):
    # Full labels (one tag per token) in a batch shared with partly labelled
    # rows give exactly crf_log_likelihood's values, so a completely labelled
    # corpus trains as it did with tag ids.
    potentials, tags, lengths, transitions, start, end = random_case(
        4, 5, 6, [6, 2, 5, 0, 3], dtype)
    full = np.eye(5, dtype=bool)[tags]
    partial = full.copy()
    partial[1, :2] = True  # row 1 knows nothing
    partial[4, 1, :] = True  # row 4 leaves one token open
    expected = crf_log_likelihood(potentials, tags, lengths, transitions, start, end).numpy()
    for allowed in (full, partial):
        result = crf_partial_log_likelihood(
            potentials, allowed, lengths, transitions, start, end).numpy()
        fully_labelled = [0, 2, 3] if allowed is partial else range(5)
        np.testing.assert_array_equal(result[fully_labelled], expected[fully_labelled])
    # A row that allows every tag everywhere has probability 1.
    np.testing.assert_allclose(result[1], 0.0, atol=1e-5 if dtype == "float32" else 1e-12)
    assert (result[[1, 4]] > expected[[1, 4]]).all()


def test_partial_likelihood_gradients_are_finite_with_one_allowed_path():
    # The forward pass over allowed paths runs on every row of a batch with
    # a partly labelled one, including rows allowing a single path, whose
    # forbidden tags score FORBIDDEN_SCORE: the gradient must stay finite.
    potentials, tags, lengths, transitions, start, end = random_case(
        9, 5, 6, [6, 4, 1, 0], "float32")
    mask = transition_mask(BIO_TAGS, "bio")
    tags[0] = [1, 2, 2, 0, 3, 4]  # a BIO-valid path
    allowed = np.eye(5, dtype=bool)[tags]
    allowed[1] = True
    parameters = [tf.Variable(value) for value in (potentials, transitions, start, end)]
    penalties = tuple(crf_module._penalties(m) for m in (mask.allowed, mask.start, mask.end))
    for function in (crf_partial_log_likelihood, crf_module._allowed_log_sum):
        with tf.GradientTape() as tape:
            if function is crf_partial_log_likelihood:
                value = function(parameters[0], allowed, lengths, *parameters[1:],
                                 transition_penalties=penalties)
            else:
                shifted = [p + q for p, q in zip(parameters[1:], penalties)]
                value = function(parameters[0], allowed, lengths, *shifted)
            total = tf.reduce_sum(value)
        gradients = tape.gradient(total, parameters)
        for gradient in gradients:
            assert np.isfinite(gradient.numpy()).all()
        assert np.abs(gradients[0].numpy()).sum() > 0


def test_layer_partial_likelihood_respects_the_scheme():
    # An unlabelled token that may be O or a test, after O: the layer's BIO
    # mask leaves I-test out of the allowed paths, so the result is the
    # brute-force sum over {O, B-test} rather than over all three.
    crf = CRF(3, *(m.tolist() for m in transition_mask(["O", "B-test", "I-test"], "bio")))
    potentials = np.random.default_rng(0).normal(size=(1, 2, 3)).astype("float32")
    crf.build(potentials.shape)
    allowed = np.array([[[True, False, False], [True, True, True]]])
    weights = [w.numpy() for w in (crf.transitions, crf.start_transitions, crf.end_transitions)]
    mask = transition_mask(["O", "B-test", "I-test"], "bio")
    expected = brute_force_partial(potentials[0], 2, allowed[0], *weights,
                                   constraints=(mask.allowed, mask.start, mask.end))
    result = crf.partial_log_likelihood(potentials, allowed, np.array([2]))
    np.testing.assert_allclose(result.numpy()[0], expected, rtol=1e-5)
    unconstrained = brute_force_partial(potentials[0], 2, allowed[0], *weights)
    assert abs(expected - unconstrained) > 1e-3


def test_layer_rejects_malformed_masks():
    with pytest.raises(ValueError, match="shape"):
        CRF(3, allowed_transitions=[[True] * 3] * 2)
    with pytest.raises(ValueError, match="booleans"):
        CRF(2, allowed_start=[1, 0])
    with pytest.raises(ValueError, match="tags"):
        CRF(3)(np.zeros((1, 2, 4), "float32"))


def test_saved_model_round_trip(tmp_path):
    allowed, allowed_start, allowed_end = transition_mask(BIO_TAGS, "bio")
    inputs = keras.Input(shape=(None, 3))
    emissions = keras.layers.Dense(len(BIO_TAGS))(inputs)
    outputs = CRF(
        len(BIO_TAGS), allowed.tolist(), allowed_start.tolist(), allowed_end.tolist(), name="crf"
    )(emissions)
    model = keras.Model(inputs, outputs)
    model.get_layer("crf").set_weights(
        [np.random.default_rng(9).normal(size=w.shape) for w in model.get_layer("crf").weights]
    )
    features = np.random.default_rng(10).normal(size=(2, 4, 3)).astype("float32")
    lengths = np.array([4, 2], np.int32)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)

    crf, restored_crf = model.get_layer("crf"), restored.get_layer("crf")
    assert isinstance(restored_crf, CRF)
    assert restored_crf.get_config() == crf.get_config()
    np.testing.assert_array_equal(restored_crf.allowed_transitions, allowed)
    for weight, restored_weight in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(weight.numpy(), restored_weight.numpy())
    np.testing.assert_array_equal(restored(features), model(features))
    for value, restored_value in zip(
        crf.decode(model(features), lengths), restored_crf.decode(restored(features), lengths)
    ):
        np.testing.assert_array_equal(value, restored_value)


@pytest.mark.parametrize("constrained", [True, False])
def test_from_config_round_trip(constrained):
    masks = transition_mask(BIO_TAGS, "bio") if constrained else (None, None, None)
    layer = CRF(len(BIO_TAGS), *masks, name="crf")
    config = layer.get_config()
    assert CRF.from_config(config).get_config() == config
    if not constrained:
        assert config["allowed_transitions"] is None


def test_call_is_float32_identity():
    potentials = np.random.default_rng(11).normal(size=(2, 3, 4))
    outputs = CRF(4)(potentials)
    assert outputs.dtype == tf.float32
    np.testing.assert_allclose(outputs, potentials.astype("float32"))


def test_numpy_crf_decodes_as_the_keras_crf():
    # The lean runtime's CRF (NumPy only; LiteRT runs the network, not this).
    from clinical_ner.annotators.litert.crf import ConstrainedCRF

    tags = ["O"] + [f"{prefix}-{label}" for label in ("problem", "test") for prefix in "BIES"]
    allowed, allowed_start, allowed_end = transition_mask(tags, "bioes")
    layer = CRF(len(tags), allowed.tolist(), allowed_start.tolist(), allowed_end.tolist())
    layer.build((None, None, len(tags)))
    rng = np.random.default_rng(3)
    layer.transitions.assign(2 * rng.normal(size=(len(tags), len(tags))).astype("float32"))
    layer.start_transitions.assign(rng.normal(size=len(tags)).astype("float32"))
    layer.end_transitions.assign(rng.normal(size=len(tags)).astype("float32"))
    crf = ConstrainedCRF(layer.transitions.numpy(), layer.start_transitions.numpy(),
                         layer.end_transitions.numpy(), allowed, allowed_start, allowed_end)
    for _ in range(10):
        batch, steps = rng.integers(1, 6), rng.integers(1, 30)
        emissions = (4 * rng.normal(size=(batch, steps, len(tags)))).astype("float32")
        lengths = rng.integers(1, steps + 1, size=batch).astype("int32")
        expected_tags, marginals = (value.numpy() for value in layer.decode(emissions, lengths))
        tag_ids, confidence = crf.decode(emissions, lengths)
        np.testing.assert_array_equal(tag_ids, expected_tags)
        np.testing.assert_allclose(
            confidence, np.take_along_axis(marginals, expected_tags[..., None], 2)[..., 0],
            rtol=0, atol=CONFIDENCE_TOLERANCE)


def test_docstring_examples():
    results = doctest.testmod(crf_module)
    assert results.attempted > 0
    assert results.failed == 0
