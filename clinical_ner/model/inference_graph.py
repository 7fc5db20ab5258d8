"""Strings in, tags and entities out: the graph that both ``predict`` and TF Serving run.

:class:`InferenceModule` wraps the Keras model with the featurizer (the
vocabularies become lookup tables inside the graph, as in Genthial's tf_ner)
and the in-graph tokenizer, so the exported SavedModel takes raw text and
returns entities, and clients need no side files. The in-process API calls
the very same ``tf.function``\\ s, so in-process and served predictions are
identical by construction.
"""
from __future__ import annotations

import tensorflow as tf

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.model.features import Featurizer
from clinical_ner.text.graph_tokenizer import split_sentences_graph
from clinical_ner.model.network import ClinicalNERModel
from clinical_ner.text.tags import to_iob2_tag
from clinical_ner.model.tag_space import tag_roles
from clinical_ner.model.vocab import PAD, Vocabulary


def _backing_variable(variable) -> tf.Variable:
    """The ``tf.Variable`` that holds a Keras variable's value on the TensorFlow backend."""
    value = variable.value
    if not isinstance(value, tf.Variable):
        raise TypeError(f"{variable.path} is not backed by a tf.Variable: {type(value).__name__}")
    return value


class InferenceModule(tf.Module):
    """The exportable inference graph of a trained model.

    ``tag_tokens(tokens [B, T] string, "" padded)`` gives the best IOB2 tags, each
    tag's marginal probability and the sentence lengths. ``annotate_text(text
    [B] string)`` splits documents into sentences in the graph, tags them and
    assembles entities with code-point offsets into each document, and a
    confidence that is the lowest tag marginal among the entity's tokens.
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
        self._labels = tf.constant([""] + roles.labels)
        self._tag_label = tf.constant(roles.label_index)
        self._tag_begins = tf.constant(roles.begins)

    def _decode_rows(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Tag ids and their marginals for one [B, T] chunk of sentences."""
        batch, width = tf.shape(tokens)[0], tf.shape(tokens)[1]
        # One extra all-padding row and column make empty chunks and empty
        # sentences ordinary inputs for the LSTM instead of special cases.
        padded = tf.pad(tokens, [[0, 1], [0, 1]], constant_values=PAD)
        features = self.featurizer(padded)
        if not self.model.use_casing:
            del features["casing_ids"]
        tag_ids, marginals = self.model.decode(features)
        confidence = tf.gather(marginals, tag_ids, batch_dims=2)
        return tag_ids[:batch, :width], confidence[:batch, :width]

    def _decode(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Tag ids, their marginals and lengths for a [S, T] batch of sentences.

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

        def tag_chunk(index, tags_array, confidence_array):
            rows = order[index * self.chunk_size:(index + 1) * self.chunk_size]
            chunk_width = tf.reduce_max(tf.gather(lengths, rows))
            tag_ids, confidence = self._decode_rows(tf.gather(tokens, rows)[:, :chunk_width])
            padding = [[0, 0], [0, width - chunk_width]]
            return (index + 1, tags_array.write(index, tf.pad(tag_ids, padding)),
                    confidence_array.write(index, tf.pad(confidence, padding)))

        _, tags_array, confidence_array = tf.while_loop(
            lambda index, *_: index < chunks, tag_chunk,
            (tf.constant(0), tags_array, confidence_array))
        restore = tf.argsort(order, stable=True)
        empty_tags = tf.zeros([0, width], tf.int32)
        sorted_tags = tf.cond(chunks > 0, tags_array.concat, lambda: empty_tags)
        sorted_confidence = tf.cond(chunks > 0, confidence_array.concat,
                                    lambda: tf.zeros([0, width], tf.float32))
        return (tf.gather(sorted_tags, restore), tf.gather(sorted_confidence, restore), lengths)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
    def tag_tokens(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        tag_ids, confidence, lengths = self._decode(tokens)
        is_token = tf.sequence_mask(lengths, tf.shape(tokens)[1])
        tags = tf.where(is_token, tf.gather(self._iob2_tags, tag_ids), PAD)
        return {
            signatures.TAGS: tags,
            signatures.TAG_CONFIDENCE: tf.where(is_token, confidence, 0.0),
            signatures.LENGTH: lengths,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def annotate_text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        sentences = split_sentences_graph(text, self.max_sentence_tokens)
        tag_ids, confidence, lengths = self._decode(sentences["tokens"])
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
        entity_label = tf.gather(self._labels, tf.boolean_mask(label, begins))
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
            signatures.ENTITY_COUNT: tf.cast(
                tf.math.bincount(document, minlength=tf.cast(documents, tf.int32),
                                 maxlength=tf.cast(documents, tf.int32)), tf.int32),
        }

    def saved_object(self) -> tf.Module:
        """The object to save with :meth:`signatures`: only what their graphs read.

        That is the tf.Variables behind the model's Keras variables and the
        word lookup table (the other tables are constants in the graphs).
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
        return root

    def signatures(self) -> dict:
        """The serving signatures, keyed by their TF Serving names."""
        return {
            signatures.SERVING_DEFAULT: self.annotate_text.get_concrete_function(),
            signatures.PREDICT_TOKENS: self.tag_tokens.get_concrete_function(),
        }
