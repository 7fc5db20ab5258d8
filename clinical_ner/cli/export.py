"""clinical-ner export: write a SavedModel for TensorFlow Serving, or a LiteRT export."""
from __future__ import annotations

import argparse
import sys

from clinical_ner.cli.common import model_path, options_named, unwind_on_sigterm
from clinical_ner.errors import check_output_folder

NAME = "export"
HELP = "write a SavedModel for TensorFlow Serving, or a LiteRT export for the lean runtime"

FORMATS = ("savedmodel", "litert")
WEIGHTS = ("float32", "float16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path,
                        help="model directory, or the bundled model's name: clinical")
    parser.add_argument("--output", required=True,
                        help="savedmodel: model base path, e.g. models/clinical_ner; "
                             "litert: a new folder")
    parser.add_argument("--format", default="savedmodel", choices=FORMATS,
                        help="savedmodel (default): a numbered version for TF Serving; "
                             "litert: a .tflite network and its data, which "
                             "ClinicalNER.load and 'predict' run without TensorFlow")
    parser.add_argument("--version", type=int,
                        help="savedmodel: version number (default: highest existing + 1)")
    parser.add_argument("--weights", default="float32", choices=WEIGHTS,
                        help="litert: weight type (float16 halves the file; int8 quarters it "
                             "and changes some predictions; see docs/design/litert.md)")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.artifacts.keras_model import is_model_directory, is_unfinished_training
    from clinical_ner.errors import ConfigError

    check_output_folder("--output", args.output)
    if is_model_directory(args.model) and is_unfinished_training(args.model):
        # Not refused: the best epoch so far may be what the user wants to try. (Without a
        # model yet, loading it says so.)
        print(f"warning: {args.model}: a training run that has not finished (in progress, or "
              "stopped): this exports its best epoch so far; export again once it has "
              "finished, or resume it with 'clinical-ner train ... --resume'", file=sys.stderr)
    # So that the half-written export's folder is deleted (.export-N-* in a base path).
    unwind_on_sigterm()
    if args.format == "litert":
        if args.version is not None:
            raise ConfigError("--version applies to --format savedmodel only")
        from clinical_ner.export.litert import export_litert

        print(export_litert(args.model, args.output, args.weights))
        return 0
    if args.weights != "float32":
        raise ConfigError("--weights applies to --format litert only")
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.annotators.load import check_keras_model_directory
    from clinical_ner.export.saved_model import check_base_path

    check_keras_model_directory(args.model, "be exported again")
    with options_named(args, ("version",)):
        # Before the model loads (seconds).
        check_base_path(args.output, args.version)
        print(KerasAnnotator.load(args.model).export(args.output, args.version))
    return 0
