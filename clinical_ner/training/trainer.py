"""Training: from data files to a model directory, with early stopping, resume and fine-tuning.

A model directory holds everything a model needs to load with the settings it
was trained with (Stanza-style):

``config.json``          the effective hyperparameters
``vocab.json``           words, characters and tags
``model.keras``          the best model by dev micro F1
``training_log.jsonl``   one line per epoch; ``training_curve.png`` the same as a plot
``checkpoint/``          the last completed epoch with optimizer state, for ``--resume``
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from clinical_ner.training.assertion_cues import cued_copies
from clinical_ner.training.checkpoints import (
    CHECKPOINT_DIR, STATE_FILE, damaged_checkpoint, has_checkpoint, load_checkpoint,
    remove_partial_files,
)
from clinical_ner.config import NERConfig, changed_on_resume, resume_change_error
from clinical_ner.text.document import Sentence
from clinical_ner.training.dataset import (
    assertion_classes, encode_allowed_tags, encode_assertions, encode_tags,
    taught_assertion_classes, training_dataset, unknown_assertion_classes_note,
)
from clinical_ner.training.distribute import (
    ClusterError, Distribution, distribution_for, parse_tf_config,
    ignored_tf_config_warning, one_device_note,
)
from clinical_ner.errors import ClinicalNERError, ConfigError, DataFormatError
from clinical_ner.evaluation.evaluate import (
    HEADLINE_MEASURES, corpus_sentences, evaluate_sentences, headline_scores, report_skipped,
)
from clinical_ner.model.features import Featurizer
from clinical_ner.formats import Corpus, load_corpus
from clinical_ner.formats.corpora import (
    CORPUS_FILE_REPLACES, CorpusSet, check_assertion_map_sources, check_label_map_sources,
)
from clinical_ner.artifacts.keras_model import CONFIG_FILE, MODEL_FILE
from clinical_ner.evaluation.model_card import (
    base_model_record, record_corpus_set_training, record_training, recorded_base_model,
)
from clinical_ner.training.starting_model import (
    check_architecture_kept, compile_for_training, fine_tuning_model, new_model,
)
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.annotators.load import check_fine_tunable
from clinical_ner.pretrained import resolve_model_path
from clinical_ner.training.multi_corpus import (
    TrainingCorpora, corpus_scores, read_dev_corpora, read_training_corpora, selection_scores,
)
from clinical_ner.model.tag_space import tag_inventory
from clinical_ner.training.callbacks import (
    BestModelSaver, CheckpointSaver, ModelSelection, ProgressReport, RunState, TrainingLog,
    TrainingRun,
)
from clinical_ner.training.run_data import check_same_data, data_facts, dev_parts
from clinical_ner.training.steps import EpochTrainer, reseed_dropout
from clinical_ner.model.vocab import Vocabulary
from clinical_ner.model.network import NO_ASSERTION


@dataclass
class TrainingResult:
    output: Path
    best_epoch: int
    best_dev_f1: float | None
    epochs_completed: int
    stopped_early: bool


def train(
    train_path: str | Path | Sequence[str | Path] | None,
    output: str | Path,
    dev_path: str | Path | None = None,
    config: NERConfig | None = None,
    data_format: str = "auto",
    resume: bool = False,
    init_from: str | Path | None = None,
    label_map: dict[str, str | None] | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
    emit: Callable[[str], None] | None = None,
    distribute: str | None = None,
    cpu_devices: int | None = None,
    connect_timeout_s: float | None = None,
    corpora: CorpusSet | None = None,
    assertion_map: dict | None = None,
) -> TrainingResult:
    """Train a model and write its directory to ``output``.

    ``train_path`` is one corpus or a list of them, read each in its own
    format and trained on together (for instance train and dev, to fit the
    final model on all the labelled data for the number of epochs that a
    run with dev chose). Without ``dev_path`` there is no early stopping and
    the last epoch is the model kept.
    ``resume`` continues ``output`` from its last completed epoch with the
    saved configuration (``config.epochs`` may raise the epoch budget).
    ``init_from`` starts from an existing model directory (fine-tuning), with
    its settings when ``config`` is ``None``; the new data's frequent words the base
    lacks are added to its word table, and if the data has other labels, the output
    layer and CRF keep the base's weights for the tags both have
    (:func:`~clinical_ner.training.starting_model.fine_tuning_model`).
    ``distribute`` is ``None`` (one device), ``"mirrored"`` or
    ``"multi-worker"`` (see :mod:`clinical_ner.training.distribute`); ``config.batch_size``
    is the global batch, split across all replicas. ``assertion_map`` reads
    brat attributes as assertions (:mod:`clinical_ner.formats.brat`): data
    whose problems carry assertions trains the model's assertion output too.
    ``corpora`` (from :func:`clinical_ner.formats.corpora.read_corpus_file`)
    replaces ``train_path``, ``dev_path``, ``data_format``, ``label_map`` and
    ``assertion_map``:
    several corpora, each with its label map, coverage and weight, and the
    dev corpora that choose the epoch (:mod:`clinical_ner.training.multi_corpus`).
    """
    emit = emit or (lambda message: print(message, file=sys.stderr, flush=True))
    output = Path(output)
    # Known before joining a cluster: only the chief writes the model and reads dev files.
    chief = distribute != "multi-worker" or _is_chief_by_environment()
    # Checked before joining a cluster; only the chief's --output must be new.
    config = _run_config(output, config, resume, init_from, may_hold_model=chief)
    if corpora is not None and (train_path or dev_path is not None or label_map is not None
                                or data_format != "auto" or assertion_map is not None):
        raise ConfigError(CORPUS_FILE_REPLACES)
    # Checked before joining a cluster, like the reading of the data below; only the
    # chief's dev paths must exist.
    training = read_training_corpora(corpora, skip_invalid, emit, chief) if corpora else None
    distribution = distribution_for(distribute, cpu_devices, connect_timeout_s)
    if (ignored := ignored_tf_config_warning(distribute)) is not None:
        emit(ignored)
    if distribute not in (None, "none"):
        emit(f"training on {distribution.describe()}; global batch {config.batch_size}")
    if (lone := one_device_note(distribute, distribution.replicas)) is not None:
        emit(lone)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    # Only the chief evaluates on dev (the others may not even have the file).
    dev_sentences = []
    # As read for training: the card counts and hashes them (not a file changed since).
    train_corpora: list[Corpus] | None = None
    dev_corpus: Corpus | None = None
    if training is not None:
        train_sentences, train_labels = training.sentences, set(corpora.labels)
        has_dev = bool(corpora.selection)
        if distribution.is_chief:
            dev_sentences = read_dev_corpora(corpora, skip_invalid, emit, training.dev_sources)
    else:
        _check_paths_given_once(train_path, dev_path)
        read = dict(data_format=data_format, label_map=label_map, skip_invalid=skip_invalid,
                    assertion_map=assertion_map, emit=emit)
        train_sentences, train_labels, train_corpora = _read_training_data(train_path, **read)
        has_dev = dev_path is not None
        if dev_path is not None and distribution.is_chief:
            dev_sentences, dev_corpus = _read_dev_data(dev_path, train_labels, **read)

    original_count = len(train_sentences)
    # Before the cued copies, which are drawn from these sentences and the seed.
    data = data_facts(train_sentences, dev_sentences if distribution.is_chief else None,
                      has_dev, corpus_file=corpora is not None, data_format=data_format,
                      label_map=label_map, assertion_map=assertion_map,
                      corpora=training.settings() if training is not None else None)
    if distribution.task is not None:
        # A worker that stopped meanwhile (the chief's dev data unreadable) is named here.
        _in_cluster(distribution, None,
                    lambda: _check_workers_agree(distribution, config, data, resume))
    if config.assertion_cue_copies:
        train_sentences, training = _with_cued_copies(config, train_sentences, training, emit)

    with distribution.output_dir(output) as directory:
        with distribution.strategy.scope():
            if resume:
                model, state = _resumed(output, emit)
                check_same_data(state.data, data, output, emit)
                state.data = data  # an older checkpoint's run is checked from now on
                vocab = Vocabulary.load(output)
            else:
                model, vocab = _built_alike(distribution, lambda: _first_model(
                    config, train_sentences, train_labels, init_from, emit))
                dev_all = [s for part in dev_parts(dev_sentences).values() for s in part]
                if (not vocab.assertions and not assertion_classes(train_sentences)
                        and assertion_classes(dev_all)):
                    # Most likely the training data's .ast files were left behind.
                    emit("note: the dev data's problems carry assertions, but the training "
                         "data's have none: the model has no assertion output, and the dev "
                         "assertions are not scored")
                state = RunState(data=data, fine_tuned_from=base_model_record(init_from).get(
                    "fine_tuned_from"))
        # Scored as wrong at every epoch, with no word of why, as `evaluate` says of them.
        for name, part in dev_parts(dev_sentences).items():
            where = corpora.by_name(name).dev if name else dev_path  # "": --dev's
            if (note := unknown_assertion_classes_note(str(where), part, vocab.assertions)):
                emit(note)
        if resume:
            config = _resumed_epochs(config, state, output, emit)
            if distribution.is_chief:
                remove_partial_files(output / CHECKPOINT_DIR)
        # Made once the model is built, so that a bad embeddings file leaves no folder behind.
        # (A resumed process other than the chief starts from an empty directory.)
        (directory / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        # On resume too: config.json says how many epochs the run is to train.
        config.save(directory)
        if not resume:
            vocab.save(directory)
        run = TrainingRun(model, state, directory)
        selection = ModelSelection(config.patience, has_dev=has_dev)
        # Those that see the scored weights (averaged_weights below), then the rest.
        on_scored_weights = [selection, BestModelSaver()]
        on_raw_weights = [CheckpointSaver(), TrainingLog(emit), ProgressReport(emit)]
        epochs = EpochTrainer(model, distribution.strategy, config.clip_norm)
        featurizer = Featurizer(vocab.words, vocab.chars, config.max_word_length)
        train_tags = encode_tags(train_sentences, vocab.tags, config.tag_scheme)
        allowed_tags = (training.allowed_tags(vocab.tags, config.tag_scheme)
                        if training is not None else None)
        if len(train_sentences) > original_count:
            allowed_tags = _tagger_skips_copies(allowed_tags, train_sentences, original_count,
                                                vocab.tags, config.tag_scheme)
        if not vocab.assertions:
            train_assertions = None
        elif taught_assertion_classes(train_sentences):
            train_assertions = encode_assertions(train_sentences, vocab.assertions)
        else:
            # Data of one class teaches nothing: a base model's assertion output is kept
            # untrained, as on data without assertions.
            train_assertions = [[NO_ASSERTION] * len(s.tokens) for s in train_sentences]
        ner = KerasAnnotator(model, vocab, config)
        stopped_early = False
        # The kept epoch's whole dev report, for the card: the model saved is the one
        # scored, so the card need not load it and score dev again (about 4 s of tracing
        # for a tiny model). None when that epoch was before a resume.
        dev_report = best_dev_report = None
        for epoch in range(state.epoch, config.epochs):
            if selection.should_stop(state):
                stopped_early = True
                break
            emit(f"epoch {epoch + 1}/{config.epochs}")
            # NerDL's decay: lr / (1 + decay * epoch), set per epoch so that a
            # resumed run uses exactly the rate it would have used.
            model.optimizer.learning_rate = config.learning_rate / (1 + config.lr_decay * epoch)
            reseed_dropout(model, config.seed, epoch)
            epoch_sentences, epoch_tags, epoch_allowed, epoch_assertions = _epoch_data(
                training, config.seed, epoch, train_sentences, train_tags, allowed_tags,
                train_assertions)
            train_tokens = sum(len(s.tokens) for s in epoch_sentences)
            dataset = training_dataset(epoch_sentences, epoch_tags, featurizer,
                                       config.batch_size, config.use_casing,
                                       shuffle_seed=config.seed + epoch,
                                       word_dropout=config.word_dropout,
                                       bucket_boundaries=config.bucket_boundaries,
                                       allowed_tags=epoch_allowed,
                                       assertion_ids=epoch_assertions)
            started = time.perf_counter()
            loss = _in_cluster(distribution, epoch, lambda: epochs.train_epoch(dataset, progress))
            train_seconds = time.perf_counter() - started
            if not (math.isfinite(loss) and _weights_are_finite(model)):
                # From here on every weight stays NaN: the run would go on and keep a model
                # that finds nothing, as a success. Stopped before it is saved.
                raise ClinicalNERError(
                    f"epoch {epoch + 1}: training diverged (loss {loss:g}; the weights are no "
                    "longer finite numbers); train again with a lower learning_rate or "
                    "clip_norm" + (f" ({output} keeps epoch {state.best_epoch}, the best "
                                   "before it)" if state.best_epoch else ""))
            entry = {
                "epoch": epoch + 1,
                "loss": loss,
                "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                "train_seconds": round(train_seconds, 3),
                "train_tokens_per_second": round(train_tokens / train_seconds, 1),
            }
            # Dev scores and the best model are the averaged weights' (with
            # weights_ema); the checkpoint keeps the raw ones, which training goes on from.
            with averaged_weights(model):
                if training is not None and has_dev:
                    entry.update(_in_cluster(distribution, epoch, lambda: _corpus_dev_scores(
                        ner, corpora, dev_sentences, distribution)))
                elif has_dev:
                    scores, dev_report = _in_cluster(
                        distribution, epoch, lambda: _dev_scores(ner, dev_sentences, distribution))
                    entry.update(scores)
                for callback in on_scored_weights:
                    callback.on_epoch_end(run, entry)
                if entry["best"]:
                    best_dev_report = dev_report
            for callback in on_raw_weights:
                callback.on_epoch_end(run, entry)
        if stopped_early:
            emit(f"stopped early: no dev F1 gain in the last {selection.patience} epoch"
                 f"{'s' if selection.patience != 1 else ''}")
        # A resumed fine-tuning run is still fine-tuned from its base model; a checkpoint
        # older than that record leaves the card's, if the run had written one.
        base = state.fine_tuned_from or (recorded_base_model(output) if resume else None)
        # Fine-tuning on data without assertions leaves the base's assertion output untrained.
        assertions_kept = (base is not None and bool(vocab.assertions)
                           and not taught_assertion_classes(train_sentences))
        if distribution.is_chief and corpora is not None:
            best = [entry for entry in state.history if entry.get("best")]
            record_corpus_set_training(output, corpora,
                                       best[-1].get("dev_corpora", {}) if best else {},
                                       skip_invalid, fine_tuned_from=base,
                                       assertions_kept=assertions_kept)
        elif distribution.is_chief:
            record_training(output, train_path, dev_path, data_format, label_map, skip_invalid,
                            assertion_map, fine_tuned_from=base, assertions_kept=assertions_kept,
                            train_corpora=train_corpora, dev_corpus=dev_corpus,
                            dev_report=best_dev_report)
        emit(f"best epoch {state.best_epoch}"
             + (f" (dev F1 {state.best_f1:.4f})" if state.best_f1 is not None else "")
             + (f"; model in {output}" if distribution.is_chief
                else "; the chief wrote the model"))
    return TrainingResult(output=output, best_epoch=state.best_epoch,
                          best_dev_f1=state.best_f1, epochs_completed=state.epoch,
                          stopped_early=stopped_early)


def _weights_are_finite(model: keras.Model) -> bool:
    # Once per epoch, so the copy to NumPy is cheap beside the epoch: about 3 ms for the
    # bundled model's 560k trainable weights (AMD EPYC, 2 cores, loaded machine).
    return all(np.isfinite(keras.ops.convert_to_numpy(weight)).all()
               for weight in model.trainable_weights)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[None]:
    """The optimizer's moving average of the trainable weights in place of them, inside the block.

    Nothing changes without ``weights_ema`` (an optimizer without ``use_ema``).
    The raw weights come back on leaving, so that training goes on from them.
    """
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False):
        yield
        return
    raw = [weight.numpy() for weight in model.trainable_weights]
    optimizer.finalize_variable_values(model.trainable_weights)
    try:
        yield
    finally:
        for weight, value in zip(model.trainable_weights, raw):
            weight.assign(value)


def _with_cued_copies(config: NERConfig, sentences: list[Sentence],
                      training: TrainingCorpora | None, emit: Callable[[str], None]
                      ) -> tuple[list[Sentence], TrainingCorpora | None]:
    """The training sentences with their cued copies (``assertion_cue_copies``), each copy in its source's corpus."""
    # Of problems only: mentions mapped onto another label keep theirs, which train nothing.
    classes = assertion_classes(sentences)
    copies = cued_copies(sentences, config.assertion_cue_copies, config.seed, classes)
    emit(f"assertion cues: {len(copies)} cued copies of training sentences "
         f"(assertion_cue_copies {config.assertion_cue_copies:g})")
    sentences = sentences + [copy for _, copy in copies]
    if training is not None:
        sources = np.array([source for source, _ in copies], np.int64)
        training = TrainingCorpora(training.corpus_set, sentences, np.concatenate(
            [training.corpus_index, training.corpus_index[sources]]))
    return sentences, training


