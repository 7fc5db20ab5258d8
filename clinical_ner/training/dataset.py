"""The ``tf.data`` training pipeline: shuffle, bucket by length, pad, featurize, prefetch."""
from __future__ import annotations

import collections
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from clinical_ner.model.features import Featurizer
from clinical_ner.model.tag_space import allowed_tag_mask
from clinical_ner.text.tags import to_scheme
from clinical_ner.model.network import NO_ASSERTION
from clinical_ner.model.vocab import PAD, UNKNOWN_ID
from clinical_ner.text.document import ASSERTION_CLASSES, ASSERTION_LABEL, Sentence


def encode_tags(sentences: Sequence[Sentence], tags: list[str], scheme: str) -> list[list[int]]:
    """Tag ids of each sentence in the model's scheme (IOB2 tags in, ``scheme`` ids out)."""
    index = {tag: position for position, tag in enumerate(tags)}
    encoded = []
    for sentence in sentences:
        if sentence.tags is None:
            # to_scheme failed on it with "object of type 'NoneType' has no len()".
            raise ValueError(f"{sentence.source or 'a sentence'}: no tags (text without "
                             "annotations); training needs annotated sentences")
        converted = to_scheme(sentence.tags, scheme)
        unknown = sorted({tag for tag in converted if tag not in index})
        if unknown:
            raise ValueError(
                f"{sentence.source}: tag(s) {', '.join(unknown)} are not among the model's tags"
            )
        encoded.append([index[tag] for tag in converted])
    return encoded


def encode_allowed_tags(sentences: Sequence[Sentence], open_labels: Sequence[Sequence[str]],
                        tags: list[str], scheme: str) -> list[np.ndarray]:
    """Each sentence's allowed-tag mask, bool ``[tokens, len(tags)]``.

    ``open_labels[i]`` are the labels that sentence ``i``'s corpus does not
    annotate completely (see :func:`clinical_ner.model.tag_space.allowed_tag_mask`).
    """
    encoded = []
    for sentence, labels in zip(sentences, open_labels, strict=True):
        try:
            encoded.append(allowed_tag_mask(sentence.tags, tags, scheme, labels))
        except ValueError as error:
            raise ValueError(f"{sentence.source}: {error}") from None
    return encoded


def assertion_classes(sentences: Sequence[Sentence]) -> list[str]:
    """The assertion classes that the problems of ``sentences`` carry, in canonical order.

    Empty when no problem has an assertion: the model then gets no assertion output.
    """
    used = set(_problem_assertions(sentences))
    return [name for name in ASSERTION_CLASSES if name in used]


def unknown_assertion_classes_note(where: str, sentences: Sequence[Sentence],
                                   model_classes: Sequence[str]) -> str | None:
    """The note on the assertion classes of ``sentences`` (the data at ``where``) that a
    model of ``model_classes`` does not know, or ``None``: their problems' assertions are
    scored as wrong (by ``clinical-ner evaluate``, and on dev data in training), which
    nothing said."""
    unknown = [name for name in assertion_classes(sentences)
               if model_classes and name not in model_classes]
    if not unknown:
        return None
    return (f"note: {where}: the model does not know the assertion class(es) "
            f"{', '.join(unknown)} (it has {', '.join(model_classes)}): their problems' "
            "assertions score as wrong")


def taught_assertion_classes(sentences: Sequence[Sentence]) -> list[str]:
    """The assertion classes a model learns from ``sentences``: :func:`assertion_classes`, if 2+.

    One class (every problem ``present``, say) teaches nothing but to answer it for
    every problem, "No fever was seen" included: empty then, as without assertions.
    """
    classes = assertion_classes(sentences)
    return classes if len(classes) > 1 else []


def assertion_class_weights(sentences: Sequence[Sentence], classes: list[str],
                            rule: str) -> list[float]:
    """The assertion loss's weight of each of ``classes``, by ``rule`` (``NERConfig.assertion_class_weights``).

    ``"none"``: ``[]`` (every class weighs 1). ``"balanced"``: ``N / (K * n_c)``
    for a class that ``n_c`` of the ``N`` problems of ``sentences`` with one of
    the ``K`` classes carry, so that every class adds as much to the loss as
    the others (sklearn's ``class_weight="balanced"``); ``"sqrt-balanced"``:
    its square root, halfway on a log scale. A class that no problem carries
    here (a base model's, when fine-tuning) weighs 1.

    >>> first = Sentence(tokens=["no", "fever", "cough"], tags=["O", "B-problem", "B-problem"],
    ...                  assertions={(1, 1): "absent", (2, 2): "present"})
    >>> second = Sentence(tokens=["cough"], tags=["B-problem"], assertions={(0, 0): "present"})
    >>> assertion_class_weights([first, second], ["present", "absent", "possible"], "balanced")
    [0.75, 1.5, 1.0]
    """
    if rule == "none":
        return []
    found = collections.Counter(_problem_assertions(sentences))
    counts = {name: found[name] for name in classes}
    total, present = sum(counts.values()), sum(1 for count in counts.values() if count)
    power = 1.0 if rule == "balanced" else 0.5
    return [(total / (present * counts[name])) ** power if counts[name] else 1.0
            for name in classes]


