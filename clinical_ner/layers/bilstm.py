"""Bidirectional LSTM over padded sentences, with a fused kernel for small inference batches."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="clinical_ner")
class BiLSTM(keras.layers.Layer):
    """Keras' ``Bidirectional(LSTM)``, run as TensorFlow's fused ``BlockLSTM`` op for small batches.

    Input: ``[batch, tokens, features]`` and a boolean ``mask`` ``[batch,
    tokens]`` that is true on each sentence's tokens, which come first.
    Output: ``[batch, tokens, 2 * units]``, the forward and the backward
    LSTM's states; zeros at padding.

    Why: Keras runs an LSTM as a graph loop of about twenty small ops per
    token, whose dispatch, not arithmetic, sets the time of a short batch.
    TensorFlow's ``BlockLSTM`` op (a core op, so stock TF Serving runs it)
    does the whole sequence in one kernel, which is faster for a few
    sentences, but its matrix products are slower than Keras' on large
    batches. So inference uses it for batches of at most
    ``fused_max_batch`` sentences and Keras' loop above that; both compute the
    same function with the same weights (the Keras layer's). Training always
    uses Keras' loop.

    Example:
    >>> import numpy as np
    >>> layer = BiLSTM(units=2)
    >>> x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    >>> mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    >>> fused = layer(x, mask=mask)  # 3 sentences: the fused kernel
    >>> fused.shape
    TensorShape([3, 4, 4])
    >>> looped = BiLSTM.from_config({**layer.get_config(), "fused_max_batch": 0})
    >>> looped.build(x.shape)
    >>> looped.set_weights(layer.get_weights())
    >>> bool(np.allclose(fused, looped(x, mask=mask), atol=1e-6))
    True
    """

    def __init__(self, units: int, fused_max_batch: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.fused_max_batch = fused_max_batch
        self.supports_masking = True
        self.bidirectional = keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=True), name="bidirectional"
        )

    def build(self, input_shape) -> None:
        self.bidirectional.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        if training or self.fused_max_batch < 1:
            return self.bidirectional(inputs, mask=mask, training=training)
        return tf.cond(
            tf.shape(inputs)[0] <= self.fused_max_batch,
            lambda: self._fused(inputs, mask),
            lambda: self.bidirectional(inputs, mask=mask, training=False),
        )

    def _fused(self, inputs, mask):
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        # BlockLSTM reads time-major sequences.
        steps = tf.transpose(inputs, [1, 0, 2])
        zeros = tf.zeros([tf.shape(inputs)[0], self.units], inputs.dtype)
        forward = self._block_lstm(self.bidirectional.forward_layer, steps, zeros)
        # The backward LSTM reads each sentence from its last token, so each
        # row is reversed within its own length, padding staying at the end.
        backward = tf.reverse_sequence(
            self._block_lstm(self.bidirectional.backward_layer,
                             tf.reverse_sequence(steps, lengths, seq_axis=0, batch_axis=1),
                             zeros),
            lengths, seq_axis=0, batch_axis=1)
        states = tf.transpose(tf.concat([forward, backward], axis=-1), [1, 0, 2])
        # An LSTM reads forwards, so padding at the end cannot change the
        # states of real tokens; the states computed over padding are zeroed,
        # as Keras' masked loop returns them.
        return states * tf.cast(tf.expand_dims(mask, -1), states.dtype)

    def _block_lstm(self, lstm: keras.layers.LSTM, steps, zeros):
        """The LSTM's states ``[tokens, batch, units]`` for time-major ``steps``."""
        cell = lstm.cell
        # Keras orders the gates input, forget, cell, output; BlockLSTM wants
        # input, cell, forget, output. (BlockLSTMV2 takes Keras' order, but
        # its registered gradient is wrong in TF 2.21, so V1 it is.)
        def block_order(weights):
            i, f, c, o = tf.split(weights, 4, axis=-1)
            return tf.concat([i, c, f, o], axis=-1)

        weights = block_order(tf.concat([cell.kernel, cell.recurrent_kernel], axis=0))
        no_peephole = tf.zeros([self.units], steps.dtype)
        return tf.raw_ops.BlockLSTM(
            seq_len_max=tf.cast(tf.shape(steps)[0], tf.int64), x=steps, cs_prev=zeros,
            h_prev=zeros, w=weights, wci=no_peephole, wcf=no_peephole, wco=no_peephole,
            b=block_order(cell.bias), forget_bias=0.0, cell_clip=-1.0, use_peephole=False,
        )[6]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], 2 * self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"units": self.units, "fused_max_batch": self.fused_max_batch})
        return config