def _tagger_skips_copies(allowed_tags: list[np.ndarray] | None, sentences: list[Sentence],
                         original_count: int, tags: list[str], scheme: str) -> list[np.ndarray]:
    """Allowed-tag masks under which the cued copies (from ``original_count`` on) teach no tags.

    A copy allows every tag at every token, so its CRF loss (log Z minus the
    log-sum over the paths it allows, :meth:`CRF.partial_log_likelihood`)
    asks only that the paths the transition constraints allow be likely,
    whatever its tags: the copies train the assertion output, not which
    tokens are entities. The other sentences keep their masks (their gold
    path alone where there were none, which is the ordinary loss).
    """
    if allowed_tags is None:
        allowed_tags = encode_allowed_tags(sentences[:original_count],
                                           [()] * original_count, tags, scheme)
    else:
        allowed_tags = list(allowed_tags[:original_count])
    return allowed_tags + [np.ones((len(sentence.tokens), len(tags)), bool)
                           for sentence in sentences[original_count:]]


def _run_config(output: Path, config: NERConfig | None, resume: bool,
                init_from: str | Path | None, may_hold_model: bool) -> NERConfig:
    """The run's settings, after the checks that need no TensorFlow (before joining a cluster)."""
    if resume and init_from:
        raise ConfigError("--resume and --init-from cannot be combined")
    if resume:
        if not has_checkpoint(output):
            raise ClinicalNERError(
                f"{output}: nothing to resume (no {CHECKPOINT_DIR}/state.json; with several "
                "workers, every worker must see the chief's --output, e.g. on a shared disk)")
        saved = NERConfig.load(output)
        if config is None:
            return saved
        _check_resume_settings(config, saved, output)
        return saved.replace(epochs=config.epochs)
    if may_hold_model and ((output / MODEL_FILE).exists() or has_checkpoint(output)):
        raise ClinicalNERError(
            f"{output} already holds a model; use --resume to continue it or another --output")
    if init_from is None:
        return config or NERConfig()
    # Before any data is read. Without settings, fine-tuning takes the base model's (the
    # defaults would differ from its architecture), as `clinical-ner train --init-from` does.
    check_fine_tunable(init_from)
    base_config = NERConfig.load(resolve_model_path(init_from))
    if config is None:
        return base_config
    check_architecture_kept(config, base_config, init_from)
    return config


