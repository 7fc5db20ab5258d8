"""The model a training run starts from: a new one (with pretrained word vectors) or a base model's."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from clinical_ner.config import ARCHITECTURE_SETTINGS, NERConfig
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.errors import ConfigError
from clinical_ner.model.network import ASSERTION_LAYERS, ClinicalNERModel
from clinical_ner.model.vocab import Vocabulary
from clinical_ner.text.document import ASSERTION_LABEL, Sentence
from clinical_ner.text.tags import entity_labels
from clinical_ner.training.dataset import (
    assertion_class_weights, assertion_classes, taught_assertion_classes,
)
from clinical_ner.vectors.reader import load_embedding_files



def compile_for_training(model: ClinicalNERModel, config: NERConfig) -> None:
    """Adam with global-norm gradient clipping; with ``weights_ema``, the weights' moving average."""
    averaging = ({"use_ema": True, "ema_momentum": config.weights_ema}
                 if config.weights_ema else {})
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.clip_norm,
                                        **averaging),
        jit_compile=False,
    )


def pretrained_vectors(config: NERConfig) -> tuple[list[str] | None, np.ndarray | None]:
    """The words and vectors of ``config.embeddings``, one or several files (``None, None`` without)."""
    if not config.embeddings:
        return None, None
    return load_embedding_files(config.embedding_files, config.embeddings_format)


def class_weights(config: NERConfig, sentences: Sequence[Sentence], vocab: Vocabulary,
                  emit: Callable[[str], None]) -> list[float]:
    """The assertion loss's class weights by ``config.assertion_class_weights``, said in the log."""
    weights = assertion_class_weights(sentences, vocab.assertions,
                                      config.assertion_class_weights)
    if weights:
        emit(f"assertion class weights ({config.assertion_class_weights}): " + ", ".join(
            f"{name} {weight:.2f}" for name, weight in zip(vocab.assertions, weights)))
    return weights


def new_model(config: NERConfig, sentences: Sequence[Sentence], tags: list[str],
              emit: Callable[[str], None]) -> tuple[ClinicalNERModel, Vocabulary]:
    """A model of ``config``'s architecture whose vocabulary is the data's and the vectors' words.

    It has an assertion output when the data's problems carry assertions.
    """
    if (warning := two_cases_warning(entity_labels(tags))):
        emit(warning)
    embedding_words, vectors = pretrained_vectors(config)
    vocab = Vocabulary.build((s.tokens for s in sentences), tags, embedding_words,
                             config.min_word_count)
    vocab.assertions = taught_assertion_classes(sentences)
    if vocab.assertions:
        emit(f"assertions: {', '.join(vocab.assertions)} (a second output, "
             f"assertion_head {config.assertion_head})")
    elif (one_class := assertion_classes(sentences)):
        emit(f"assertions: {_one_assertion_class(one_class)}: the model has no assertion output")
    elif any(sentence.assertions for sentence in sentences):
        # Assertion files read without a word, then nothing learnt from them.
        emit(f"assertions: {_no_assertion_output(tags)}; the data's assertions are not used")
    vocab, _, words_in_use = vocab.training_words_first(s.tokens for s in sentences)
    word_dim = vectors.shape[1] if vectors is not None else config.word_dim
    model = ClinicalNERModel.from_settings(config, vocab, word_dim, words_in_use,
                                           class_weights(config, sentences, vocab, emit))
    if vectors is not None:
        model.get_layer("word_embedding").set_table(
            vocab.embedding_matrix(embedding_words, vectors, config.seed))
        covered = len(set(vocab.words) & set(embedding_words))
        emit(f"vocabulary: {len(vocab.words)} words ({covered} with pretrained vectors), "
             f"{len(vocab.chars)} characters, {len(tags)} tags")
    else:
        emit(f"vocabulary: {len(vocab.words)} words (no pretrained vectors), "
             f"{len(vocab.chars)} characters, {len(tags)} tags")
    return model, vocab


#: The settings that say which word vectors a new model starts from; a fine-tuned
#: model starts from its base model's word table instead and reads no vectors file.
VECTOR_SETTINGS = ("embeddings", "embeddings_format")