def encode_assertions(sentences: Sequence[Sentence], classes: list[str]) -> list[list[int]]:
    """Assertion target ids of each sentence's tokens: the class id inside a gold problem with
    an assertion, ``NO_ASSERTION`` (-1, masked out of the loss) everywhere else.

    Every token of the problem gets its class: the model's assertion for an
    entity is the mean of its tokens' probabilities.
    """
    index = {name: position for position, name in enumerate(classes)}
    encoded = []
    for sentence in sentences:
        targets = [NO_ASSERTION] * len(sentence.tokens)
        for (first, last), assertion in sentence.assertions.items():
            if not _starts_problem(sentence, first):
                continue
            if assertion not in index:
                raise ValueError(f"{sentence.source}: assertion {assertion!r} is not among the "
                                 f"model's assertions ({', '.join(classes) or 'none'})")
            targets[first:last + 1] = [index[assertion]] * (last + 1 - first)
        encoded.append(targets)
    return encoded


def _problem_assertions(sentences: Sequence[Sentence]) -> Iterator[str]:
    """The assertion of every problem of ``sentences`` that has one."""
    for sentence in sentences:
        for (first, _), assertion in sentence.assertions.items():
            if _starts_problem(sentence, first):
                yield assertion


def _starts_problem(sentence: Sentence, first: int) -> bool:
    # Only problems carry assertions (as in i2b2 2010): a concept of another
    # label that has one is neither a class nor a target.
    return sentence.tags is not None and sentence.tags[first] == f"B-{ASSERTION_LABEL}"