def _check_resume_settings(config: NERConfig, saved: NERConfig, output: Path) -> None:
    """A resumed run trains on with its saved settings: ``config`` may change only
    :data:`~clinical_ner.config.RESUME_MAY_CHANGE`; another change is named, not ignored."""
    changed = changed_on_resume(config, saved)
    if changed:
        name = changed[0]
        given, kept = config.to_dict(), saved.to_dict()
        raise resume_change_error(f"its {name} ({given.get(name)!r} given, {kept[name]!r} "
                                  "saved)", output / CONFIG_FILE)


def _is_chief_by_environment() -> bool:
    try:
        return parse_tf_config(os.environ.get("TF_CONFIG")).is_chief
    except ConfigError:
        return True  # distribution_for reports it


def _check_paths_given_once(train_path, dev_path) -> None:
    """No training path twice and the dev path none of them, as a corpus file checks its own:
    a repeated path is drawn twice as often, and a dev path trained on chooses the epoch
    on training data."""
    paths = [train_path] if isinstance(train_path, (str, Path)) else list(train_path or ())
    resolved = [Path(path).resolve() for path in paths]
    for path, where in zip(paths, resolved):
        if resolved.count(where) > 1:
            raise ConfigError(f"--train {path}: given twice (its sentences would count twice); "
                              "to draw a corpus more often give it a weight in a corpus file "
                              "(--corpus)")
    if dev_path is not None and Path(dev_path).resolve() in resolved:
        raise ConfigError(f"--dev {dev_path} is one of the --train paths: the epoch would be "
                          "chosen on training data; give dev data of its own, or leave out "
                          "--dev to train on train and dev together")