def check_architecture_kept(config: NERConfig, base_config: NERConfig,
                            init_from: str | Path) -> None:
    """Raise :class:`ConfigError` if ``config`` changes the architecture of the base model.

    Word vectors are named apart, with the advice to leave them out: fine-tuning
    keeps the base model's word table (its words and trained vectors) and reads
    no embeddings file, so even the base's own file given again (as an absolute
    path, where the base recorded it relative) is no change of architecture.
    """
    changed = [name for name in ARCHITECTURE_SETTINGS
               if getattr(config, name) != getattr(base_config, name)]
    if any(name in VECTOR_SETTINGS for name in changed):
        raise ConfigError(
            f"--embeddings: fine-tuning {init_from} keeps its word table (its words and "
            f"trained vectors) and reads no embeddings file; leave out --embeddings and "
            f"--embeddings-format (and the --config settings embeddings and embeddings_format)")
    if changed:
        raise ConfigError(
            f"fine-tuning keeps the base model's architecture; these settings differ "
            f"from {init_from}: {', '.join(changed)}")


def _one_assertion_class(classes: list[str]) -> str:
    """Why data whose problems all carry one assertion class trains no assertion output."""
    return (f"every problem of the data is {classes[0]}, and one class teaches nothing but to "
            f"answer it for every problem")


def _no_assertion_output(tags: list[str]) -> str:
    """Why a model of ``tags`` without the ``problem`` label has no assertion output."""
    return (f"the labels ({', '.join(entity_labels(tags))}) have no {ASSERTION_LABEL}, and only "
            f"{ASSERTION_LABEL}s carry assertions: the model has no assertion output")


#: The axes of the output layers' weights (in ``get_weights()`` order) that run over
#: their outputs: the emissions' kernel columns and bias and the CRF's transitions (both
#: axes), start and end scores run over the tags; the assertion output's kernel columns
#: and bias over the assertion classes.
OUTPUT_AXES = {"emissions": ((1,), (0,)), "crf": ((0, 1), (0,), (0,)),
               "assertion_probabilities": ((1,), (0,))}


def shared_output_weights(fresh: list[np.ndarray], base: list[np.ndarray], outputs: list[str],
                          base_outputs: list[str], output_axes: tuple[tuple[int, ...], ...]
                          ) -> list[np.ndarray]:
    """``fresh`` (a new layer's weights over ``outputs``) with the base's for the shared ones.

    ``outputs`` are tags or assertion classes. The entries of every output
    that ``base_outputs`` has too are the base's (for the transitions, those
    between two shared tags); a new output's stay as initialised.

    Example:
    >>> shared_output_weights([np.zeros((2, 3))], [np.array([[1., 2.], [3., 4.]])],
    ...                       ["O", "B-drug", "B-x"], ["O", "B-x"], ((1,),))[0].tolist()
    [[1.0, 0.0, 2.0], [3.0, 0.0, 4.0]]
    """
    base_ids = {name: output_id for output_id, name in enumerate(base_outputs)}
    shared = [output_id for output_id, name in enumerate(outputs) if name in base_ids]
    from_base = [base_ids[outputs[output_id]] for output_id in shared]

    def cells(ids: list[int], shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple:
        return np.ix_(*(ids if axis in axes else np.arange(size)
                        for axis, size in enumerate(shape)))

    merged = []
    for new_weight, base_weight, axes in zip(fresh, base, output_axes):
        weight = np.array(new_weight)
        weight[cells(shared, weight.shape, axes)] = base_weight[
            cells(from_base, base_weight.shape, axes)]
        merged.append(weight)
    return merged


def two_cases_warning(labels: list[str], base_labels: Sequence[str] = ()) -> str | None:
    """A warning naming the data's labels that differ only in letter case (``Drug`` and
    ``drug``): a new model trains them as two labels, each with part of the mentions.
    ``base_labels``: a base model's, whose letter cases :func:`case_only_warning` names."""
    base_cases = {label.casefold() for label in base_labels}
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), []).append(label)
    doubled = [sorted(group) for folded, group in groups.items()
               if len(group) > 1 and folded not in base_cases]
    if not doubled:
        return None
    merged = {label: group[-1] for group in doubled for label in group}
    return ("warning: labels that differ only in letter case are trained as different labels, "
            "each from part of the mentions: " + "; ".join(", ".join(group) for group in doubled)
            + "; to merge them, " + _label_map_hint(labels, merged))


