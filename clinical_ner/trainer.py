"""Training: from data files to a model directory, with early stopping, resume and fine-tuning.

A model directory holds everything a model needs to load with the settings it
was trained with (Stanza-style):

``config.json``          the effective hyperparameters
``vocab.json``           words, characters and tags
``model.keras``          the best model by dev micro F1
``training_log.jsonl``   one line per epoch; ``training_curve.png`` the same as a plot
``MODEL_CARD.md``        what the model is, its data and scores (``model_card.json``: its facts)
``checkpoint/``          the last completed epoch with optimizer state, for ``--resume``
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from clinical_ner.config import ARCHITECTURE_SETTINGS, NERConfig
from clinical_ner.corpus import Sentence
from clinical_ner.dataset import encode_tags, training_dataset
from clinical_ner.embeddings import load_embedding_files
from clinical_ner.errors import ClinicalNERError, ConfigError
from clinical_ner.features import Featurizer
from clinical_ner.formats import Corpus, load_corpus
from clinical_ner.model import MODEL_FILE, ClinicalNERModel
from clinical_ner.model_card import record_training
from clinical_ner.pipeline import ClinicalNER
from clinical_ner.scorer import score_mentions
from clinical_ner.tags import tag_inventory, tags_to_mentions
from clinical_ner.vocab import Vocabulary

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
LOG_FILE = "training_log.jsonl"
CURVE_FILE = "training_curve.png"


@dataclass
class TrainingResult:
    output: Path
    best_epoch: int
    best_dev_f1: float | None
    epochs_completed: int
    stopped_early: bool


def corpus_sentences(corpus: Corpus) -> list[Sentence]:
    """Every non-empty sentence of a corpus, in document order."""
    return [s for document in corpus.documents for s in document.sentences if s.tokens]


def report_skipped(corpus: Corpus, path: str, emit: Callable[[str], None]) -> None:
    """Tell the user about every unit a reader skipped (never silently)."""
    if corpus.skipped:
        emit(f"{path}: {len(corpus.skipped)} item(s) skipped or adjusted:")
        for problem in corpus.skipped:
            emit(f"  {problem}")


def evaluate_sentences(ner: ClinicalNER, sentences: Sequence[Sentence]) -> dict:
    """Exact and lenient entity scores of ``ner`` on gold-tokenized sentences."""
    predictions = ner.tag([s.tokens for s in sentences])
    gold = [tags_to_mentions(s.tags) for s in sentences]
    predicted = [tags_to_mentions(tags) for tags, _ in predictions]
    return score_mentions(gold, predicted)


def _save_keras_atomically(model: keras.Model, path: Path) -> None:
    partial = path.with_name(f".{path.stem}.partial.keras")
    model.save(partial)
    os.replace(partial, path)


def _save_best_model(model: ClinicalNERModel, path: Path) -> None:
    """Save the weights without the optimizer state (a third of the size)."""
    inference_model = ClinicalNERModel.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    _save_keras_atomically(inference_model, path)


def _write_text_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _save_checkpoint(model: keras.Model, checkpoint_dir: Path, state: dict) -> None:
    """Save the epoch's model, then commit it by naming it in ``state.json``.

    The state file is the one place a checkpoint becomes real: a crash before
    it is replaced leaves the previous epoch's state and model, a crash after
    leaves the new ones, never a model of one epoch with the state of another.
    """
    model_name = f"model-epoch{state['epoch']}.keras"
    _save_keras_atomically(model, checkpoint_dir / model_name)
    _write_text_atomically(checkpoint_dir / STATE_FILE,
                           json.dumps({**state, "checkpoint_model": model_name}, indent=1) + "\n")
    for old in checkpoint_dir.glob("model-epoch*.keras"):
        if old.name != model_name:
            old.unlink()


def _plot_curve(history: list[dict], path: Path, emit: Callable[[str], None]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        emit("matplotlib is not installed (pip install 'clinical-ner[train]'): "
             f"no {CURVE_FILE}")
        return
    epochs = [entry["epoch"] for entry in history]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [entry["loss"] for entry in history], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss (CRF NLL per sentence)", color="tab:blue")
    if any(entry.get("dev_f1") is not None for entry in history):
        f1_axis = loss_axis.twinx()
        f1_axis.plot(epochs, [entry.get("dev_f1") for entry in history], "s-", color="tab:red")
        f1_axis.set_ylabel("dev exact micro F1", color="tab:red")
    figure.tight_layout()
    partial = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    os.replace(partial, path)


def _build_new_model(config: NERConfig, sentences: list[Sentence], tags: list[str],
                     emit: Callable[[str], None]) -> tuple[ClinicalNERModel, Vocabulary]:
    embedding_words, vectors = None, None
    if config.embeddings:
        embedding_words, vectors = load_embedding_files(config.embedding_files,
                                                        config.embeddings_format)
    vocab = Vocabulary.build((s.tokens for s in sentences), tags, embedding_words,
                             config.min_word_count)
    vocab, _, words_in_use = vocab.training_words_first(s.tokens for s in sentences)
    word_dim = vectors.shape[1] if vectors is not None else config.word_dim
    model = ClinicalNERModel.from_settings(config, vocab, word_dim, words_in_use)
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


def _fine_tuning_model(base: ClinicalNER, config: NERConfig, sentences: list[Sentence],
                       tags: list[str], emit: Callable[[str], None]
                       ) -> tuple[ClinicalNERModel, Vocabulary]:
    # The base model's words, reordered so that the new data's words are the
    # trainable ones (the base model split its table by its own data).
    vocab, order, words_in_use = Vocabulary(
        words=base.vocab.words, chars=base.vocab.chars, tags=tags
    ).training_words_first(s.tokens for s in sentences)
    model = ClinicalNERModel.from_settings(config, vocab, base.model.word_dim,
                                           words_in_use)
    model.get_layer("word_embedding").set_table(
        base.model.get_layer("word_embedding").table()[order])
    new_layers = ("emissions", "crf") if tags != base.vocab.tags else ()
    for layer in model.layers:
        if layer.weights and layer.name not in new_layers + ("word_embedding",):
            layer.set_weights(base.model.get_layer(layer.name).get_weights())
    if new_layers:
        emit("the label set differs from the base model's "
             f"({', '.join(base.vocab.tags)} -> {', '.join(tags)}): the output layer and the "
             "CRF are re-initialised; the embeddings, char-CNN and BiLSTM are kept")
    return model, vocab


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


def train(
    train_path: str | Path | Sequence[str | Path],
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
) -> TrainingResult:
    """Train a model and write its directory to ``output``.

    ``train_path`` is one corpus or a list of them, read each in its own
    format and trained on together (for instance train and dev, to fit the
    final model on all the labelled data for the number of epochs that a
    run with dev chose). Without ``dev_path`` there is no early stopping and
    the last epoch is the model kept.
    ``resume`` continues ``output`` from its last completed epoch with the
    saved configuration (``config.epochs`` may raise the epoch budget).
    ``init_from`` starts from an existing model directory (fine-tuning); if
    the new data has other labels, the output layer and CRF are re-initialised.
    """
    emit = emit or (lambda message: print(message, file=sys.stderr, flush=True))
    output = Path(output)
    checkpoint_dir = output / CHECKPOINT_DIR
    if resume and init_from:
        raise ConfigError("--resume and --init-from cannot be combined")
    if resume:
        if not (checkpoint_dir / STATE_FILE).is_file():
            raise ClinicalNERError(f"{output}: nothing to resume (no {CHECKPOINT_DIR}/{STATE_FILE})")
        saved = NERConfig.load(output)
        config = saved.replace(epochs=config.epochs) if config is not None else saved
    elif (output / MODEL_FILE).exists() or (checkpoint_dir / STATE_FILE).exists():
        raise ClinicalNERError(
            f"{output} already holds a model; use --resume to continue it or another --output")
    config = config or NERConfig()

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    def read(path: str | Path) -> Corpus:
        corpus = load_corpus(path, data_format, label_map=label_map, skip_invalid=skip_invalid)
        report_skipped(corpus, str(path), emit)
        return corpus

    train_paths = [train_path] if isinstance(train_path, (str, Path)) else list(train_path)
    if not train_paths:
        raise ConfigError("no training data given")
    train_sentences: list[Sentence] = []
    train_labels: set[str] = set()
    for path in train_paths:
        corpus = read(path)
        sentences = corpus_sentences(corpus)
        if not sentences:
            raise ClinicalNERError(f"{path}: no sentences to train on")
        train_sentences.extend(sentences)
        train_labels.update(corpus.labels)
    dev_sentences: list[Sentence] = []
    if dev_path is not None:
        dev_corpus = read(dev_path)
        dev_sentences = corpus_sentences(dev_corpus)
        unseen = sorted(set(dev_corpus.labels) - train_labels)
        if unseen:
            emit(f"warning: dev labels never seen in training: {', '.join(unseen)}")

    state = {"epoch": 0, "best_f1": None, "best_epoch": 0, "wait": 0, "history": []}
    if resume:
        state = json.loads((checkpoint_dir / STATE_FILE).read_text(encoding="utf-8"))
        vocab = Vocabulary.load(output)
        model = keras.saving.load_model(checkpoint_dir / state["checkpoint_model"],
                                        safe_mode=True)
        emit(f"resuming {output} after epoch {state['epoch']}")
    else:
        tags = tag_inventory(sorted(train_labels), config.tag_scheme)
        if init_from is not None:
            base = ClinicalNER.load(init_from)
            changed = [name for name in ARCHITECTURE_SETTINGS
                       if getattr(config, name) != getattr(base.config, name)]
            if changed:
                raise ConfigError(
                    f"fine-tuning keeps the base model's architecture; these settings differ "
                    f"from {init_from}: {', '.join(changed)}")
            model, vocab = _fine_tuning_model(base, config, train_sentences, tags, emit)
        else:
            model, vocab = _build_new_model(config, train_sentences, tags, emit)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.clip_norm),
            jit_compile=False,
        )
        output.mkdir(parents=True, exist_ok=True)
        checkpoint_dir.mkdir(exist_ok=True)
        config.save(output)
        vocab.save(output)

    featurizer = Featurizer(vocab.words, vocab.chars, config.max_word_length)
    train_tags = encode_tags(train_sentences, vocab.tags, config.tag_scheme)
    train_tokens = sum(len(s.tokens) for s in train_sentences)
    ner = ClinicalNER(model, vocab, config)
    stopped_early = False
    for epoch in range(state["epoch"], config.epochs):
        if dev_sentences and state["wait"] >= config.patience:
            stopped_early = True
            break
        # NerDL's decay: lr / (1 + decay * epoch), set per epoch so that a
        # resumed run uses exactly the rate it would have used.
        model.optimizer.learning_rate = config.learning_rate / (1 + config.lr_decay * epoch)
        reseed_dropout(model, config.seed, epoch)
        dataset = training_dataset(train_sentences, train_tags, featurizer, config.batch_size,
                                   config.use_casing, shuffle_seed=config.seed + epoch,
                                   word_dropout=config.word_dropout,
                                   bucket_boundaries=config.bucket_boundaries)
        emit(f"epoch {epoch + 1}/{config.epochs}")
        started = time.perf_counter()
        with warnings.catch_warnings():
            # Keras warns when a dataset of unknown length ends; ours always does.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(dataset, epochs=1, shuffle=False, verbose=1 if progress else 0)
        train_seconds = time.perf_counter() - started
        entry = {
            "epoch": epoch + 1,
            "loss": float(history.history["loss"][-1]),
            "learning_rate": float(model.optimizer.learning_rate),
            "train_seconds": round(train_seconds, 3),
            "train_tokens_per_second": round(train_tokens / train_seconds, 1),
        }
        if dev_sentences:
            started = time.perf_counter()
            micro = evaluate_sentences(ner, dev_sentences)["exact"]["micro"]
            entry.update(dev_precision=micro["precision"], dev_recall=micro["recall"],
                         dev_f1=micro["f1"], dev_seconds=round(time.perf_counter() - started, 3))
            improved = state["best_f1"] is None or micro["f1"] > state["best_f1"]
        else:
            improved = True
        if improved:
            state.update(best_f1=entry.get("dev_f1"), best_epoch=epoch + 1, wait=0)
            _save_best_model(model, output / MODEL_FILE)
        else:
            state["wait"] += 1
        entry["best"] = improved
        state["epoch"] = epoch + 1
        state["history"].append(entry)
        _save_checkpoint(model, checkpoint_dir, state)
        _write_text_atomically(output / LOG_FILE,
                               "".join(json.dumps(item) + "\n" for item in state["history"]))
        _plot_curve(state["history"], output / CURVE_FILE, emit)
        dev_text = (f" dev P {entry['dev_precision']:.4f} R {entry['dev_recall']:.4f} "
                    f"F1 {entry['dev_f1']:.4f}" if dev_sentences else "")
        emit(f"epoch {epoch + 1}: loss {entry['loss']:.4f}{dev_text} "
             f"({train_seconds:.1f} s, {entry['train_tokens_per_second']:.0f} tokens/s)"
             + (" *best*" if improved else ""))
    if stopped_early:
        emit(f"stopped early: no dev F1 gain in the last {config.patience} epochs")
    record_training(output, train_paths, dev_path, data_format, label_map, skip_invalid)
    emit(f"best epoch {state['best_epoch']}"
         + (f" (dev F1 {state['best_f1']:.4f})" if state["best_f1"] is not None else "")
         + f"; model in {output}")
    return TrainingResult(output=output, best_epoch=state["best_epoch"],
                          best_dev_f1=state["best_f1"], epochs_completed=state["epoch"],
                          stopped_early=stopped_early)