def _read_training_data(train_path, data_format, label_map, skip_invalid, assertion_map, emit
                        ) -> tuple[list[Sentence], set[str], list[Corpus]]:
    train_paths = [train_path] if isinstance(train_path, (str, Path)) else list(train_path)
    if not train_paths:
        raise ConfigError("no training data given")
    sentences: list[Sentence] = []
    labels: set[str] = set()
    corpora = []
    for path in train_paths:
        corpus = _read_corpus(path, data_format, label_map, skip_invalid, assertion_map, emit)
        corpora.append(corpus)
        corpus_part = corpus_sentences(corpus)
        if not corpus_part:
            raise DataFormatError(str(path), None, "no sentences to train on")
        sentences.extend(corpus_part)
        labels.update(corpus.labels)
    if label_map:
        # A misspelt source label maps nothing: its mentions would train as O.
        check_label_map_sources(label_map, train_paths, data_format, skip_invalid=skip_invalid)
    if assertion_map is not None:
        check_assertion_map_sources(assertion_map, train_paths, data_format, labels)
    if not labels:
        # A model of O alone finds nothing, however long it trains.
        raise DataFormatError(", ".join(str(path) for path in train_paths), None,
                              "no entities to train on (every token is O)")
    return sentences, labels, corpora


def _read_dev_data(dev_path, train_labels, data_format, label_map, skip_invalid, assertion_map,
                   emit) -> tuple[list[Sentence], Corpus]:
    corpus = _read_corpus(dev_path, data_format, label_map, skip_invalid, assertion_map, emit)
    unseen = sorted(set(corpus.labels) - train_labels)
    if unseen:
        emit(f"warning: dev labels never seen in training: {', '.join(unseen)}")
    sentences = corpus_sentences(corpus)
    if not sentences:
        # Scores of nothing would choose the epoch and stop training early.
        raise DataFormatError(str(dev_path), None, "no sentences to score")
    if not corpus.labels:
        # Its F1 is 0 at every epoch: it would keep epoch 1 and stop training early.
        raise DataFormatError(str(dev_path), None, "no entities to score (every token is O)")
    return sentences, corpus


