"""Strings in, tags and entities out: the graph that both ``predict`` and TF Serving run.

:class:`InferenceModule` wraps the Keras model with the featurizer (the
vocabularies become lookup tables inside the graph, as in Genthial's tf_ner)
and the in-graph tokenizer, so the exported SavedModel takes raw text and
returns entities, and clients need no side files. The in-process API calls
the very same ``tf.function``\\ s, so in-process and served predictions are
identical by construction.

Every ``tf.function`` of ours is traced with ``autograph=False``: the graph
code writes its loops and conditions as ``tf.while_loop`` / ``tf.cond``
itself, and AutoGraph's conversion of it (and of every Keras layer it calls)
took half of a process's first ``annotate`` and slowed training steps
(benchmarks/README.md, "What was tried"). Code that needs Python
control flow on tensors fails to trace instead of changing silently.
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.model.features import Featurizer
from clinical_ner.model.network import ClinicalNERModel
from clinical_ner.model.tag_space import tag_roles
from clinical_ner.model.vocab import PAD, Vocabulary
from clinical_ner.text.document import ASSERTION_LABEL
from clinical_ner.text.graph_tokenizer import decode_utf8, split_sentences_graph
from clinical_ner.text.tags import to_iob2_tag


def _backing_variable(variable) -> tf.Variable:
    """The ``tf.Variable`` that holds a Keras variable's value on the TensorFlow backend."""
    value = variable.value
    if not isinstance(value, tf.Variable):
        raise TypeError(f"{variable.path} is not backed by a tf.Variable: {type(value).__name__}")
    return value


def _span_checks(text: tf.Tensor, span_start: tf.Tensor, span_end: tf.Tensor
                 ) -> list[tf.Operation]:
    """Asserts that refuse what ``classify_assertions`` would answer with a guess or ``""``.

    Stock TF Serving runs the graph alone, so the graph checks its spans as the
    in-process API and the development server do (``signatures.span_within``):
    one row of spans per text, ``span_end`` shaped as ``span_start``, and each
    span ``-1, -1`` or within its text's code points. The message names the
    first refused element, never the text (and no quotes, which an assert escapes).
    """
    start_shape, end_shape = tf.shape(span_start), tf.shape(span_end)
    pair_up = [
        tf.debugging.Assert(tf.reduce_all(start_shape == end_shape), [tf.strings.format(
            f"inputs {signatures.SPAN_START} and {signatures.SPAN_END} must have the same "
            "shape, got {} and {}", (start_shape, end_shape))]),
        tf.debugging.Assert(start_shape[0] == tf.shape(text)[0], [tf.strings.format(
            f"inputs {signatures.SPAN_START} and {signatures.SPAN_END} need one row per "
            f"document of {signatures.TEXT}: got {{}} rows for {{}} documents",
            (start_shape[0], tf.shape(text)[0]))]),
    ]
    with tf.control_dependencies(pair_up):
        length = decode_utf8(text).row_lengths()[:, tf.newaxis]
        start, end = tf.cast(span_start, tf.int64), tf.cast(span_end, tf.int64)
        refused = ~(((start == -1) & (end == -1)) | signatures.span_within(start, end, length))
        return [*pair_up, _refuse_first(refused, lambda row, column: tf.strings.format(
            f"inputs {signatures.SPAN_START} and {signatures.SPAN_END} element "
            "[{}, {}]: span [{}, {}) is neither -1, -1 (padding) nor 0 <= start < end <= {} "
            "(text {}'s length in code points)",
            (row, column, start[row, column], end[row, column], length[row, 0], row)))]


def _token_padding_check(tokens: tf.Tensor) -> tf.Operation:
    """An assert that refuses ``""`` before a token of its row in ``predict_tokens``.

    ``""`` is a row's padding: one before a token was skipped, so the tags did
    not line up with the tokens (``[["", "pneumonia"]]`` got one tag, ``O``).
    Refused as the in-process API and the development server refuse it (without
    quotes, which the assert's message would escape).
    """
    is_token = tokens != PAD
    # Whether a token comes at or after each position of its row.
    token_follows = tf.reverse(tf.cumsum(tf.cast(tf.reverse(is_token, [1]), tf.int32),
                                         axis=1), [1]) > 0
    return _refuse_first(~is_token & token_follows, lambda row, column: tf.strings.format(
        f"input {signatures.TOKENS} element [{{}}, {{}}] is the empty string before a token of "
        f"its row: {signatures.EMPTY_TOKEN_RULE}; pad a row only after its last token",
        (row, column)))


