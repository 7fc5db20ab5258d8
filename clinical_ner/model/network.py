"""The Keras model: char-CNN + word embeddings + BiLSTM + CRF."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from clinical_ner.config import NERConfig
from clinical_ner.model.layers.bilstm import BiLSTM
from clinical_ner.model.layers.char_cnn import CharCNNEncoder
from clinical_ner.model.layers.crf import CRF
from clinical_ner.model.layers.word_embedding import PartlyTrainableEmbedding
from clinical_ner.model.tag_space import inventory_scheme, transition_mask
from clinical_ner.text.tokenizer import CASING_FEATURES
from clinical_ner.model.vocab import Vocabulary

# Constructor arguments that models saved by 0.2.4 and earlier did not store,
# with the value such a model was built with (its tag scheme is read off its
# tags: see tags.inventory_scheme).
# (Models before 0.4 have no assertion output; its other arguments are unused then.)
_ARGUMENTS_OF_OLD_MODELS = {"fused_lstm_max_batch": 4, "assertions": [],
                            "assertion_head": "shared", "assertion_lstm_units": 1,
                            "assertion_loss_weight": 1.0, "assertion_trains_tagger": True,
                            "assertion_class_weights": []}
#: Target id of a token without an assertion target (outside gold problems
#: with an assertion, or in data without assertions): masked out of the loss.
NO_ASSERTION = -1
#: The layers of the assertion output (those a model without assertions lacks).
ASSERTION_LAYERS = ("assertion_bilstm", "assertion_dropout", "assertion_probabilities")


@keras.saving.register_keras_serializable(package="clinical_ner")
class ClinicalNERModel(keras.Model):
    """Functional Keras model for sequence labelling with a CRF output.

    Inputs (a dict, ids from ``clinical_ner.model.features.Featurizer``; 0 is padding):
    ``word_ids`` ``[batch, tokens]``, ``char_ids`` ``[batch, tokens, chars]``
    and, with ``use_casing``, ``casing_ids`` ``[batch, tokens]``.
    Output: CRF emission scores ``[batch, tokens, len(tags)]``. The CRF's
    transition weights live in the ``crf`` layer; :meth:`compute_loss` is its
    negative log-likelihood, so ``fit`` trains the model with integer tag ids
    as targets, and :meth:`decode` gives the best tags and their marginal
    probabilities.

    Every argument is required and keyword-only: the settings and their
    defaults live in :class:`~clinical_ner.config.NERConfig`, and
    :meth:`from_settings` builds the model from one. ``tag_scheme`` names the
    scheme of ``tags`` (``"bio"`` or ``"bioes"``); with
    ``constrain_transitions`` the CRF gets its
    :func:`~clinical_ner.model.tag_space.transition_mask`.
    ``trainable_word_rows`` trains only the first rows of the word embedding
    (the words of the training data, which the vocabulary puts first; see
    :class:`~clinical_ner.model.layers.word_embedding.PartlyTrainableEmbedding`);
    ``None`` trains every row. ``trainable_embeddings=False`` freezes them all.

    With ``assertions`` (assertion classes, see
    :data:`clinical_ner.text.document.ASSERTION_CLASSES`) the model has a second
    output, ``assertion_probabilities`` ``[batch, tokens, len(assertions)]``:
    a softmax per token over the classes, read from the BiLSTM's states
    (``assertion_head="shared"``) or from a BiLSTM of ``assertion_lstm_units``
    of its own over the same token features (``"lstm"``); with
    ``assertion_trains_tagger=False`` its loss trains only the head's own
    layers (a stop-gradient on what it reads). ``assertion_class_weights``
    weighs each class's tokens in that loss (in the order of ``assertions``;
    empty: all 1). The model then
    returns ``[emissions, assertion_probabilities]``, and its targets are
    ``(tag_ids, assertion_ids)`` with :data:`NO_ASSERTION` on the tokens that
    have none. Without ``assertions`` the model is exactly the tagger alone.

    Example:
    >>> import numpy as np
    >>> settings = NERConfig(word_dim=2, char_dim=2, char_filters=2, lstm_units=2,
    ...                      casing_dim=2, tag_scheme="bio")
    >>> vocab = Vocabulary(words=[""] * 20, chars=[""] * 10,
    ...                    tags=["O", "B-problem", "I-problem"])
    >>> model = ClinicalNERModel.from_settings(settings, vocab)
    >>> inputs = {"word_ids": np.array([[3, 4, 0]]),
    ...           "char_ids": np.array([[[2, 3], [4, 0], [0, 0]]]),
    ...           "casing_ids": np.array([[3, 3, 0]])}
    >>> model(inputs).shape
    TensorShape([1, 3, 3])
    >>> tags, marginals = model.decode(inputs)
    >>> tags.shape, marginals.shape
    (TensorShape([1, 3]), TensorShape([1, 3, 3]))
    >>> ClinicalNERModel.from_config(model.get_config()).get_config() == model.get_config()
    True
    """

    def __init__(
        self,
        *,
        num_words: int,
        num_chars: int,
        tags: list[str],
        tag_scheme: str,
        word_dim: int,
        trainable_embeddings: bool,
        trainable_word_rows: int | None,
        char_dim: int,
        char_filters: int,
        char_kernel_size: int,
        use_casing: bool,
        casing_dim: int,
        lstm_units: int,
        dropout: float,
        constrain_transitions: bool,
        fused_lstm_max_batch: int,
        assertions: list[str],
        assertion_head: str,
        assertion_lstm_units: int,
        assertion_loss_weight: float,
        assertion_trains_tagger: bool,
        assertion_class_weights: list[float],
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
        token_features = keras.layers.Concatenate(name="token_features")(features)
        token_features = keras.layers.Dropout(dropout, name="input_dropout")(token_features)
        hidden = BiLSTM(lstm_units, fused_lstm_max_batch, name="bilstm")(token_features,
                                                                         mask=is_token)
        hidden = keras.layers.Dropout(dropout, name="output_dropout")(hidden)
        emissions = keras.layers.Dense(len(tags), name="emissions")(hidden)
        # Checked even when unconstrained: tags outside the scheme are a bug.
        mask = transition_mask(tags, tag_scheme)
        if constrain_transitions:
            crf = CRF(len(tags), allowed_transitions=mask.allowed.tolist(),
                      allowed_start=mask.start.tolist(), allowed_end=mask.end.tolist(),
                      name="crf")
        else:
            crf = CRF(len(tags), name="crf")
        outputs = crf(emissions)
        # Built after the tagger's layers, so that the tagger's initial
        # weights are the same with and without assertions for one seed.
        if assertions:
            def head_input(tagger_tensor):
                # Without assertion_trains_tagger the assertion loss trains the
                # head's own layers only: the tagger's layers get the CRF's
                # gradient alone, as in a model without assertions.
                return (tagger_tensor if assertion_trains_tagger
                        else keras.ops.stop_gradient(tagger_tensor))

            if assertion_head == "lstm":
                assertion_states = BiLSTM(assertion_lstm_units, fused_lstm_max_batch,
                                          name="assertion_bilstm")(
                    head_input(token_features), mask=is_token)
                assertion_states = keras.layers.Dropout(dropout, name="assertion_dropout")(
                    assertion_states)
            else:
                assertion_states = head_input(hidden)
            probabilities = keras.layers.Dense(
                len(assertions), activation="softmax", name="assertion_probabilities"
            )(assertion_states)
            outputs = [outputs, probabilities]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        arguments = {
            "num_words": num_words, "num_chars": num_chars, "tags": list(tags),
            "tag_scheme": tag_scheme, "word_dim": word_dim,
            "trainable_embeddings": trainable_embeddings,
            "trainable_word_rows": trainable_word_rows, "char_dim": char_dim,
            "char_filters": char_filters, "char_kernel_size": char_kernel_size,
            "use_casing": use_casing, "casing_dim": casing_dim, "lstm_units": lstm_units,
            "dropout": dropout, "constrain_transitions": constrain_transitions,
            "fused_lstm_max_batch": fused_lstm_max_batch, "assertions": list(assertions),
            "assertion_head": assertion_head, "assertion_lstm_units": assertion_lstm_units,
            "assertion_loss_weight": assertion_loss_weight,
            "assertion_trains_tagger": assertion_trains_tagger,
            "assertion_class_weights": [float(weight) for weight in assertion_class_weights],
        }
        # Each argument is a public attribute (model.tags, model.word_dim, ...),
        # and get_config() returns them all.
        for name, value in arguments.items():
            setattr(self, name, value)
        self._argument_names = tuple(arguments)
        self._frozen_as_built = tuple(layer.name for layer in self.layers if not layer.trainable)

    @classmethod
    def from_settings(
        cls,
        settings: NERConfig,
        vocab: Vocabulary,
        word_dim: int | None = None,
        trainable_word_rows: int | None = None,
        assertion_class_weights: Sequence[float] = (),
    ) -> "ClinicalNERModel":
        """A new model with the settings of ``settings`` for the vocabulary ``vocab``.

        ``word_dim`` is the size of pretrained vectors when there are some
        (``None``: ``settings.word_dim``); ``trainable_word_rows`` and
        ``assertion_class_weights`` as in the class docstring (``None``: every
        row trains; empty: every class weighs 1). The training data decides
        the weights (:func:`clinical_ner.training.dataset.assertion_class_weights`).
        """
        return cls(
            num_words=len(vocab.words), num_chars=len(vocab.chars), tags=vocab.tags,
            tag_scheme=settings.tag_scheme,
            word_dim=settings.word_dim if word_dim is None else word_dim,
            trainable_embeddings=settings.trainable_embeddings,
            trainable_word_rows=trainable_word_rows,
            char_dim=settings.char_dim, char_filters=settings.char_filters,
            char_kernel_size=settings.char_kernel_size, use_casing=settings.use_casing,
            casing_dim=settings.casing_dim, lstm_units=settings.lstm_units,
            dropout=settings.dropout, constrain_transitions=settings.constrain_transitions,
            fused_lstm_max_batch=settings.fused_lstm_max_batch,
            assertions=vocab.assertions, assertion_head=settings.assertion_head,
            assertion_lstm_units=settings.assertion_lstm_units,
            assertion_loss_weight=settings.assertion_loss_weight,
            assertion_trains_tagger=settings.assertion_trains_tagger,
            assertion_class_weights=list(assertion_class_weights),
        )

    def apply_runtime_settings(self, settings: NERConfig) -> None:
        """Take the runtime settings of ``settings`` (call before tracing any graph).

        They change speed, not the weights, so a model directory's
        ``config.json`` may change them after training (``KerasAnnotator`` applies
        its configuration's values when it loads a model).
        """
        for layer in self.layers:
            if isinstance(layer, BiLSTM):
                layer.fused_max_batch = settings.fused_lstm_max_batch
        self.fused_lstm_max_batch = settings.fused_lstm_max_batch

    @property
    def crf(self) -> CRF:
        return self.get_layer("crf")

    @staticmethod
    def sequence_lengths(inputs) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.not_equal(inputs["word_ids"], 0), tf.int32), axis=1)

    def split_outputs(self, outputs) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The emissions and the assertion probabilities (``None`` without assertions) of a call."""
        if self.assertions:
            emissions, probabilities = outputs
            return emissions, probabilities
        return outputs, None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss hook (``fit``, ``evaluate``): :meth:`batch_loss` of the replica's rows.

        Under a ``tf.distribute`` strategy it is divided by the number of
        replicas, as Keras' own losses are: ``fit`` sums the replicas'
        gradients, and reports the loss multiplied back. Without the division
        a model fitted mirrored over two devices took twice the step of the
        same model on one, and reported twice the loss.
        """
        loss = self.batch_loss(x, y, y_pred, sample_weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def batch_loss(self, x, y, y_pred, sample_weight=None):
        """Mean CRF negative log-likelihood per sentence (plus any layer losses).

        With assertions, ``y`` is ``(tag_ids, assertion_ids)`` and the loss
        adds ``assertion_loss_weight`` times the assertion cross-entropy
        summed over the tokens that have a target and divided by the number
        of sentences, so that, like the CRF's, it is a sum over sentences
        divided by the batch size (which the distributed step relies on) and
        a batch without assertion targets adds exactly nothing.

        For partly labelled data the tag ids are a dict whose
        ``allowed_tags`` (bool ``[batch, tokens, tags]``) gives the tags each
        token may take: the CRF loss is then the negative marginal likelihood
        of the allowed paths (:meth:`CRF.partial_log_likelihood`), which
        equals the ordinary one for a row that allows one tag per token.

        ``sample_weight`` (``fit``'s, or its ``class_weight``) is refused with a
        ``ValueError``: nothing here would weigh by it; so is a ``compile(loss=...)``,
        which nothing here would use.
        """
        # The latest compile's loss, as Keras records it to save: a compile without one
        # leaves self.loss as it was, and get_compile_config() cannot serialize the optimizer
        # in a traced step. Refused here, not in compile: loading a model saved after
        # compile(loss=...) replays that compile, and must still load (to annotate, to
        # recompile).
        compiled = getattr(self, "_compile_config", None)
        if compiled is not None and compiled.config.get("loss") is not None:
            raise ValueError(
                "compile(loss=...) is not supported: this model trains with its own loss, "
                "the CRF's negative log-likelihood (plus the assertion cross-entropy), and "
                "would ignore the one given; compile it without loss")
        if sample_weight is not None:
            # fit's sample_weight, and its class_weight (which Keras turns into one weight
            # per row from the argmax over the tokens), were ignored: the model trained
            # unweighted without a word.
            raise ValueError(
                "sample_weight and class_weight are not supported: the loss is the CRF's "
                "negative log-likelihood of whole sentences; to weigh some sentences more, "
                "repeat them (clinical-ner train: a corpus's weight in a --corpus file), and "
                "for assertion classes use the setting assertion_class_weights")
        emissions, probabilities = self.split_outputs(y_pred)
        if self.assertions and not (isinstance(y, (tuple, list)) and len(y) == 2):
            # Tag ids alone would be indexed as the pair: their first rows taken for the
            # tags and the assertions, which fails deep in the graph with a slicing error.
            raise ValueError(
                f"this model has an assertion output ({', '.join(self.assertions)}): its "
                "targets are (tag_ids, assertion_ids), assertion_ids "
                f"{NO_ASSERTION} on tokens without one; give both")
        tag_ids = y[0] if self.assertions else y
        if isinstance(tag_ids, dict):
            log_likelihood = self.crf.partial_log_likelihood(
                emissions, tag_ids["allowed_tags"], self.sequence_lengths(x))
        else:
            log_likelihood = self.crf.log_likelihood(
                emissions, tf.cast(tag_ids, tf.int32), self.sequence_lengths(x))
        loss = -tf.reduce_mean(log_likelihood)
        if self.assertions:
            loss += self.assertion_loss_weight * assertion_cross_entropy(
                probabilities, y[1], self.assertion_class_weights)
        if self.losses:
            loss += tf.add_n(self.losses)
        return loss

    def decode(self, inputs) -> tuple[tf.Tensor, tf.Tensor]:
        """Best tag ids ``[batch, tokens]`` and tag marginals ``[batch, tokens, tags]``."""
        tag_ids, marginals, _ = self.decode_with_assertions(inputs)
        return tag_ids, marginals

    def decode_with_assertions(self, inputs) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """:meth:`decode`'s tags and marginals, and the assertion probabilities (or ``None``)."""
        emissions, probabilities = self.split_outputs(self(inputs, training=False))
        tag_ids, marginals = self.crf.decode(emissions, self.sequence_lengths(inputs))
        return tag_ids, marginals, probabilities

    def get_config(self) -> dict:
        arguments = {name: getattr(self, name) for name in self._argument_names}
        arguments["tags"] = list(arguments["tags"])
        arguments["assertions"] = list(arguments["assertions"])
        arguments["assertion_class_weights"] = list(arguments["assertion_class_weights"])
        # The layers frozen by hand (layer.trainable = False, to fine-tune the upper layers
        # only): the constructor rebuilds every layer as its arguments say, so a saved and
        # reloaded model trained them all again, and its optimizer state no longer fitted.
        # Recorded only where it differs from what the arguments build, so that the
        # files of other models stay as they were.
        frozen = tuple(layer.name for layer in self.layers if not layer.trainable)
        config = {"name": self.name, "trainable": self.trainable, **arguments}
        if frozen != self._frozen_as_built:
            config["frozen_layers"] = list(frozen)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "ClinicalNERModel":
        config = {**_ARGUMENTS_OF_OLD_MODELS, **config}
        if "tag_scheme" not in config:
            config["tag_scheme"] = inventory_scheme(config["tags"])
        # Absent where no layer was frozen or unfrozen by hand: the layers stay as built.
        frozen = config.pop("frozen_layers", None)
        model = cls(**config)
        if frozen is not None:
            for layer in model.layers:
                layer.trainable = layer.name not in frozen
        return model


def assertion_cross_entropy(probabilities: tf.Tensor, assertion_ids: tf.Tensor,
                            class_weights: Sequence[float] = ()) -> tf.Tensor:
    """Cross-entropy summed over the tokens with a target, divided by the number of sentences.

    ``assertion_ids`` ``[batch, tokens]`` holds class ids, and
    :data:`NO_ASSERTION` where a token has no target (those add nothing).
    With ``class_weights`` (one per class) each token's term is multiplied by
    its class's weight.
    """
    assertion_ids = tf.cast(assertion_ids, tf.int32)
    has_target = assertion_ids >= 0
    chosen = tf.gather(probabilities, tf.maximum(assertion_ids, 0), batch_dims=2)
    # The clip keeps log finite for a saturated softmax (as Keras' own
    # cross-entropy on probabilities does).
    token_losses = -tf.math.log(tf.clip_by_value(chosen, 1e-7, 1.0))
    if class_weights:
        token_losses *= tf.gather(tf.constant(class_weights, token_losses.dtype),
                                  tf.maximum(assertion_ids, 0))
    total = tf.reduce_sum(tf.where(has_target, token_losses, 0.0))
    return total / tf.cast(tf.shape(assertion_ids)[0], total.dtype)