def _read_corpus(path, data_format, label_map, skip_invalid, assertion_map, emit) -> Corpus:
    corpus = load_corpus(path, data_format, label_map=label_map, skip_invalid=skip_invalid,
                         assertion_map=assertion_map)
    report_skipped(corpus, str(path), emit)
    return corpus


def _resumed(output: Path, emit: Callable[[str], None]) -> tuple[keras.Model, RunState]:
    model, values = load_checkpoint(output)
    try:
        state = RunState.from_dict(values)
    except KeyError:
        raise damaged_checkpoint(output / CHECKPOINT_DIR / STATE_FILE, output) from None
    emit(f"resuming {output} after epoch {state.epoch}")
    return model, state


def _resumed_epochs(config: NERConfig, state: RunState, output: Path,
                    emit: Callable[[str], None]) -> NERConfig:
    """The resumed run's settings; an epoch budget already spent trains nothing, and says so.

    Not an error: a restarted worker may run its finished command again.
    """
    if config.epochs > state.epoch:
        return config
    emit(f"note: {output} has already trained {state.epoch} "
         f"epoch{'s' if state.epoch != 1 else ''}, so --epochs "
         f"{config.epochs} trains none; give more epochs to train on")
    return config.replace(epochs=state.epoch)


def _first_model(config: NERConfig, sentences: list[Sentence], labels: set[str],
                 init_from: str | Path | None, emit: Callable[[str], None]):
    tags = tag_inventory(sorted(labels), config.tag_scheme)
    if init_from is not None:
        model, vocab = fine_tuning_model(init_from, config, sentences, tags, emit)
    else:
        model, vocab = new_model(config, sentences, tags, emit)
    compile_for_training(model, config)
    return model, vocab