def case_only_warning(labels: list[str], base_labels: list[str],
                      base_has_assertions: bool) -> str | None:
    """A warning naming the new data's labels that are a base label in other letter case.

    ``Problem`` for the base's ``problem`` is a new label: the base's weights for
    ``problem`` are not used, and the assertion output gives ``Problem``
    entities no assertion, without an error anywhere. Beside ``problem`` in the
    same data, it also splits the problems between two labels.
    """
    renamed = {label: base_label for label in labels if label not in base_labels
               for base_label in base_labels if label.casefold() == base_label.casefold()}
    if not renamed:
        return None
    asserted = [label for label, base_label in renamed.items()
                if base_label == ASSERTION_LABEL and base_has_assertions]
    return ("warning: labels that differ from the base model's only in letter case are new "
            "labels, and the base's weights for them are not used: "
            + ", ".join(f"{label} (base: {base_label}"
                        + (", which the data has too: their mentions train two labels"
                           if base_label in labels else "") + ")"
                        for label, base_label in renamed.items())
            + (f"; {asserted[0]} entities get no assertion (the assertion output is for "
               f"{ASSERTION_LABEL})" if asserted else "")
            + "; to keep them, " + _label_map_hint(labels, renamed))


def _label_map_hint(labels: list[str], renamed: dict[str, str]) -> str:
    """The ``--label-map`` that renames ``labels`` by ``renamed`` and keeps the others."""
    return ("give a label map that names every label (those it does not name become O): "
            "--label-map '" + ",".join(f"{label}={renamed.get(label, label)}" for label in labels)
            + "'")


