"""Every setting, with its one default, saved in every model directory as ``config.json``.

This is the only place a setting's default is written. The model
(:meth:`clinical_ner.model.network.ClinicalNERModel.from_settings`), the training
pipeline and the inference graph take their values from a :class:`NERConfig`
and have no defaults of their own.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from clinical_ner.artifacts.keras_model import CONFIG_FILE
from clinical_ner.errors import (
    ConfigError, ModelError, check_choice, check_integer, check_number, shown_value,
)
from clinical_ner.text.tags import MODEL_SCHEMES
from clinical_ner.untrusted_json import read_json_file

# Settings that shape the weights; a fine-tuned model must keep its base's. Not
# min_word_count: fine-tuning keeps the base's words, and it says which of the new data's
# words join them (more or fewer of the notes' words, names among them, in vocab.json).
ARCHITECTURE_SETTINGS = (
    "tag_scheme", "max_sentence_tokens", "embeddings", "embeddings_format", "word_dim",
    "char_dim", "char_filters", "char_kernel_size", "max_word_length",
    "use_casing", "casing_dim", "lstm_units", "assertion_head", "assertion_lstm_units",
)
#: The settings a resumed run (``--resume``) may be given other values of: the epoch
#: budget, and the embeddings' path, which resuming does not read (the word table is in
#: the checkpoint) and which may differ on another machine of a cluster.
RESUME_MAY_CHANGE = ("epochs", "embeddings")
#: How the assertion output reads the sentence (docs/design/assertions.md):
#: from the tagger's BiLSTM states, or from a BiLSTM of its own over the
#: same token features.
ASSERTION_HEADS = ("shared", "lstm")
#: How the assertion loss weighs each class (docs/design/assertions.md): alike,
#: or by the inverse of its share of the training problems (sklearn's
#: "balanced"), or by that share's inverse square root.
ASSERTION_CLASS_WEIGHTS = ("none", "sqrt-balanced", "balanced")
#: Settings that size a layer's weights, and their largest value: far above any useful
#: size (the defaults are 8 to 100), and a typo of 1e12 ended training with an internal
#: error (ResourceExhaustedError), as ``clinical-ner vectors --dim`` did.
LAYER_SIZES = ("word_dim", "char_dim", "char_filters", "casing_dim", "lstm_units",
               "assertion_lstm_units")
MAX_LAYER_SIZE = 10_000
#: The largest ``inference_chunk_size``, far above any batch's sentence count.
MAX_INFERENCE_CHUNK_SIZE = 2**30
#: How pretrained vectors files are read (clinical_ner.vectors.reader): ``auto`` is
#: word2vec binary for a ``.bin`` file, text otherwise.
EMBEDDINGS_FORMATS = ("auto", "text", "word2vec-binary")


@dataclass
class NERConfig:
    """Every setting of a model: how it is built, trained and run.

    Defaults follow Spark NLP's NerDL, except the BIOES tags, word dropout and
    the char-CNN's 100 filters, which measured better (README, "The model").
    The runtime settings at the end change speed and memory, not results
    (up to float rounding for ``fused_lstm_max_batch``); they can be edited in
    a model directory's ``config.json`` after training.

    ``--config FILE.json`` overrides any subset of these fields; the
    effective configuration is written into the model directory, so a model
    always loads with the settings it was trained with.
    """

    # Data
    tag_scheme: str = "bioes"  # the CRF's tags: "bio" or "bioes"
    max_sentence_tokens: int = 200
    # Words
    # Path of pretrained vectors, or a list of paths whose vectors are concatenated
    # (clinical_ner.vectors.reader.load_embedding_files), or None.
    embeddings: str | list[str] | None = None
    embeddings_format: str = "auto"  # one of EMBEDDINGS_FORMATS
    word_dim: int = 50  # only used without embeddings (else the vectors' size)
    trainable_embeddings: bool = True
    min_word_count: int = 2
    # Characters and casing
    char_dim: int = 25
    char_filters: int = 100
    char_kernel_size: int = 3
    max_word_length: int = 30
    use_casing: bool = True
    casing_dim: int = 8
    # Sentence encoder and CRF
    lstm_units: int = 100  # per direction
    dropout: float = 0.5
    word_dropout: float = 0.1  # share of training tokens whose word id becomes <unk>
    constrain_transitions: bool = True
    # Assertion output (built only when the training data has assertions)
    assertion_head: str = "shared"  # one of ASSERTION_HEADS
    assertion_lstm_units: int = 50  # per direction, for assertion_head "lstm"
    assertion_loss_weight: float = 1.0  # weight of its cross-entropy next to the CRF loss
    # False: the assertion loss trains the head's own layers only, so the tagger
    # trains exactly as without assertions (docs/design/assertions.md).
    assertion_trains_tagger: bool = True
    assertion_class_weights: str = "none"  # one of ASSERTION_CLASS_WEIGHTS
    # Share of the training problems asserted present that get a copy of their
    # sentence with a negation or hedge cue beside them (clinical_ner.training.assertion_cues).
    assertion_cue_copies: float = 0.0
    # Optimisation
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 0.001
    lr_decay: float = 0.005  # lr / (1 + lr_decay * epoch), as NerDL
    clip_norm: float = 5.0
    patience: int = 5
    # 0: off; else the momentum of an exponential moving average of the weights,
    # updated every step: dev scores, the best model and its exports use the
    # average, training continues from the raw weights (docs/guide/settings.md).
    weights_ema: float = 0.0
    seed: int = 42
    # Training pipeline: sentences are batched with others of similar length
    # (upper bounds of the length buckets), so that batches carry little
    # padding (padding costs LSTM and CRF steps).
    bucket_boundaries: tuple[int, ...] = (8, 12, 16, 20, 25, 30, 40, 50, 64, 80, 100, 128, 160)
    # Runtime (inference)
    inference_chunk_size: int = 128  # sentences per LSTM/CRF call inside the graph
    fused_lstm_max_batch: int = 4  # batches up to this size run the fused BlockLSTM; 0: never
    annotate_batch_size: int = 256  # texts per graph call in Annotator.annotate
    annotate_max_batch_characters: int = 100_000  # characters per such call
    tag_batch_size: int = 64  # sentences per graph call in Annotator.tag

    def __post_init__(self) -> None:
        # Each plain setting's JSON type first: "5" for patience would fail
        # later as an internal error, and "false" for a flag would be true.
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            expected = _PLAIN_TYPES.get(setting.type)
            if expected is not None and (not isinstance(value, expected[0]) or (
                    isinstance(value, bool) and setting.type != "bool")):
                raise ConfigError(f"{setting.name} must be {expected[1]}, got {shown_value(value)}")
        if isinstance(self.embeddings, (list, tuple)):
            if not self.embeddings or not all(isinstance(p, str) and p for p in self.embeddings):
                raise ConfigError("embeddings must be a path, a non-empty list of paths or null, "
                                  f"got {self.embeddings!r}")
            # One file keeps the string form that config.json has always had.
            self.embeddings = (self.embeddings[0] if len(self.embeddings) == 1
                               else list(self.embeddings))
        elif self.embeddings is not None and not (isinstance(self.embeddings, str)
                                                  and self.embeddings):
            raise ConfigError("embeddings must be a path, a non-empty list of paths or null, "
                              f"got {self.embeddings!r}")
        check_choice("embeddings_format", self.embeddings_format, EMBEDDINGS_FORMATS)
        check_choice("tag_scheme", self.tag_scheme, MODEL_SCHEMES)
        for name in ("max_sentence_tokens", "max_word_length", "epochs", "batch_size",
                     "char_kernel_size", "min_word_count", "annotate_batch_size",
                     "annotate_max_batch_characters", "tag_batch_size"):
            check_integer(name, getattr(self, name), minimum=1)
        for name in LAYER_SIZES:
            check_integer(name, getattr(self, name), minimum=1, maximum=MAX_LAYER_SIZE)
        check_integer("fused_lstm_max_batch", self.fused_lstm_max_batch, minimum=0)
        # The inference graph counts chunks in int32 (sentences + chunk size - 1): near 2**31
        # that overflowed, an internal error at the first dev scoring or annotation.
        check_integer("inference_chunk_size", self.inference_chunk_size,
                      maximum=MAX_INFERENCE_CHUNK_SIZE)
        # NumPy's and TensorFlow's seeds are unsigned 32-bit.
        check_integer("seed", self.seed, minimum=0, maximum=2**32 - 1)
        if not isinstance(self.bucket_boundaries, (list, tuple)):
            raise ConfigError(
                "bucket_boundaries must be a list of integers, "
                f"got {shown_value(self.bucket_boundaries)}")
        # JSON has no tuples; a tuple keeps the setting immutable and comparable.
        self.bucket_boundaries = tuple(self.bucket_boundaries)
        for value in self.bucket_boundaries:
            check_integer("bucket_boundaries", value, minimum=1)
        if list(self.bucket_boundaries) != sorted(set(self.bucket_boundaries)):
            raise ConfigError(
                f"bucket_boundaries must be increasing, got {list(self.bucket_boundaries)}")
        for name in ("dropout", "word_dropout", "weights_ema"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        # NaN passed the comparisons these replace: the weights became NaN in the
        # first step and the run ended as a success, with a model that finds nothing.
        for name in ("learning_rate", "clip_norm", "assertion_loss_weight"):
            check_number(name, getattr(self, name))
        check_number("lr_decay", self.lr_decay, allow_zero=True)
        check_choice("assertion_head", self.assertion_head, ASSERTION_HEADS)
        check_choice("assertion_class_weights", self.assertion_class_weights,
                     ASSERTION_CLASS_WEIGHTS)
        if not 0.0 <= self.assertion_cue_copies <= 1.0:
            raise ConfigError(
                f"assertion_cue_copies must be in [0, 1], got {self.assertion_cue_copies!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience!r}")

    @property
    def embedding_files(self) -> list[str]:
        """The pretrained vectors files, in order (``[]`` without embeddings)."""
        if self.embeddings is None:
            return []
        return [self.embeddings] if isinstance(self.embeddings, str) else list(self.embeddings)

    @classmethod
    def from_dict(cls, values: dict, source: str = "configuration") -> "NERConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except ConfigError as error:
            # Say which file holds the bad value (a model's config.json may be
            # edited by hand for the runtime settings).
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_file(cls, path: str | Path, base: "NERConfig | None" = None) -> "NERConfig":
        """The settings of a JSON file (``--config``) over ``base``'s (the defaults if ``None``).

        ``base`` is the model that ``--init-from`` fine-tunes: a file that sets
        only ``epochs`` keeps the base's architecture.
        """
        values = _read_settings(path)
        return cls.from_dict({**(base.to_dict() if base else {}), **values}, source=str(path))

    def replace(self, **changes) -> "NERConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as ``config.json`` holds them (JSON types: lists, not tuples)."""
        values = dataclasses.asdict(self)
        values["bucket_boundaries"] = list(self.bucket_boundaries)
        return values

    def save(self, directory: str | Path) -> None:
        (Path(directory) / CONFIG_FILE).write_text(
            json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: str | Path) -> "NERConfig":
        """The configuration a model directory was trained with.

        A setting its version did not have yet takes the value that
        reproduces how it was trained, so that ``--resume`` continues the
        same run and ``--init-from`` starts from the same settings. A missing
        file is a :class:`~clinical_ner.errors.ModelError` (the model is
        incomplete), and so is one that is no JSON object of settings (it is
        damaged); a bad value is a :class:`~clinical_ner.errors.ConfigError`, as
        in a ``--config`` file (the runtime settings may be edited by hand).
        """
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise ModelError(f"{path}: missing, so the model in {directory} cannot be used; "
                             "copy the whole model folder again, or train or export it again")
        values = _read_settings(path, ModelError,
                                "copy the whole model folder again, or train or export it again")
        return cls.from_dict({**SETTINGS_ADDED_LATER, **values}, source=str(path))