def batch_count(lengths: Sequence[int], batch_size: int,
                bucket_boundaries: Sequence[int]) -> int:
    """How many batches :func:`training_dataset` forms from sentences of these lengths.

    Bucketing fills each length bucket's batches in turn and emits the
    partial ones at the end, so the count does not depend on the order.
    """
    buckets = np.bincount(np.digitize(lengths, bucket_boundaries),
                          minlength=len(bucket_boundaries) + 1)
    return int(np.sum(-(-buckets // batch_size)))


def _check_one_row_per_token(name: str, rows: Sequence, sentences: Sequence[Sentence]) -> None:
    """Raise ``ValueError`` unless ``rows`` has one row per sentence, one entry per token.

    :func:`training_dataset` concatenates the rows and cuts them at the sentences'
    lengths, so a missing row, or one too short or too long, shifted every later
    sentence's targets onto other tokens, and the model trained on them in silence.
    """
    if len(rows) != len(sentences):
        raise ValueError(f"{name} has {len(rows)} rows for {len(sentences)} sentences; give "
                         "one row per sentence, in the order of the sentences")
    for index, (row, sentence) in enumerate(zip(rows, sentences)):
        if len(row) != len(sentence.tokens):
            where = f" ({sentence.source})" if sentence.source else ""
            raise ValueError(f"{name}[{index}] has {len(row)} entries for the "
                             f"{len(sentence.tokens)} tokens of sentence {index}{where}; "
                             "encode the same sentences, in the same order")


def training_dataset(
    sentences: Sequence[Sentence],
    tag_ids: list[list[int]],
    featurizer: Featurizer,
    batch_size: int,
    use_casing: bool,
    shuffle_seed: int | None,
    word_dropout: float,
    bucket_boundaries: Sequence[int],
    allowed_tags: list[np.ndarray] | None = None,
    assertion_ids: list[list[int]] | None = None,
) -> tf.data.Dataset:
    """Batches of ``(features, tag_ids)`` for ``model.fit``.

    ``tag_ids`` (from :func:`encode_tags`), and ``allowed_tags`` and
    ``assertion_ids`` when given, hold one row per sentence, one entry per
    token (else ``ValueError``, naming the first row that does not).

    With ``allowed_tags`` (partly labelled data: one bool ``[tokens, K]``
    mask per sentence, from :func:`encode_allowed_tags`) the tag ids become
    ``{"tags": tag_ids, "allowed_tags": bool [batch, tokens, K]}`` (padding
    steps allow nothing; the CRF never reads them).

    With ``assertion_ids`` (from :func:`encode_assertions`, for a model with
    an assertion output) the targets are ``(tag_ids, assertion_ids)``, the
    assertion ids padded with ``NO_ASSERTION`` like the tokens without one.

    With ``shuffle_seed`` the sentence order is shuffled with that seed
    (callers pass ``seed + epoch``, so every epoch has its own order and an
    interrupted run resumes with exactly the order it would have had);
    bucketing then forms batches of similar length in a deterministic way
    (``bucket_boundaries``: the upper bounds of the length buckets, see
    ``NERConfig.bucket_boundaries``).

    ``word_dropout`` replaces each token's word id with the unknown word's
    with that probability, so that the model learns to tag from characters
    and context when a word has no vector (as for most drug names at test
    time). The draws depend only on ``shuffle_seed`` and the batch's
    position, so they repeat exactly on ``--resume``.
    """
    if not sentences:
        # tf.data's shuffle failed on it with an InvalidArgumentError (buffer_size).
        raise ValueError("no sentences to train on")
    for name, rows in (("tag_ids", tag_ids), ("allowed_tags", allowed_tags),
                       ("assertion_ids", assertion_ids)):
        if rows is not None:
            _check_one_row_per_token(name, rows, sentences)
    # A batch never holds more than every sentence, and tf.data reserves room for
    # batch_size elements per bucket: a huge setting ended the process (std::bad_alloc).
    batch_size = min(batch_size, len(sentences))
    lengths = [len(s.tokens) for s in sentences]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat_tokens = tf.constant([token for s in sentences for token in s.tokens], tf.string)
    flat_tags = tf.constant([tag for tags in tag_ids for tag in tags], tf.int32)
    starts = tf.constant(starts)
    lengths = tf.constant(lengths, tf.int64)
    flat_allowed = (None if allowed_tags is None
                    else tf.constant(np.concatenate(allowed_tags, axis=0), tf.bool))
    with_assertions = assertion_ids is not None
    if with_assertions:
        flat_assertions = tf.constant([a for ids in assertion_ids for a in ids], tf.int32)

    def sentence(index):
        begin, size = starts[index], lengths[index]
        targets = flat_tags[begin:begin + size]
        if flat_allowed is not None:
            targets = {"tags": targets, "allowed_tags": flat_allowed[begin:begin + size]}
        if with_assertions:
            targets = (targets, flat_assertions[begin:begin + size])
        return flat_tokens[begin:begin + size], targets

    dataset = tf.data.Dataset.range(len(sentences))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(sentences), seed=shuffle_seed,
                                  reshuffle_each_iteration=False)
    dataset = dataset.map(sentence)
    tag_shape, tag_padding = (([None], 0) if flat_allowed is None else
                              ({"tags": [None], "allowed_tags": [None, None]},
                               {"tags": 0, "allowed_tags": False}))
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda words, _: tf.shape(words)[0],
        bucket_boundaries=list(bucket_boundaries),
        bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        padded_shapes=([None], (tag_shape, [None]) if with_assertions else tag_shape),
        # Tag id 0 (O) on padding; the CRF never reads it. No assertion
        # target on padding.
        padding_values=(PAD, (tag_padding, NO_ASSERTION) if with_assertions else tag_padding),
    )

    base_seed = 0 if shuffle_seed is None else shuffle_seed

    def featurize(batch_index, batch):
        words, targets = batch
        features = featurizer(words)
        if not use_casing:
            del features["casing_ids"]
        if word_dropout > 0:
            word_ids = features["word_ids"]
            draws = tf.random.stateless_uniform(
                tf.shape(word_ids), seed=tf.stack([tf.constant(base_seed, tf.int64), batch_index]))
            dropped = (draws < word_dropout) & (word_ids > 0)
            features["word_ids"] = tf.where(dropped, tf.constant(UNKNOWN_ID, word_ids.dtype),
                                            word_ids)
        return features, targets

    # No autotuning: an autotuned pipeline's iterator, once an epoch has
    # used it up, takes 3-5 s to destroy about every other epoch (the
    # garbage collector frees it at some later allocation, usually in the dev
    # evaluation), which cost BC5CDR about a fifth of its training wall
    # time, with no tokens/s gained over the fixed defaults that AUTOTUNE
    # stands for without it (parallelism min(16, cores)). benchmarks/README.md
    # ("What was tried") has the figures.
    options = tf.data.Options()
    options.autotune.enabled = False
    # A known length lets the progress bar show "12/160", not "12/Unknown".
    known_length = tf.data.experimental.assert_cardinality(
        batch_count([len(s.tokens) for s in sentences], batch_size, bucket_boundaries))
    return dataset.apply(known_length).enumerate().map(
        featurize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).prefetch(tf.data.AUTOTUNE).with_options(options)
