"""Word embedding that trains only the rows the training data can reach."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="clinical_ner")
class PartlyTrainableEmbedding(keras.layers.Layer):
    """An embedding table whose first ``trainable_rows`` rows train; the others stay fixed.

    Why: pretrained vectors bring tens of thousands of words, of which a
    training set uses a few thousand (BC5CDR: 7.6k of 53k). Keras 3's Adam
    turns the sparse gradient of a lookup into a dense update of the whole
    table at every step, which cost about a fifth of BC5CDR's training time.
    A row that no training token looks up gets a zero gradient at every step,
    so Adam's moments stay zero and it never moves: keeping such rows in a
    separate frozen table gives exactly the same model, and the update costs
    only the rows in use. The vocabulary must put those words first
    (:meth:`clinical_ner.model.vocab.Vocabulary.training_words_first`).

    ``trainable_rows=None`` makes every row trainable (one table, as
    ``keras.layers.Embedding``). Input: integer ids of any shape, each in
    ``[0, input_dim)``; output: the ids' vectors, shape ``ids.shape + [output_dim]``.

    Example:
    >>> import numpy as np
    >>> layer = PartlyTrainableEmbedding(input_dim=5, output_dim=2, trainable_rows=3)
    >>> layer.set_table(np.arange(10, dtype="float32").reshape(5, 2))
    >>> layer(np.array([[0, 4, 2]])).numpy().tolist()
    [[[0.0, 1.0], [8.0, 9.0], [4.0, 5.0]]]
    >>> [tuple(w.shape) for w in layer.trainable_weights + layer.non_trainable_weights]
    [(3, 2), (2, 2)]
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        trainable_rows: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if trainable_rows is not None and not 0 < trainable_rows <= input_dim:
            raise ValueError(
                f"trainable_rows must be in [1, input_dim={input_dim}], got {trainable_rows}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.trainable_rows = trainable_rows

    @property
    def _frozen_rows(self) -> int:
        return 0 if self.trainable_rows is None else self.input_dim - self.trainable_rows

    def build(self, input_shape=None) -> None:
        self.embeddings = self.add_weight(
            shape=(self.input_dim - self._frozen_rows, self.output_dim),
            initializer="uniform", name="embeddings",
        )
        self.frozen_embeddings = None
        if self._frozen_rows:
            self.frozen_embeddings = self.add_weight(
                shape=(self._frozen_rows, self.output_dim),
                initializer="uniform", name="frozen_embeddings",
                trainable=False,
            )
        self.built = True

    def call(self, ids):
        ids = tf.cast(ids, tf.int32)
        if self.frozen_embeddings is None:
            return tf.gather(self.embeddings, ids)
        is_trained = ids < self.trainable_rows
        trained = tf.gather(self.embeddings, tf.where(is_trained, ids, 0))
        frozen = tf.gather(self.frozen_embeddings,
                           tf.where(is_trained, 0, ids - self.trainable_rows))
        return tf.where(tf.expand_dims(is_trained, -1), trained, frozen)

    def table(self) -> np.ndarray:
        """The whole table ``[input_dim, output_dim]``, trained rows first."""
        parts = [self.embeddings.numpy()]
        if self.frozen_embeddings is not None:
            parts.append(self.frozen_embeddings.numpy())
        return np.concatenate(parts)

    def set_table(self, table: np.ndarray) -> None:
        """Set every row from one ``[input_dim, output_dim]`` array."""
        if not self.built:
            self.build()
        table = np.asarray(table)
        if table.shape != (self.input_dim, self.output_dim):
            raise ValueError(f"expected a table of shape {(self.input_dim, self.output_dim)}, "
                             f"got {table.shape}")
        split = self.input_dim - self._frozen_rows
        self.embeddings.assign(table[:split])
        if self.frozen_embeddings is not None:
            self.frozen_embeddings.assign(table[split:])

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "trainable_rows": self.trainable_rows,
            }
        )
        return config