def _dev_scores(ner: KerasAnnotator, sentences: list[Sentence], distribution: Distribution
                ) -> tuple[dict, dict | None]:
    """The chief's dev precision, recall and F1 (and assertion scores), on every process,
    and the chief's whole report (``evaluate_sentences``; None on other processes).

    A model with assertions adds the dev assertion accuracy and macro F1 of
    the gold problems when the dev data has assertions (the epoch is still
    chosen by the NER F1).
    """
    started = time.perf_counter()
    report = evaluate_sentences(ner, sentences) if distribution.is_chief else None
    scores = _broadcast_scores(distribution, ["dev"],
                               {"dev": None if report is None else headline_scores(report)})["dev"]
    entry = {f"dev_{measure}": value for measure, value in scores.items()}
    entry["dev_seconds"] = round(time.perf_counter() - started, 3)
    return entry, report


def _epoch_data(training: TrainingCorpora | None, seed: int, epoch: int,
                *per_sentence: list | None) -> tuple[list | None, ...]:
    """The epoch's share of each per-sentence list (sentences, tag ids, allowed tags,
    assertion ids; None stays None): all of it, or a corpus file's weighted draw."""
    if training is None:
        return per_sentence
    chosen = training.epoch_indices(seed, epoch).tolist()
    return tuple(None if values is None else [values[i] for i in chosen]
                 for values in per_sentence)


