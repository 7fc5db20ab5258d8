"""One epoch of gradient steps, the same code for one device, several devices and several machines.

Every process reads the same global batches (the ``tf.data`` pipeline is
deterministic given the seed and the epoch). Inside a step each replica takes
its contiguous share of the global batch's rows, and its loss is the mean over
its rows weighted by its share of the batch. The replicas' gradients are then
summed across replicas and machines, and the optimizer (with its global-norm
clipping) is applied once to that sum. So:

* the gradient is the one-process gradient of the whole global batch: the
  loss is not a per-replica mean, which on two workers would double it
  (``../shared/notes/tensorflow-facts.md``);
* clipping sees the summed gradient, as in one process (Keras clips each
  replica's share before summing when its optimizer runs inside a replica);
* with one replica the weight is exactly 1.0 and the step computes what
  ``keras.Model.fit`` computed before this loop replaced it (the test
  ``tests/test_training.py`` and the resume tests hold it to that).

A model whose assertion head does not train the tagger
(``assertion_trains_tagger=False``) has its head's gradients and the
tagger's clipped apart, each group by its own global norm: clipped together,
the head's gradient would shrink the tagger's steps, and the tagger would
not train as it does without assertions.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clinical_ner.model.network import ASSERTION_LAYERS


class EpochTrainer:
    """Runs training epochs of a compiled ``ClinicalNERModel`` under a ``tf.distribute`` strategy.

    The model and its optimizer must have been created under ``strategy.scope()``.

    Example::

        trainer = EpochTrainer(model, tf.distribute.get_strategy(), clip_norm=5.0)
        loss = trainer.train_epoch(training_dataset(...))   # mean loss per sentence
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy,
                 clip_norm: float) -> None:
        self.model = model
        self.strategy = strategy
        # See _share_of_sum: with N replicas each replica's 1/N of the summed
        # gradient is clipped at 1/N of the norm (by the optimizer, or by
        # _clip_in_groups when the head's gradients are clipped apart).
        replica_clip_norm = clip_norm / strategy.num_replicas_in_sync
        self._head_weights = _detached_head_weights(model)
        if self._head_weights is None:
            model.optimizer.global_clipnorm = replica_clip_norm
        else:
            model.optimizer.global_clipnorm = None
            self._group_clip_norm = replica_clip_norm
        self._step = None
        self._loss = keras.metrics.Mean(name="loss")
        # Built outside the step function: variables created inside the
        # first call of a tf.function under a MirroredStrategy fail to lift.
        if not model.optimizer.built:
            with strategy.scope():
                model.optimizer.build(model.trainable_weights)

    def train_epoch(self, dataset: tf.data.Dataset, progress: bool = False) -> float:
        """Train on every batch of ``dataset`` once; return the mean loss per sentence.

        ``progress`` shows a progress bar with the running loss on stdout.
        """
        if self._step is None:
            # autograph=False: see clinical_ner/model/inference_graph.py.
            self._step = tf.function(self._global_step, input_signature=[dataset.element_spec],
                                     autograph=False)
        self._loss.reset_state()
        batches = int(dataset.cardinality())  # known: training_dataset asserts it
        bar = (keras.utils.Progbar(batches if batches >= 0 else None, stateful_metrics=["loss"])
               if progress else None)
        with self.strategy.scope():
            for step, batch in enumerate(dataset, start=1):
                loss, rows = self._step(batch)
                self._loss.update_state(loss, sample_weight=rows)
                if bar is not None:
                    bar.update(step, [("loss", float(self._loss.result()))])
        if bar is not None and batches < 0:  # with a known count the last update ends the bar
            bar.update(step, [("loss", float(self._loss.result()))], finalize=True)
        return float(self._loss.result())

    def _global_step(self, batch):
        per_replica_loss = self.strategy.run(self._replica_step, args=(batch,))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
        return loss, tf.shape(batch[0]["word_ids"])[0]

    def _replica_step(self, batch):
        features, targets = batch
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        rows = tf.shape(features["word_ids"])[0]
        begin = rows * context.replica_id_in_sync_group // replicas
        end = rows * (context.replica_id_in_sync_group + 1) // replicas
        share = tf.cast(end - begin, tf.float32) / tf.cast(rows, tf.float32)
        # A replica left without rows (a batch smaller than the replica count)
        # still runs the step, on the first row with weight 0, so that every
        # replica takes part in the same collective operations.
        empty = end <= begin
        begin = tf.where(empty, 0, begin)
        end = tf.where(empty, 1, end)
        features = {name: value[begin:end] for name, value in features.items()}
        # (targets: tag ids, or (tag ids, assertion ids) for a model with assertions;
        # the tag ids may be a dict with allowed_tags for partly labelled data)
        targets = tf.nest.map_structure(lambda target: target[begin:end], targets)
        weights = self.model.trainable_weights
        with tf.GradientTape() as tape:
            predictions = self.model(features, training=True)
            # Scaled to the replica's share of the rows here, so not compute_loss's
            # division by the replica count.
            loss = self.model.batch_loss(features, targets, predictions) * share
        gradients = tape.gradient(loss, weights)
        if replicas > 1:
            gradients = _share_of_sum(context, gradients, replicas)
        if self._head_weights is not None:
            gradients = _clip_in_groups(gradients, self._head_weights, self._group_clip_norm)
        self.model.optimizer.apply(gradients, weights)
        return loss