def fine_tuning_model(init_from: str | Path, config: NERConfig, sentences: Sequence[Sentence],
                      tags: list[str], emit: Callable[[str], None]
                      ) -> tuple[ClinicalNERModel, Vocabulary]:
    """The base model's weights, grown by the new data's words, characters and tags.

    Every character of the data the base lacks gets a new row, as in a new
    model. The word table is the base model's plus the data's words it lacks that
    are seen at least ``min_word_count`` times (as a new model's vocabulary
    counts them), whose rows start as a new model's rows for words without
    pretrained vectors (none are added with ``trainable_embeddings`` false:
    frozen, they would stay random). If the labels differ, the output layer and
    the CRF keep the base's weights for the tags both have; a new tag's start as
    a new model's.
    The assertion output: kept with its weights when the new data has no
    assertions (it is then not trained) or only classes it knows; with classes
    the base lacks, it keeps the base's weights for the classes both have (and
    its own BiLSTM, with ``assertion_head="lstm"``), the new ones' start as a new
    model's; a new one when the base model had none.
    """
    base = KerasAnnotator.load(init_from)
    check_architecture_kept(config, base.config, init_from)
    # Every character of the data joins, as in a new model's vocabulary; words seen at
    # least min_word_count times.
    grown = Vocabulary.build((s.tokens for s in sentences), tags, base.vocab.words,
                             config.min_word_count)
    known_chars = set(base.vocab.chars)
    chars = base.vocab.chars + [char for char in grown.chars if char not in known_chars]
    words, table = base.vocab.words, base.model.get_layer("word_embedding").table()
    if config.trainable_embeddings:
        # Fine-tuning reads no vectors file: the base model's table stands for the vectors,
        # so its words keep their rows and the new ones get random rows of the same spread.
        words, table = grown.words, grown.embedding_matrix(words, table, config.seed)
        added_words = len(words) - len(base.vocab.words)
        times = f"{config.min_word_count} time{'s' if config.min_word_count != 1 else ''}"
        word_counts = (f"{len(base.vocab.words)} words and {added_words} new "
                       f"word{'s' if added_words != 1 else ''} of the data (seen at least {times}"
                       + ("; they start without pretrained vectors)" if added_words else ")"))
    else:
        # Frozen, a new word's random row would never learn: <unk>'s trained one is better.
        word_counts = (f"{len(words)} words (the data's new words are not added, as "
                       "trainable_embeddings is false)")
    added_chars = len(chars) - len(base.vocab.chars)
    emit(f"vocabulary: the base model's {word_counts}; its {len(base.vocab.chars)} characters "
         f"and {added_chars} new character{'s' if added_chars != 1 else ''} of the data")
    data_assertions = taught_assertion_classes(sentences)
    # Labels without problem (a label map that maps nothing onto it) would keep an
    # assertion output that never answers.
    has_problems = ASSERTION_LABEL in entity_labels(tags)
    keep_assertions = has_problems and bool(base.vocab.assertions) and set(
        data_assertions) <= set(base.vocab.assertions)
    # Reordered so that the new data's words are the trainable ones (the base model
    # split its table by its own data).
    vocab, order, words_in_use = Vocabulary(
        words=words, chars=chars, tags=tags,
        assertions=base.vocab.assertions if keep_assertions else data_assertions,
    ).training_words_first(s.tokens for s in sentences)
    model = ClinicalNERModel.from_settings(config, vocab, base.model.word_dim,
                                           words_in_use,
                                           class_weights(config, sentences, vocab, emit))
    model.get_layer("word_embedding").set_table(table[order])
    relabelled = tags != base.vocab.tags
    # The assertion layers of the same head are the base's when it has some; only the
    # output's columns are per class.
    new_assertion_layers = () if base.vocab.assertions else ASSERTION_LAYERS
    base_outputs = {"emissions": base.vocab.tags, "crf": base.vocab.tags,
                    "assertion_probabilities": base.vocab.assertions}
    outputs = {"emissions": tags, "crf": tags, "assertion_probabilities": vocab.assertions}
    for layer in model.layers:
        if not layer.weights or layer.name in new_assertion_layers + ("word_embedding",):
            continue
        base_weights = base.model.get_layer(layer.name).get_weights()
        if layer.name == "char_encoder":
            # The base's characters keep their rows; new ones start as in a new model.
            char_table = layer.get_weights()[0]
            char_table[:len(base.vocab.chars)] = base_weights[0]
            base_weights = [char_table, *base_weights[1:]]
        if layer.name in OUTPUT_AXES and outputs[layer.name] != base_outputs[layer.name]:
            base_weights = shared_output_weights(
                layer.get_weights(), base_weights, outputs[layer.name],
                base_outputs[layer.name], OUTPUT_AXES[layer.name])
        layer.set_weights(base_weights)
    if relabelled:
        # Named by label: a base label the new data lacks is lost, which a list of
        # tags left the user to spot.
        base_labels, labels = entity_labels(base.vocab.tags), entity_labels(tags)
        added = [label for label in labels if label not in base_labels]
        dropped = [label for label in base_labels if label not in labels]
        emit("the label set differs from the base model's "
             f"({', '.join(base_labels)} -> {', '.join(labels)}"
             + (f"; added: {', '.join(added)}" if added else "")
             + (f"; dropped: {', '.join(dropped)}, which the new data does not mark, so the "
                "fine-tuned model will not find them" if dropped else "")
             + "): the output layer and the CRF keep the base model's weights for the tags "
             "both have" + ("; the added labels' tags start as in a new model" if added else "")
             + "; the embeddings, char-CNN and BiLSTM are kept")
        if (warning := case_only_warning(labels, base_labels, bool(base.vocab.assertions))):
            emit(warning)
        # Two new labels in two letter cases split their mentions as in a new model.
        if (warning := two_cases_warning(labels, base_labels)):
            emit(warning)
    if base.vocab.assertions and not has_problems:
        emit(f"assertions: {_no_assertion_output(tags)}; the base model's "
             f"({', '.join(base.vocab.assertions)}) is dropped")
    elif keep_assertions and not data_assertions:
        one_class = assertion_classes(sentences)
        emit((f"assertions: {_one_assertion_class(one_class)}" if one_class
              else "the new data has no assertions") + ": the base model's assertion output "
             f"({', '.join(vocab.assertions)}) is kept as it was and not trained (the layers "
             "under it are, which can change its answers; evaluate it on data with assertions)")
    elif keep_assertions:
        emit(f"assertions: the base model's output ({', '.join(vocab.assertions)}) is "
             "fine-tuned on the new data's assertions")
    elif base.vocab.assertions:
        shared = [name for name in data_assertions if name in base.vocab.assertions]
        emit(f"assertions: {', '.join(data_assertions)} are not all among the base model's "
             f"({', '.join(base.vocab.assertions)}): the assertion output keeps the base "
             f"model's weights for {', '.join(shared) or 'none of them'} (and the head's "
             "layers under them); the new classes' start as in a new model")
    elif data_assertions:
        emit(f"assertions: {', '.join(data_assertions)} (the base model has no assertion "
             "output): a new assertion output is initialised")
    elif has_problems and (one_class := assertion_classes(sentences)):
        emit(f"assertions: {_one_assertion_class(one_class)}: the model has no assertion output")
    return model, vocab