def _corpus_dev_scores(ner: KerasAnnotator, corpora: CorpusSet, dev: dict[str, list[Sentence]],
                       distribution: Distribution) -> dict:
    """Each dev corpus's scores and their weighted selection score, on every process."""
    started = time.perf_counter()
    names = [spec.name for spec in corpora.dev_corpora()]
    per_corpus = _broadcast_scores(
        distribution, names, corpus_scores(ner, corpora, dev) if distribution.is_chief else {})
    return {**selection_scores(corpora, per_corpus), "dev_corpora": per_corpus,
            "dev_seconds": round(time.perf_counter() - started, 3)}


def _broadcast_scores(distribution: Distribution, names: list[str],
                      scores: dict[str, dict | None]) -> dict[str, dict]:
    """The chief's ``headline_scores`` of each name, on every process.

    Other processes pass anything for ``scores``. What the chief did not
    measure (assertions of data without them) is absent on every process.
    """
    # The same length on every process; -1: not measured.
    flat = [0.0] * (len(HEADLINE_MEASURES) * len(names))
    if distribution.is_chief:
        flat = [scores[name].get(measure, -1.0) for name in names
                for measure in HEADLINE_MEASURES]
    flat = distribution.broadcast_from_chief(flat)
    width = len(HEADLINE_MEASURES)
    return {name: {measure: value for measure, value in zip(
                HEADLINE_MEASURES, flat[width * i:width * (i + 1)]) if value >= 0}
            for i, name in enumerate(names)}


def _check_workers_agree(distribution: Distribution, config: NERConfig, data: dict,
                         resume: bool) -> None:
    """Every worker was started like the chief, or all of them stop with an error.

    A worker with another --epochs, --dev or data runs other steps than the
    chief, and the run failed later with TensorFlow's collective errors (or a
    worker reported success while the chief failed, or trained on its own
    sentences in silence). ``data`` is the run's :func:`data_facts`. The
    embeddings' paths may differ between machines and are left out.
    """
    settings = {name: value for name, value in config.to_dict().items()
                if name not in ("embeddings", "epochs")}
    # The sentences as read (a --label-map or --assertion-map changes them) and a corpus
    # file's weights and coverage; the count alone let other data of that length through.
    training_data = json.dumps([data["train_sha256"], data.get("corpora")])
    # (what, this process's value, whether to show the values); floats exact below 2**53.
    facts = [("settings (--config, --batch-size, --seed, ...)",
              _digest_number(json.dumps(settings, sort_keys=True)), False),
             ("--epochs", float(config.epochs), True),
             ("training data (sentences)", float(data["train_sentences"]), True),
             ("training data (tokens, tags or assertions)", _digest_number(training_data),
              False),
             ("--dev (given or not)", float(data["dev"]), False),
             ("--resume (given or not)", float(resume), False)]
    chief, agree = distribution.chief_and_agreement([value for _, value, _ in facts])
    if agree:
        return
    task = distribution.task
    for (what, mine, show), theirs in zip(facts, chief):
        if mine != theirs:
            values = f" ({mine:g} here, {theirs:g} on the chief)" if show else ""
            raise ConfigError(f"{task.task_type} {task.task_index}: its {what} differ from the "
                              f"chief's{values}; start every worker with the same command")
    raise ConfigError(f"{task.task_type} {task.task_index}: another worker was started with "
                      "other options than the chief (see its error); start every worker with "
                      "the same command")