def _share_of_sum(context: tf.distribute.ReplicaContext, gradients: list, replicas: int) -> list:
    """Each replica's ``1/replicas`` of the gradients summed over all replicas.

    Keras' optimizer, run in a replica, clips each replica's gradients by
    their global norm and then sums them across replicas. Given the sum's
    ``1/replicas`` with the clip norm divided by ``replicas`` too (set by
    :class:`EpochTrainer`), it clips the whole batch's gradient
    exactly as one process does, and its own sum restores the scale.
    """
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    return [tf.IndexedSlices(g.values / replicas, g.indices, g.dense_shape)
            if isinstance(g, tf.IndexedSlices) else g / replicas for g in summed]


def _detached_head_weights(model: keras.Model) -> list[bool] | None:
    """For each trainable weight, whether it is the assertion head's; ``None`` unless detached."""
    if not getattr(model, "assertions", None) or getattr(model, "assertion_trains_tagger", True):
        return None
    return [weight.path.split("/")[0] in ASSERTION_LAYERS for weight in model.trainable_weights]


def _clip_in_groups(gradients: list, is_head: list[bool], clip_norm: float) -> list:
    """The head's gradients and the others' each clipped to ``clip_norm`` by their global norm.

    Each group as Keras' ``global_clipnorm`` clips all of them (its norm and
    scale, which also makes a sparse gradient dense), so that the tagger's
    group gets the very update of a model without assertions.
    """
    clipped = list(gradients)
    for in_group in (True, False):
        indices = [i for i, head in enumerate(is_head) if head == in_group]
        norm = keras.ops.sqrt(keras.ops.sum(keras.ops.stack(
            [keras.ops.sum(keras.ops.square(gradients[i])) for i in indices])))
        scale = clip_norm * keras.ops.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
        for index in indices:
            clipped[index] = gradients[index] * scale
    return clipped


def reseed_dropout(model: keras.Model, seed: int, epoch: int) -> None:
    """Give every random layer a state that depends only on (seed, epoch, layer).

    Keras draws dropout seeds from the global generator when a layer is built
    and does not save their counters, so a model loaded for ``--resume``
    would otherwise draw other dropout masks than the uninterrupted run.
    """
    states = [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]
    for index, state in enumerate(states):
        mixed = (seed * 1_000_003 + epoch * 7_919 + index) % (2**31 - 1)
        state.assign(np.array([mixed, 0], dtype=state.dtype))
