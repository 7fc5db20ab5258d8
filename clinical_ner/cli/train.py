"""clinical-ner train: train, fine-tune or resume a model."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from clinical_ner.cli.common import (
    GivenOnce, add_annotated_data_options, model_path, non_empty, read_assertion_map,
    read_label_map,
)
from clinical_ner.artifacts.keras_model import CONFIG_FILE
from clinical_ner.config import (
    EMBEDDINGS_FORMATS, NERConfig, changed_on_resume, resume_change_error,
)
from clinical_ner.errors import ConfigError, check_output_folder

NAME = "train"
HELP = "train (or fine-tune, or resume) a model"

#: Options that override a field of the configuration.
CONFIG_OPTIONS = ("epochs", "batch_size", "seed", "embeddings", "embeddings_format")

# --help gives the defaults of NERConfig, where they live.
_DEFAULTS = NERConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", action="append", type=non_empty,
                        help="training data (file or folder); repeat it to train on several "
                             "together, e.g. train and dev for the final model")
    parser.add_argument("--dev", action=GivenOnce, type=non_empty,
                        help="dev data for model selection and early stopping")
    parser.add_argument("--corpus", metavar="FILE.toml", action="append", type=non_empty,
                        help="instead of --train/--dev/--label-map: a corpus file listing "
                             "several corpora, each with its label map, how completely it "
                             "annotates each label, its weight and dev data "
                             "(docs/guide/multi-corpus.md)")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--embeddings", action="append", metavar="FILE", type=non_empty,
                        help="pretrained word vectors (GloVe/word2vec/fastText); repeat it to "
                             "concatenate several files' vectors (zeros where a file lacks a "
                             "word)")
    parser.add_argument("--embeddings-format", choices=EMBEDDINGS_FORMATS,
                        help="how to read --embeddings (default: the config's, "
                             f"{_DEFAULTS.embeddings_format}; auto: word2vec binary for .bin "
                             "files, else text)")
    parser.add_argument("--config", action=GivenOnce, type=non_empty,
                        help="JSON file of hyperparameters (see NERConfig)")
    parser.add_argument("--epochs", type=int,
                        help=f"most epochs to train (default: the config's, {_DEFAULTS.epochs})")
    parser.add_argument("--batch-size", type=int,
                        help="sentences per training step (default: the config's, "
                             f"{_DEFAULTS.batch_size})")
    parser.add_argument("--seed", type=int,
                        help="random seed of the whole run (default: the config's, "
                             f"{_DEFAULTS.seed})")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output from its last epoch")
    parser.add_argument("--init-from", metavar="MODEL_DIR", type=model_path,
                        help="fine-tune an existing model, or the bundled one: clinical (the "
                             "data's frequent new words and new labels are added; the tags "
                             "both have keep their output weights)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_annotated_data_options(parser)
    add_distribution_options(parser)


def add_distribution_options(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.training.distribute import DEFAULT_CONNECT_TIMEOUT_S, DISTRIBUTE_MODES

    parser.add_argument("--distribute", choices=DISTRIBUTE_MODES, default="none",
                        help="mirrored: every local GPU (or --cpu-devices) in this process; "
                             "multi-worker: one process per machine, configured by TF_CONFIG. "
                             "--batch-size stays the global batch")
    parser.add_argument("--cpu-devices", type=int, metavar="N",
                        help="with --distribute mirrored: split the CPU into N logical devices "
                             "(tests and benchmarks; no speed-up)")
    parser.add_argument("--connect-timeout", type=float,
                        metavar="SECONDS",
                        help="multi-worker: give up (exit status 5) if the other workers are "
                             f"not all up within this time (default {DEFAULT_CONNECT_TIMEOUT_S:g})")


def absolute_paths(paths: str | list[str]) -> str | list[str]:
    """Absolute embeddings path(s), so that a saved config.json works from any directory."""
    if isinstance(paths, str):
        return str(Path(paths).resolve())
    return [str(Path(path).resolve()) for path in paths]


def run(args: argparse.Namespace) -> int:
    from clinical_ner.training.trainer import train

    check_output_folder("--output", args.output)
    corpora = None
    if args.corpus is not None:
        from clinical_ner.formats.corpora import CORPUS_FILE_REPLACES, read_corpus_file

        if (args.train or args.dev or args.label_map or args.assertion_map
                or args.input_format != "auto"):
            raise ConfigError(CORPUS_FILE_REPLACES)
        if len(args.corpus) > 1:
            # One file lists every corpus; a second would otherwise silently replace the first.
            raise ConfigError(f"--corpus given {len(args.corpus)} times; give one corpus file "
                              "(it lists every corpus)")
        corpora = read_corpus_file(args.corpus[0])
    elif not args.train:
        raise ConfigError("give training data: --train DATA (repeatable) or --corpus FILE")
    if args.init_from:
        from clinical_ner.annotators.load import check_fine_tunable

        # Before its config.json is read: an export or a data folder is named as such.
        check_fine_tunable(args.init_from)
    options = {name: getattr(args, name) for name in CONFIG_OPTIONS
               if getattr(args, name) is not None}
    for name, value in options.items():
        # Each alone first, so that a bad one is named as typed (--epochs 0), not as a
        # setting of no file ("configuration: epochs ...").
        NERConfig.from_dict({name: value}, source=f"--{name.replace('_', '-')}")
    if args.resume:
        config = _resumed_config(args.config, options, Path(args.output))
    else:
        _check_settings_file_kept(args.config, Path(args.output))
        config = _new_config(args.config, options, args.init_from)
        if args.embeddings_format is not None and not config.embeddings:
            # No vectors to read: the format would be recorded, and used by nothing.
            raise ConfigError("--embeddings-format goes with --embeddings FILE (or the "
                              "--config setting embeddings)")
    train(args.train, args.output, dev_path=args.dev, config=config,
          data_format=args.input_format, resume=args.resume, init_from=args.init_from,
          label_map=read_label_map(args.label_map), skip_invalid=args.skip_invalid,
          assertion_map=read_assertion_map(args.assertion_map),
          progress=not args.quiet, distribute=args.distribute, cpu_devices=args.cpu_devices,
          connect_timeout_s=args.connect_timeout, corpora=corpora)
    return 0


def _check_settings_file_kept(config_file: str | None, output: Path) -> None:
    """Refuse a --config file that is the ``config.json`` a new run writes into --output.

    Training writes every effective setting there, which replaced the user's
    own file (its values kept, its layout and which settings it chose lost).
    A resumed run's ``config.json`` is the run's own, and may be given back.
    """
    written = output / CONFIG_FILE
    if (config_file and os.path.isfile(config_file) and written.is_file()
            and os.path.samefile(config_file, written)):
        raise ConfigError(f"--config {config_file}: the file training writes into --output "
                          f"{output} (every setting of the run), so it would be replaced; "
                          "keep your settings file outside the model folder")


def _new_config(config_file: str | None, options: dict, init_from: str | None) -> NERConfig:
    """The defaults (or, fine-tuning, the base model's settings), then --config's, then options'."""
    base = NERConfig.load(init_from) if init_from else None
    values = {}
    if config_file:
        values = NERConfig.from_file(config_file, base=base).to_dict()
    elif base is not None:
        values = base.to_dict()
    values.update(options)
    # Paths given here are made absolute; one inherited from --init-from's base is
    # kept as recorded, since fine-tuning requires it unchanged (and does not read it).
    inherited = base is not None and values.get("embeddings") == base.embeddings
    if values.get("embeddings") and not inherited:
        values["embeddings"] = absolute_paths(values["embeddings"])
    return NERConfig.from_dict(values)


def _resumed_config(config_file: str | None, options: dict, output: Path) -> NERConfig | None:
    """The saved settings with --config's and the options given (``None``: none given, or
    nothing saved).

    ``--resume`` keeps the saved settings: the --config file applies over
    them, so that only the settings it names are compared; an option or
    setting that repeats one is accepted (a restarted worker runs its first
    command again), one that changes it is named as the user gave it.
    ``--epochs`` may change, and so may ``--embeddings``' path (not read on
    resume; it differs on another machine of a cluster).
    """
    from clinical_ner.training.checkpoints import has_checkpoint

    if not (config_file or options) or not has_checkpoint(output):
        return None  # train() says when there is nothing to resume
    saved = NERConfig.load(output)
    given = NERConfig.from_file(config_file, base=saved) if config_file else saved
    given = NERConfig.from_dict({**given.to_dict(), **options})
    changed = changed_on_resume(given, saved)
    if changed:
        # Named as the user gave it (options win over the --config file).
        name = min(changed, key=lambda name: name not in options)
        where = (f"--{name.replace('_', '-')}" if name in options
                 else f"the --config setting {name!r}")
        raise resume_change_error(where, output / CONFIG_FILE)
    return given