#: The JSON type a setting annotated with a plain type must have, and its name
#: for errors (a float setting takes an integer too; ``true`` is no number).
_PLAIN_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"),
                "bool": (bool, "true or false"), "str": (str, "a string")}


#: Settings added in a later version, and the value that means "as before".
#: The settings added after 0.2.4 (``bucket_boundaries`` and the runtime
#: ones) were constants in the code before, with the values that are now their
#: defaults, so a file without them takes the defaults.
SETTINGS_ADDED_LATER = {"word_dropout": 0.0}  # 0.2.1


def _read_settings(path: str | Path, error: type[Exception] = ConfigError,
                   if_missing: str = "give the path of a JSON file of settings") -> dict:
    # error: ConfigError for a --config file, ModelError for a model's own config.json.
    # A setting given twice would take its last value without a word.
    values = read_json_file(Path(path), error, if_missing, unique_keys=True)
    if not isinstance(values, dict):
        raise error(f"{path}: expected a JSON object of settings")
    return values


def changed_on_resume(given: NERConfig, saved: NERConfig) -> list[str]:
    """The settings of ``given`` that a run resumed from ``saved`` may not change.

    Every setting but :data:`RESUME_MAY_CHANGE`, in the order of the fields;
    of the embeddings only their path may change (it is not read on resume),
    not how many files there are (none, for a run without vectors).
    """
    given_values, saved_values = given.to_dict(), saved.to_dict()
    return [name for name in saved_values
            if (name == "embeddings"
                and _file_count(given.embeddings) != _file_count(saved.embeddings))
            or (name not in RESUME_MAY_CHANGE and given_values.get(name) != saved_values[name])]


def resume_change_error(what: str, config_path: Path | str) -> ConfigError:
    """The refusal of a resumed run whose ``what`` (a setting or option, as the
    user gave it, with its values if known) differs from the saved ``config_path``."""
    return ConfigError(f"--resume continues with the saved configuration, but {what} differs "
                       f"from {config_path}; leave it out (only the epochs and the embeddings' "
                       "path may change)")


def _file_count(paths: str | list[str] | None) -> int:
    if not paths:
        return 0
    return 1 if isinstance(paths, str) else len(paths)
