"""Character CNN applied to every token of a sentence (Chiu & Nichols 2016)."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="clinical_ner")
class CharCNNEncoder(keras.layers.Layer):
    """Embeds each token's characters, convolves them and max-pools over the token.

    Input: character ids ``[batch, tokens, chars]`` (0 = padding). Output:
    one vector per token ``[batch, tokens, filters]``; padding tokens get zeros.

    Keras 3.15's ``TimeDistributed`` loops over the batch axis instead of the
    time axis when the sentence length is dynamic in a graph (``fit`` on
    ``padded_batch``, ``tf.function``, SavedModel), so this layer folds tokens
    into the batch with a reshape to ``[batch * tokens, chars]`` and unfolds
    the result, which is correct for any batch size and sentence length.
    Padding characters are zeroed and excluded from the max-pool, so a
    token's vector does not depend on how much its batch was padded. Each
    distinct spelling in a batch is convolved once (``UniqueV2`` over the
    rows, a core op) and its vector copied to every occurrence.

    The sizes have no defaults here: the model passes ``NERConfig``'s.

    Example:
    >>> import numpy as np
    >>> encoder = CharCNNEncoder(num_chars=10, char_dim=4, filters=2, kernel_size=3)
    >>> encoder(np.array([[[2, 3, 0], [4, 0, 0]]])).shape
    TensorShape([1, 2, 2])
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int,
        filters: int,
        kernel_size: int,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_chars = num_chars
        self.char_dim = char_dim
        self.filters = filters
        self.kernel_size = kernel_size
        self.embedding = keras.layers.Embedding(num_chars, char_dim, name="char_embedding")
        self.convolution = keras.layers.Conv1D(
            filters, kernel_size, padding="same", activation="tanh", name="char_convolution"
        )

    def build(self, input_shape) -> None:
        self.embedding.build((None, None))
        self.convolution.build((None, None, self.char_dim))
        self.built = True

    def call(self, char_ids):
        char_ids = tf.cast(char_ids, tf.int32)
        shape = tf.shape(char_ids)
        batch, tokens, chars = shape[0], shape[1], shape[2]
        flat_ids = tf.reshape(char_ids, [batch * tokens, chars])
        # Each distinct spelling goes through the convolution once: a batch of
        # notes repeats most of its words ("the", "of", "mg", its padding),
        # and a repeat would cost the convolution as much as a new word.
        spellings, spelling_index = tf.raw_ops.UniqueV2(x=flat_ids, axis=[0])
        vectors = tf.gather(self.encode_spellings(spellings), spelling_index)
        return tf.reshape(vectors, [batch, tokens, self.filters])

    def encode_spellings(self, spellings):
        """One vector ``[S, filters]`` per row of character ids ``[S, chars]``.

        A row without characters (all padding) gets zeros. ``call``
        deduplicates a batch's spellings with ``UniqueV2`` and calls this; the
        LiteRT export, whose builtin ops lack ``UniqueV2``, deduplicates in
        NumPy and feeds the distinct spellings here.
        """
        spellings = tf.cast(spellings, tf.int32)
        # One extra all-padding row (dropped after pooling) and column: TF's
        # convolution returns its input unchanged when it is empty (no token,
        # or no character at all).
        spellings = tf.pad(spellings, [[0, 1], [0, 1]])
        is_char = tf.expand_dims(spellings > 0, -1)
        # Zeroed padding looks exactly like the convolution's own "same"
        # padding, so a token's vector is the same however wide its batch is.
        embedded = self.embedding(spellings) * tf.cast(is_char, self.compute_dtype)
        features = self.convolution(embedded)
        lowest = tf.constant(features.dtype.min, dtype=features.dtype)
        pooled = tf.reduce_max(tf.where(is_char, features, lowest), axis=1)
        # Positions without characters (sentence padding) get zeros.
        pooled = tf.where(tf.reduce_any(is_char, axis=1), pooled, tf.zeros_like(pooled))
        return pooled[:-1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_chars": self.num_chars,
                "char_dim": self.char_dim,
                "filters": self.filters,
                "kernel_size": self.kernel_size,
            }
        )
        return config
