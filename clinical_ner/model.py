"""The Keras model: char-CNN + word embeddings + BiLSTM + CRF."""
from __future__ import annotations

import keras
import tensorflow as tf

from clinical_ner.layers.bilstm import BiLSTM
from clinical_ner.layers.char_cnn import CharCNNEncoder
from clinical_ner.layers.crf import CRF, bio_transition_constraints
from clinical_ner.layers.word_embedding import PartlyTrainableEmbedding
from clinical_ner.text import CASING_FEATURES

MODEL_FILE = "model.keras"


@keras.saving.register_keras_serializable(package="clinical_ner")
class ClinicalNERModel(keras.Model):
    """Functional Keras model for sequence labelling with a CRF output.

    Inputs (a dict, ids from ``clinical_ner.features.Featurizer``; 0 is padding):
    ``word_ids`` ``[batch, tokens]``, ``char_ids`` ``[batch, tokens, chars]``
    and, with ``use_casing``, ``casing_ids`` ``[batch, tokens]``.
    Output: CRF emission scores ``[batch, tokens, len(tags)]``. The CRF's
    transition weights live in the ``crf`` layer; :meth:`compute_loss` is its
    negative log-likelihood, so ``fit`` trains the model with integer tag ids
    as targets, and :meth:`decode` gives the best tags and their marginal
    probabilities.

    ``trainable_word_rows`` trains only the first rows of the word embedding
    (the words of the training data, which the vocabulary puts first; see
    :class:`~clinical_ner.layers.word_embedding.PartlyTrainableEmbedding`);
    ``None`` trains every row. ``trainable_embeddings=False`` freezes them all.

    Example:
    >>> import numpy as np
    >>> model = ClinicalNERModel(num_words=20, num_chars=10,
    ...     tags=["O", "B-problem", "I-problem"], word_dim=2, char_dim=2,
    ...     char_filters=2, lstm_units=2, casing_dim=2)
    >>> inputs = {"word_ids": np.array([[3, 4, 0]]),
    ...           "char_ids": np.array([[[2, 3], [4, 0], [0, 0]]]),
    ...           "casing_ids": np.array([[3, 3, 0]])}
    >>> model(inputs).shape
    TensorShape([1, 3, 3])
    >>> tags, marginals = model.decode(inputs)
    >>> tags.shape, marginals.shape
    (TensorShape([1, 3]), TensorShape([1, 3, 3]))
    """

    def __init__(
        self,
        num_words: int,
        num_chars: int,
        tags: list[str],
        word_dim: int = 50,
        trainable_embeddings: bool = True,
        trainable_word_rows: int | None = None,
        char_dim: int = 25,
        char_filters: int = 50,
        char_kernel_size: int = 3,
        use_casing: bool = True,
        casing_dim: int = 8,
        lstm_units: int = 100,
        dropout: float = 0.5,
        constrain_transitions: bool = True,
        **kwargs,
    ) -> None:
        inputs = {
            "word_ids": keras.Input(shape=(None,), dtype="int32", name="word_ids"),
            "char_ids": keras.Input(shape=(None, None), dtype="int32", name="char_ids"),
        }
        # Passed to the BiLSTM explicitly: Keras' implicit mask propagation
        # does not reach it through the merge of masked and unmasked features,
        # and without a mask the backward LSTM reads the batch padding first,
        # so a sentence's tags would depend on the other sentences in its batch.
        is_token = keras.ops.not_equal(inputs["word_ids"], 0)
        words = PartlyTrainableEmbedding(
            num_words, word_dim, trainable_rows=trainable_word_rows,
            trainable=trainable_embeddings, name="word_embedding",
        )(inputs["word_ids"])
        chars = CharCNNEncoder(
            num_chars, char_dim, char_filters, char_kernel_size, name="char_encoder"
        )(inputs["char_ids"])
        features = [words, chars]
        if use_casing:
            inputs["casing_ids"] = keras.Input(shape=(None,), dtype="int32", name="casing_ids")
            features.append(
                keras.layers.Embedding(len(CASING_FEATURES), casing_dim, name="casing_embedding")(
                    inputs["casing_ids"]
                )
            )
        hidden = keras.layers.Concatenate(name="token_features")(features)
        hidden = keras.layers.Dropout(dropout, name="input_dropout")(hidden)
        hidden = BiLSTM(lstm_units, name="bilstm")(hidden, mask=is_token)
        hidden = keras.layers.Dropout(dropout, name="output_dropout")(hidden)
        emissions = keras.layers.Dense(len(tags), name="emissions")(hidden)
        if constrain_transitions:
            allowed, allowed_start, allowed_end = bio_transition_constraints(tags)
            crf = CRF(
                len(tags),
                allowed_transitions=allowed.tolist(),
                allowed_start=allowed_start.tolist(),
                allowed_end=allowed_end.tolist(),
                name="crf",
            )
        else:
            crf = CRF(len(tags), name="crf")
        outputs = crf(emissions)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_words = num_words
        self.num_chars = num_chars
        self.tags = list(tags)
        self.word_dim = word_dim
        self.trainable_embeddings = trainable_embeddings
        self.trainable_word_rows = trainable_word_rows
        self.char_dim = char_dim
        self.char_filters = char_filters
        self.char_kernel_size = char_kernel_size
        self.use_casing = use_casing
        self.casing_dim = casing_dim
        self.lstm_units = lstm_units
        self.dropout = dropout
        self.constrain_transitions = constrain_transitions

    @property
    def crf(self) -> CRF:
        return self.get_layer("crf")

    @staticmethod
    def sequence_lengths(inputs) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.not_equal(inputs["word_ids"], 0), tf.int32), axis=1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean CRF negative log-likelihood per sentence (plus any layer losses)."""
        log_likelihood = self.crf.log_likelihood(
            y_pred, tf.cast(y, tf.int32), self.sequence_lengths(x)
        )
        loss = -tf.reduce_mean(log_likelihood)
        if self.losses:
            loss += tf.add_n(self.losses)
        return loss

    def decode(self, inputs) -> tuple[tf.Tensor, tf.Tensor]:
        """Best tag ids ``[batch, tokens]`` and tag marginals ``[batch, tokens, tags]``."""
        emissions = self(inputs, training=False)
        return self.crf.decode(emissions, self.sequence_lengths(inputs))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_words": self.num_words,
            "num_chars": self.num_chars,
            "tags": self.tags,
            "word_dim": self.word_dim,
            "trainable_embeddings": self.trainable_embeddings,
            "trainable_word_rows": self.trainable_word_rows,
            "char_dim": self.char_dim,
            "char_filters": self.char_filters,
            "char_kernel_size": self.char_kernel_size,
            "use_casing": self.use_casing,
            "casing_dim": self.casing_dim,
            "lstm_units": self.lstm_units,
            "dropout": self.dropout,
            "constrain_transitions": self.constrain_transitions,
        }

    @classmethod
    def from_config(cls, config: dict) -> "ClinicalNERModel":
        return cls(**config)