def _built_alike(distribution: Distribution, build: Callable[[], tuple[keras.Model, Vocabulary]]
                 ) -> tuple[keras.Model, Vocabulary]:
    """``build()``, the starting model and its vocabulary, the same on every worker or
    an error on all of them.

    The vocabulary comes from the training data, compared before, and from
    the vectors files or the ``--init-from`` model, which each machine reads
    from its own disk. Tables of other sizes made TensorFlow's broadcast of
    the first weights fail (an internal error, exit 70); of the same size,
    a word's id meant another word on each worker, in silence. The starting
    weights are compared too: vectors files of the same words but other values
    (or ``--init-from`` models of one vocabulary) set tables that the cluster
    does not broadcast, and each worker trained a model of its own, in silence.
    """
    task = distribution.task
    if task is None:
        return build()
    where = f"{task.task_type} {task.task_index}"
    differ = ConfigError(
        f"{where}: the workers' vocabularies differ (their models too): the --embeddings "
        "files or the --init-from model differ between the machines; give every worker the "
        "same files")
    weights_differ = ConfigError(
        f"{where}: the workers' starting weights differ (their vocabularies agree): the "
        "--embeddings files or the --init-from model hold other values on some machines; give "
        "every worker the same files")

    def build_and_compare() -> tuple[keras.Model, Vocabulary]:
        try:
            model, vocab = build()
        except tf.errors.InvalidArgumentError as error:
            if "Shape mismatch" not in str(error):
                raise
            raise differ from None
        if not distribution.chief_and_agreement([_digest_number(json.dumps(asdict(vocab)))])[1]:
            raise differ
        weights = b"".join(np.ascontiguousarray(value).tobytes() for value in model.get_weights())
        if not distribution.chief_and_agreement([_digest_number(weights)])[1]:
            raise weights_differ
        return model, vocab

    # The worker that sees the shapes differ stops; the others lose contact with it.
    return _in_cluster(distribution, None, build_and_compare)


def _digest_number(data: str | bytes) -> float:
    """48 bits of ``data``'s SHA-256 (of its UTF-8 if text) as a float (exact), to compare
    across workers."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return float(int(hashlib.sha256(data).hexdigest()[:12], 16))


def _in_cluster(distribution: Distribution, epoch: int | None, work: Callable):
    """``work()``, with a lost worker reported as what to do about it.

    ``epoch`` is ``None`` before training begins: then another worker
    stopped with an error of its own (the chief's dev data unreadable, its
    vectors file missing), which it names, and nothing is checkpointed yet.
    """
    if distribution.task is None:
        return work()
    try:
        return work()
    except tf.errors.OpError as error:
        where = f"{distribution.task.task_type} {distribution.task.task_index}"
        if epoch is None:
            raise ClusterError(
                f"{where}: lost contact with the cluster before training began "
                f"({type(error).__name__}): another worker stopped; see its error, then start "
                "every worker again") from None
        # Every completed epoch is checkpointed; in the first there is nothing to resume.
        advice = ("restart every worker with --resume to continue from the last completed "
                  "epoch" if epoch else "no epoch was completed, so there is nothing to resume: "
                  "start every worker again with the same command")
        raise ClusterError(f"{where}: lost contact with the cluster in epoch {epoch + 1} "
                           f"({type(error).__name__}); {advice}") from None
