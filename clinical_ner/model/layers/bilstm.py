"""Bidirectional LSTM over padded sentences: our loop to train, a fused kernel for tiny batches."""
from __future__ import annotations

import types

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="clinical_ner")
class BiLSTM(keras.layers.Layer):
    """Keras' ``Bidirectional(LSTM)``, trained by a leaner loop and, for tiny batches, a fused op.

    Input: ``[batch, tokens, features]`` and a boolean ``mask`` ``[batch,
    tokens]`` that is true on each sentence's tokens, which come first.
    Output: ``[batch, tokens, 2 * units]``, the forward and the backward
    LSTM's states; zeros at padding.

    The weights are those of a Keras ``Bidirectional(LSTM)`` sublayer (same
    names and layout, so models saved with Keras' loop load unchanged). Which
    computation runs depends on the mode, because each of the three is the
    cheapest in one of them:

    * training runs our loop: all tokens' inputs are multiplied by the input
      kernel in one matrix product before the loop, so each step does only
      the recurrent product; padding needs no per-step masking, because each
      row is reversed within its own length for the backward direction and
      padding stays at the end, where an LSTM reading forwards cannot reach
      the real tokens. Training runs about 10% more tokens per second than
      with Keras' loop;
    * inference batches of at most ``fused_max_batch`` sentences run
      TensorFlow's fused ``BlockLSTM`` op (a core op, so stock TF Serving
      runs it), one kernel per direction: the fastest for single sentences;
    * larger inference batches run Keras' own loop: as fast as ours there,
      and it holds less memory, because it does not keep every token's
      projected inputs (a serving process peaked about 40 MB lower).

    All three compute Keras' LSTM (sigmoid gates, tanh cell) with the same
    weights; ``fused_max_batch=0`` turns the fused op off (the model passes
    ``NERConfig.fused_lstm_max_batch``). Setting the
    attribute ``builtin_ops_only = True`` (not a saved setting: the LiteRT
    exporter sets it on its copy) runs a fourth loop at inference, one that
    converts to TFLite builtin ops only (and that TensorFlow itself cannot
    run): ``BlockLSTM`` is not a builtin, and the converter lowers
    ``TensorArray`` ops only when their elements have a static shape, which a
    dynamic batch size rules out.

    Example:
    >>> import numpy as np
    >>> layer = BiLSTM(units=2, fused_max_batch=4)
    >>> x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    >>> mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    >>> fused = layer(x, mask=mask)  # 3 sentences: the fused kernel
    >>> fused.shape
    TensorShape([3, 4, 4])
    >>> unfused = BiLSTM.from_config({**layer.get_config(), "fused_max_batch": 0})
    >>> unfused.build(x.shape)
    >>> unfused.set_weights(layer.get_weights())
    >>> bool(np.allclose(fused, unfused(x, mask=mask), atol=1e-6))
    True
    >>> trained = unfused(x, mask=mask, training=True)  # our loop
    >>> bool(np.allclose(fused, trained, atol=1e-6))
    True
    """

    def __init__(self, units: int, fused_max_batch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.fused_max_batch = fused_max_batch
        self.builtin_ops_only = False
        self.supports_masking = True
        lstm = keras.layers.LSTM(units, return_sequences=True)
        self.bidirectional = keras.layers.Bidirectional(lstm, name="bidirectional")
        # Bidirectional copies `lstm` by serializing it, twice. While Keras
        # loads a model (its ObjectSharingScope), every object serialized is
        # recorded by its id(); once `lstm` was freed, the next BiLSTM's
        # template could get the same address and be taken for a shared
        # object, and Keras handed back an LSTM of the other layer (a model
        # with two BiLSTMs then failed to load now and then: "Forward layer
        # and backward layer should have different `go_backwards` value").
        # Holding it keeps its id, and those of the objects it serialized,
        # from being reused; in a namespace, which Keras neither tracks nor
        # saves, so that the layer's weights and saved files stay as they were.
        self._keep_alive = types.SimpleNamespace(serialized_lstm=lstm)

    def build(self, input_shape) -> None:
        self.bidirectional.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        if training:
            return self._bidirectional(inputs, mask, self._loop)
        if self.builtin_ops_only:
            return self._bidirectional(inputs, mask, self._builtin_loop)

        def keras_loop():
            return self.bidirectional(inputs, mask=mask, training=False)

        if self.fused_max_batch < 1:
            return keras_loop()
        return tf.cond(
            tf.shape(inputs)[0] <= self.fused_max_batch,
            lambda: self._bidirectional(inputs, mask, self._block_lstm),
            keras_loop,
        )

    def _bidirectional(self, inputs, mask, run):
        """Both directions' states ``[batch, tokens, 2 * units]``; ``run`` computes one."""
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        steps = tf.transpose(inputs, [1, 0, 2])  # time-major
        forward = run(self.bidirectional.forward_layer, steps)
        # The backward LSTM reads each sentence from its last token, so each
        # row is reversed within its own length, padding staying at the end.
        backward = tf.reverse_sequence(
            run(self.bidirectional.backward_layer,
                tf.reverse_sequence(steps, lengths, seq_axis=0, batch_axis=1)),
            lengths, seq_axis=0, batch_axis=1)
        states = tf.transpose(tf.concat([forward, backward], axis=-1), [1, 0, 2])
        # The states computed over padding are zeroed, as Keras' masked loop
        # returns them.
        return states * tf.cast(tf.expand_dims(mask, -1), states.dtype)

    def _loop(self, lstm: keras.layers.LSTM, steps):
        """The LSTM's states ``[tokens, batch, units]`` for time-major ``steps``."""
        cell = lstm.cell
        count, batch = tf.shape(steps)[0], tf.shape(steps)[1]
        projected = tf.reshape(
            tf.matmul(tf.reshape(steps, [count * batch, -1]), cell.kernel) + cell.bias,
            [count, batch, 4 * self.units])
        # A TensorArray, not projected[t]: the gradient of a slice is a dense
        # tensor of the whole sequence at every step.
        inputs = tf.TensorArray(steps.dtype, size=count, element_shape=[None, 4 * self.units])
        inputs = inputs.unstack(projected)
        outputs = tf.TensorArray(steps.dtype, size=count, element_shape=[None, self.units])
        zeros = tf.zeros([batch, self.units], steps.dtype)

        def step(time, state, carry, outputs):
            gates = inputs.read(time) + tf.matmul(state, cell.recurrent_kernel)
            # Keras' gate order: input, forget, cell, output.
            input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=1)
            carry = tf.sigmoid(forget_gate) * carry + tf.sigmoid(input_gate) * tf.tanh(candidate)
            state = tf.sigmoid(output_gate) * tf.tanh(carry)
            return time + 1, state, carry, outputs.write(time, state)

        _, _, _, outputs = tf.while_loop(lambda time, *_: time < count, step,
                                         (tf.constant(0), zeros, zeros, outputs))
        return outputs.stack()

    def _builtin_loop(self, lstm: keras.layers.LSTM, steps):
        """:meth:`_loop` without ``TensorArray`` ops, for conversion to TFLite builtins.

        The states go into a preallocated ``[tokens, batch, units]`` tensor
        through XLA's ``DynamicUpdateSlice``, which the converter turns into the
        builtin ``DYNAMIC_UPDATE_SLICE``: a loop variable of fixed shape, so
        LiteRT does not re-plan the loop body's memory at every step (as it
        does when the states grow by concatenation, measured many times
        slower at batch 8). TensorFlow itself runs that op only under XLA,
        so this loop is for conversion only.
        """
        from tensorflow.compiler.tf2xla.python import xla

        cell = lstm.cell
        count, batch = tf.shape(steps)[0], tf.shape(steps)[1]
        projected = tf.reshape(
            tf.matmul(tf.reshape(steps, [count * batch, -1]), cell.kernel) + cell.bias,
            [count, batch, 4 * self.units])
        zeros = tf.zeros([batch, self.units], steps.dtype)

        def step(time, state, carry, outputs):
            gates = projected[time] + tf.matmul(state, cell.recurrent_kernel)
            input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=1)
            carry = tf.sigmoid(forget_gate) * carry + tf.sigmoid(input_gate) * tf.tanh(candidate)
            state = tf.sigmoid(output_gate) * tf.tanh(carry)
            outputs = xla.dynamic_update_slice(outputs, state[tf.newaxis],
                                               tf.stack([time, 0, 0]))
            return time + 1, state, carry, outputs

        _, _, _, outputs = tf.while_loop(
            lambda time, *_: time < count, step,
            (tf.constant(0), zeros, zeros, tf.zeros([count, batch, self.units], steps.dtype)))
        return outputs

    def _block_lstm(self, lstm: keras.layers.LSTM, steps):
        """The LSTM's states ``[tokens, batch, units]`` for time-major ``steps``, fused."""
        cell = lstm.cell
        # Keras orders the gates input, forget, cell, output; BlockLSTM wants
        # input, cell, forget, output. (BlockLSTMV2 takes Keras' order, but
        # its registered gradient is wrong in TF 2.21, so V1 it is.)
        def block_order(weights):
            i, f, c, o = tf.split(weights, 4, axis=-1)
            return tf.concat([i, c, f, o], axis=-1)

        weights = block_order(tf.concat([cell.kernel, cell.recurrent_kernel], axis=0))
        zeros = tf.zeros([tf.shape(steps)[1], self.units], steps.dtype)
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