def _refuse_first(refused: tf.Tensor, describe: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
                  ) -> tf.Operation:
    """An assert that fails, with ``describe(row, column)``, at the first element of the
    ``[B, N]`` bool tensor ``refused`` that holds (the message is built only then)."""
    def first() -> tf.Tensor:
        row, column = tf.unstack(tf.where(refused)[0])
        return describe(row, column)

    message = tf.cond(tf.reduce_any(refused), first, lambda: tf.constant(""))
    return tf.debugging.Assert(~tf.reduce_any(refused), [message])


class InferenceModule(tf.Module):
    """The exportable inference graph of a trained model.

    ``tag_tokens(tokens [B, T] string, "" padded)`` gives the best IOB2 tags, each
    tag's marginal probability and the sentence lengths. ``annotate_text(text
    [B] string)`` splits documents into sentences in the graph, tags them and
    assembles entities with code-point offsets into each document, and a
    confidence that is the lowest tag marginal among the entity's tokens.
    With a model that has assertions, a ``problem`` entity gets the
    assertion class whose probability, averaged over the entity's tokens, is
    the highest, and that average as its confidence (other entities, and
    every entity of a model without assertions, get ``""`` and 0.0).
    ``classify_assertions(text [B], span_start [B, S], span_end [B, S])``
    does the same for given code-point spans (padded with -1).
    ``settings`` gives ``max_word_length``, ``max_sentence_tokens`` and
    ``inference_chunk_size``.
    """

    def __init__(self, model: ClinicalNERModel, vocab: Vocabulary, settings: NERConfig) -> None:
        super().__init__(name="clinical_ner")
        self.model = model
        self.chunk_size = settings.inference_chunk_size
        self.featurizer = Featurizer(vocab.words, vocab.chars, settings.max_word_length)
        self.max_sentence_tokens = settings.max_sentence_tokens
        roles = tag_roles(vocab.tags)
        # predict_tokens answers in IOB2 whatever scheme the CRF uses: a valid
        # BIOES sequence (decoding forbids invalid ones) maps S- to B- and
        # E- to I- tag by tag.
        self._iob2_tags = tf.constant([to_iob2_tag(tag) for tag in vocab.tags])
        self.labels = roles.labels
        self._labels = tf.constant([""] + roles.labels)
        self._tag_label = tf.constant(roles.label_index)
        self._tag_begins = tf.constant(roles.begins)
        self.assertions = list(vocab.assertions)
        if self.assertions:
            self._assertion_names = tf.constant(self.assertions)
            self._asserted_label = (roles.labels.index(ASSERTION_LABEL) + 1
                                    if ASSERTION_LABEL in roles.labels else -1)

    def _decode_rows(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Tag ids, their marginals and the assertion probabilities for one [B, T] chunk.

        The probabilities are ``[B, T, len(assertions)]`` (``[B, T, 0]`` without).
        """
        batch, width = tf.shape(tokens)[0], tf.shape(tokens)[1]
        # One extra all-padding row and column make empty chunks and empty
        # sentences ordinary inputs for the LSTM instead of special cases.
        padded = tf.pad(tokens, [[0, 1], [0, 1]], constant_values=PAD)
        features = self.featurizer(padded)
        if not self.model.use_casing:
            del features["casing_ids"]
        tag_ids, marginals, probabilities = self.model.decode_with_assertions(features)
        confidence = tf.gather(marginals, tag_ids, batch_dims=2)
        if probabilities is None:
            probabilities = tf.zeros(tf.concat([tf.shape(tag_ids), [0]], 0), tf.float32)
        return (tag_ids[:batch, :width], confidence[:batch, :width],
                probabilities[:batch, :width])

    def _decode(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Tag ids, their marginals, lengths and assertion probabilities for [S, T] sentences.

        Sentences are sorted by length and tagged ``chunk_size`` at a time, each
        chunk only as wide as its longest sentence: padding costs LSTM and CRF
        steps, and a long document (thousands of sentences) must not become
        one huge batch.
        """
        count, width = tf.shape(tokens)[0], tf.shape(tokens)[1]
        lengths = tf.reduce_sum(tf.cast(tokens != PAD, tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        chunks = (count + self.chunk_size - 1) // self.chunk_size
        tags_array = tf.TensorArray(tf.int32, size=chunks, infer_shape=False,
                                    element_shape=tf.TensorShape([None, None]))
        confidence_array = tf.TensorArray(tf.float32, size=chunks, infer_shape=False,
                                          element_shape=tf.TensorShape([None, None]))
        classes = len(self.assertions)
        probability_array = tf.TensorArray(tf.float32, size=chunks, infer_shape=False,
                                           element_shape=tf.TensorShape([None, None, classes]))

        def tag_chunk(index, tags_array, confidence_array, probability_array):
            rows = order[index * self.chunk_size:(index + 1) * self.chunk_size]
            chunk_width = tf.reduce_max(tf.gather(lengths, rows))
            tag_ids, confidence, probabilities = self._decode_rows(
                tf.gather(tokens, rows)[:, :chunk_width])
            padding = [[0, 0], [0, width - chunk_width]]
            return (index + 1, tags_array.write(index, tf.pad(tag_ids, padding)),
                    confidence_array.write(index, tf.pad(confidence, padding)),
                    probability_array.write(index, tf.pad(probabilities, padding + [[0, 0]])))

        _, tags_array, confidence_array, probability_array = tf.while_loop(
            lambda index, *_: index < chunks, tag_chunk,
            (tf.constant(0), tags_array, confidence_array, probability_array))
        restore = tf.argsort(order, stable=True)
        empty_tags = tf.zeros([0, width], tf.int32)
        sorted_tags = tf.cond(chunks > 0, tags_array.concat, lambda: empty_tags)
        sorted_confidence = tf.cond(chunks > 0, confidence_array.concat,
                                    lambda: tf.zeros([0, width], tf.float32))
        sorted_probabilities = tf.cond(chunks > 0, probability_array.concat,
                                       lambda: tf.zeros([0, width, classes], tf.float32))
        return (tf.gather(sorted_tags, restore), tf.gather(sorted_confidence, restore), lengths,
                tf.gather(sorted_probabilities, restore))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")],
                 autograph=False)
    def tag_tokens(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.control_dependencies([_token_padding_check(tokens)]):
            tokens = tf.identity(tokens)
        tag_ids, confidence, lengths, _ = self._decode(tokens)
        is_token = tf.sequence_mask(lengths, tf.shape(tokens)[1])
        tags = tf.where(is_token, tf.gather(self._iob2_tags, tag_ids), PAD)
        return {
            signatures.TAGS: tags,
            signatures.TAG_CONFIDENCE: tf.where(is_token, confidence, 0.0),
            signatures.LENGTH: lengths,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")],
                 autograph=False)
    def annotate_text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        sentences = split_sentences_graph(text, self.max_sentence_tokens)
        tag_ids, confidence, lengths, probabilities = self._decode(sentences["tokens"])
        width = tf.shape(tag_ids)[1]
        is_token = tf.sequence_mask(lengths, width)
        label = tf.where(is_token, tf.gather(self._tag_label, tag_ids), 0)
        previous_label = tf.pad(label[:, :-1], [[0, 0], [1, 0]])
        begins = (label > 0) & (tf.gather(self._tag_begins, tag_ids) | (previous_label != label))
        # Number entities in reading order; every token inside an entity
        # carries its entity's number, so segment reductions give the spans.
        begins = tf.reshape(begins, [-1])
        label = tf.reshape(label, [-1])
        entity_of_token = tf.cumsum(tf.cast(begins, tf.int32)) - 1
        inside = label > 0
        segment = tf.boolean_mask(entity_of_token, inside)
        count = tf.reduce_sum(tf.cast(begins, tf.int32))
        start = tf.math.unsorted_segment_min(
            tf.boolean_mask(tf.reshape(sentences["token_start"], [-1]), inside), segment, count)
        end = tf.math.unsorted_segment_max(
            tf.boolean_mask(tf.reshape(sentences["token_end"], [-1]), inside), segment, count)
        entity_confidence = tf.math.unsorted_segment_min(
            tf.boolean_mask(tf.reshape(confidence, [-1]), inside), segment, count)
        entity_label_id = tf.boolean_mask(label, begins)
        entity_label = tf.gather(self._labels, entity_label_id)
        entity_assertion, entity_assertion_confidence = self._entity_assertions(
            probabilities, inside, segment, count, entity_label_id)
        document_of_token = tf.reshape(
            tf.broadcast_to(sentences["document"][:, tf.newaxis], tf.shape(tag_ids)), [-1])
        document = tf.boolean_mask(document_of_token, begins)
        documents = tf.shape(text, out_type=tf.int64)[0]

        def per_document(values, default):
            ragged = tf.RaggedTensor.from_value_rowids(
                values, tf.cast(document, tf.int64), nrows=documents)
            return ragged.to_tensor(default_value=default)

        return {
            signatures.ENTITY_START: per_document(start, tf.constant(0, tf.int64)),
            signatures.ENTITY_END: per_document(end, tf.constant(0, tf.int64)),
            signatures.ENTITY_LABEL: per_document(entity_label, ""),
            signatures.ENTITY_CONFIDENCE: per_document(entity_confidence, 0.0),
            signatures.ENTITY_ASSERTION: per_document(entity_assertion, ""),
            signatures.ENTITY_ASSERTION_CONFIDENCE: per_document(entity_assertion_confidence,
                                                                 0.0),
            signatures.ENTITY_COUNT: tf.cast(
                tf.math.bincount(document, minlength=tf.cast(documents, tf.int32),
                                 maxlength=tf.cast(documents, tf.int32)), tf.int32),
        }

    def _assertions_of_means(self, means: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Class names and confidences from mean probability vectors ``[N, classes]``."""
        return (tf.gather(self._assertion_names, tf.argmax(means, axis=1, output_type=tf.int32)),
                tf.reduce_max(means, axis=1))

    def _entity_assertions(self, probabilities, inside, segment, count, entity_label_id):
        """Each entity's assertion and confidence: ``""`` and 0.0 but for problems."""
        if not self.assertions:
            return tf.fill([count], ""), tf.zeros([count], tf.float32)
        token_probabilities = tf.boolean_mask(
            tf.reshape(probabilities, [-1, len(self.assertions)]), inside)
        means = tf.math.unsorted_segment_mean(token_probabilities, segment, count)
        names, confidence = self._assertions_of_means(means)
        is_problem = entity_label_id == self._asserted_label
        return tf.where(is_problem, names, ""), tf.where(is_problem, confidence, 0.0)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([None, None], tf.int32, name="span_start"),
        tf.TensorSpec([None, None], tf.int32, name="span_end"),
    ], autograph=False)
    def classify_assertions(self, text: tf.Tensor, span_start: tf.Tensor,
                            span_end: tf.Tensor) -> dict[str, tf.Tensor]:
        """The assertion of given spans: the tokens that overlap a span are its tokens.

        A padding span (-1, -1) and a span that covers no token get ``""``
        and 0.0, and so does every span of a model without assertions. Inputs
        that do not pair up, and a span outside its text, fail the call
        (``InvalidArgumentError``; TF Serving answers ``INVALID_ARGUMENT``).
        """
        with tf.control_dependencies(_span_checks(text, span_start, span_end)):
            shape = tf.shape(span_start)
        if not self.assertions:
            return {signatures.ASSERTION: tf.fill(shape, ""),
                    signatures.ASSERTION_CONFIDENCE: tf.zeros(shape, tf.float32)}
        sentences = split_sentences_graph(text, self.max_sentence_tokens)
        _, _, lengths, probabilities = self._decode(sentences["tokens"])
        is_token = tf.reshape(tf.sequence_mask(lengths, tf.shape(probabilities)[1]), [-1])
        # Every token of the batch in reading order (sentences come in
        # document order), with its document and offsets: a span's tokens are
        # then one run, found by binary search on (document, offset) keys.
        token_probabilities = tf.boolean_mask(
            tf.reshape(probabilities, [-1, len(self.assertions)]), is_token)
        token_document = tf.boolean_mask(tf.reshape(tf.broadcast_to(
            tf.cast(sentences["document"], tf.int64)[:, tf.newaxis],
            tf.shape(sentences["token_start"])), [-1]), is_token)
        # Offsets count code points (< 2**31), so document * 2**32 + offset orders tokens.
        stride = tf.constant(2**32, tf.int64)
        token_start_key = token_document * stride + tf.boolean_mask(
            tf.reshape(sentences["token_start"], [-1]), is_token)
        token_end_key = token_document * stride + tf.boolean_mask(
            tf.reshape(sentences["token_end"], [-1]), is_token)
        span_document = tf.broadcast_to(
            tf.range(shape[0], dtype=tf.int64)[:, tf.newaxis], shape)
        starts = tf.reshape(span_document * stride + tf.cast(span_start, tf.int64), [-1])
        ends = tf.reshape(span_document * stride + tf.cast(span_end, tf.int64), [-1])
        # The first token that ends after the span's start, and one past the
        # last token that starts before its end.
        first = tf.searchsorted(token_end_key, starts, side="right", out_type=tf.int32)
        stop = tf.searchsorted(token_start_key, ends, side="left", out_type=tf.int32)
        is_span = tf.reshape(span_start >= 0, [-1]) & (stop > first)
        stop = tf.where(is_span, stop, first)
        token_index = tf.ragged.range(first, stop)
        means = tf.math.segment_mean(
            tf.gather(token_probabilities, token_index.flat_values),
            token_index.value_rowids())
        # segment_mean leaves out trailing spans without tokens; pad them back.
        means = tf.pad(means, [[0, tf.size(first) - tf.shape(means)[0]], [0, 0]])
        names, confidence = self._assertions_of_means(means)
        return {
            signatures.ASSERTION: tf.reshape(tf.where(is_span, names, ""), shape),
            signatures.ASSERTION_CONFIDENCE: tf.reshape(tf.where(is_span, confidence, 0.0),
                                                        shape),
        }

    def saved_object(self) -> tf.Module:
        """The object to save with :meth:`signatures`: only what their graphs read.

        That is the tf.Variables behind the model's Keras variables, the
        word lookup table (the other tables are constants in the graphs), and
        the assertion classes, which no graph reads but a Python loader needs.
        TF Serving restores variables with the SavedModel's restore op, not
        through Python objects: when the saved object graph holds Keras 3
        layers, each variable is saved twice and the restore op fills the copy
        the graphs do not read, so every request fails with "Could not find
        variable" (tensorflow/tensorflow#72963). And saving this module itself
        would also store ``annotate_text`` and ``tag_tokens`` as functions of
        the restored object, a second copy of every graph that TF Serving never
        calls: it cost the development server 42 MB once loaded.
        """
        root = tf.Module(name="clinical_ner")
        root.model_variables = [_backing_variable(variable) for variable in self.model.variables]
        root.word_table = self.featurizer.word_table
        # For SavedModelAnnotator.classify_assertions and evaluate (the graphs hold them as
        # constants).
        for name, values in ((signatures.ASSERTION_CLASSES, self.assertions),
                             (signatures.ENTITY_LABELS, self.labels)):
            setattr(root, name, tf.Variable(tf.constant(list(values), dtype=tf.string),
                                            trainable=False, name=name))
        return root

    def signatures(self) -> dict:
        """The serving signatures, keyed by their TF Serving names."""
        return {
            signatures.SERVING_DEFAULT: self.annotate_text.get_concrete_function(),
            signatures.PREDICT_TOKENS: self.tag_tokens.get_concrete_function(),
            signatures.CLASSIFY_ASSERTIONS: self.classify_assertions.get_concrete_function(),
        }
