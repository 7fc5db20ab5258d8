"""The ``clinical-ner`` command: train, evaluate, predict, export, serve, client."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from clinical_ner.errors import ClinicalNERError, ConfigError

FORMATS = ("auto", "conll", "i2b2", "brat")


def _read_label_map(value: str | None) -> dict[str, str | None] | None:
    """``--label-map``: a JSON file, or ``Type=label,Other=label`` (``Type=`` drops a type)."""
    if value is None:
        return None
    if value.endswith(".json"):
        try:
            mapping = json.loads(Path(value).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"--label-map {value}: {error}") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"--label-map {value}: expected a JSON object")
        return {key: (label or None) for key, label in mapping.items()}
    mapping = {}
    for item in value.split(","):
        source, separator, label = item.partition("=")
        if not separator or not source:
            raise ConfigError(f"--label-map: {item!r} is not TYPE=LABEL")
        mapping[source.strip()] = label.strip() or None
    return mapping


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="data format; auto: a folder with txt/ and concept/ (or .txt + "
                             ".con files) is i2b2, .txt + .ann is brat, a file is CoNLL")
    parser.add_argument("--label-map", metavar="JSON_OR_PAIRS",
                        help="map source labels, e.g. 'Sign_symptom=problem,Medication="
                             "treatment' (brat: unmapped types are ignored)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid sentences/annotations and list them, instead of "
                             "stopping at the first")


def _add_distribution_options(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.distribute import DEFAULT_CONNECT_TIMEOUT_S, DISTRIBUTE_MODES

    parser.add_argument("--distribute", choices=DISTRIBUTE_MODES, default="none",
                        help="mirrored: every local GPU (or --cpu-devices) in this process; "
                             "multi-worker: one process per machine, configured by TF_CONFIG. "
                             "--batch-size stays the global batch")
    parser.add_argument("--cpu-devices", type=int, metavar="N",
                        help="with --distribute mirrored: split the CPU into N logical devices "
                             "(tests and benchmarks; no speed-up)")
    parser.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S,
                        metavar="SECONDS",
                        help="multi-worker: give up (exit status 3) if the other workers are "
                             f"not all up within this time (default {DEFAULT_CONNECT_TIMEOUT_S})")


def _train(args: argparse.Namespace) -> None:
    from clinical_ner.config import NERConfig
    from clinical_ner.trainer import train

    values = {}
    if args.config:
        values = NERConfig.from_file(args.config).to_dict()
    if args.init_from and not args.config:
        # Fine-tuning starts from the base model's settings.
        values = NERConfig.load(args.init_from).to_dict()
    for option, name in (("epochs", "epochs"), ("batch_size", "batch_size"), ("seed", "seed"),
                         ("embeddings", "embeddings"),
                         ("embeddings_format", "embeddings_format")):
        if getattr(args, option) is not None:
            values[name] = getattr(args, option)
    if args.resume and set(values) - {"epochs"}:
        raise ConfigError("--resume continues with the saved configuration; only --epochs "
                          "may change")
    if values.get("embeddings"):
        values["embeddings"] = str(Path(values["embeddings"]).resolve())
    config = NERConfig.from_dict(values) if values or not args.resume else None
    train(args.train, args.output, dev_path=args.dev, config=config, data_format=args.format,
          resume=args.resume, init_from=args.init_from,
          label_map=_read_label_map(args.label_map), skip_invalid=args.skip_invalid,
          progress=not args.quiet, distribute=args.distribute, cpu_devices=args.cpu_devices,
          connect_timeout_s=args.connect_timeout)


def _evaluate(args: argparse.Namespace) -> None:
    from clinical_ner.formats import load_corpus
    from clinical_ner.pipeline import ClinicalNER
    from clinical_ner.scorer import format_report
    from clinical_ner.evaluation import corpus_sentences, evaluate_sentences, report_skipped

    ner = ClinicalNER.load(args.model)
    corpus = load_corpus(args.data, args.format, label_map=_read_label_map(args.label_map),
                         skip_invalid=args.skip_invalid)
    report_skipped(corpus, args.data, lambda message: print(message, file=sys.stderr))
    report = evaluate_sentences(ner, corpus_sentences(corpus))
    print(format_report(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _predict(args: argparse.Namespace) -> None:
    from clinical_ner.documents import read_documents, write_json_line
    from clinical_ner.formats.conll import write_conll
    from clinical_ner.formats.i2b2 import entities_to_con_lines
    from clinical_ner.pipeline import ClinicalNER

    ner = ClinicalNER.load(args.model)
    documents = read_documents(args.texts, args.input)
    if args.output_format == "i2b2":
        if not args.output:
            raise ConfigError("--output-format i2b2 needs --output DIR (one .con per document)")
        out_dir = Path(args.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        for (name, text), entities in zip(documents, ner.annotate([t for _, t in documents])):
            lines = entities_to_con_lines(text, entities)
            (out_dir / f"{name}.con").write_text("".join(f"{line}\n" for line in lines),
                                                 encoding="utf-8")
            if not args.input or name.startswith("text-"):
                (out_dir / f"{name}.txt").write_text(text, encoding="utf-8")
        return
    handle = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.output_format == "conll":
            from clinical_ner.corpus import Document, Sentence
            from clinical_ner.text import split_sentences

            conll_documents = []
            for name, text in documents:
                tokens = [[t.text for t in s]
                          for s in split_sentences(text, ner.config.max_sentence_tokens)]
                tagged = ner.tag(tokens)
                conll_documents.append(Document(name=name, text=text, sentences=[
                    Sentence(tokens=words, tags=tags)
                    for words, (tags, _) in zip(tokens, tagged)]))
            write_conll(handle, conll_documents)
        else:
            for (_, text), entities in zip(documents, ner.annotate([t for _, t in documents])):
                write_json_line(handle, text, entities)
    finally:
        if handle is not sys.stdout:
            handle.close()


def _export(args: argparse.Namespace) -> None:
    from clinical_ner.pipeline import ClinicalNER

    print(ClinicalNER.load(args.model).export(args.output, args.version))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinical-ner",
        description="Clinical named-entity recognition: char-CNN + BiLSTM + CRF (Keras 3), "
                    "served by TensorFlow Serving.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or fine-tune, or resume) a model")
    train.add_argument("--train", required=True, action="append",
                       help="training data (file or folder); repeat it to train on several "
                            "together, e.g. train and dev for the final model")
    train.add_argument("--dev", help="dev data for model selection and early stopping")
    train.add_argument("--output", required=True, help="model directory to write")
    train.add_argument("--embeddings", help="pretrained word vectors (GloVe/word2vec/fastText)")
    train.add_argument("--embeddings-format", choices=("auto", "text", "word2vec-binary"))
    train.add_argument("--config", help="JSON file of hyperparameters (see NERConfig)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in --output from its last epoch")
    train.add_argument("--init-from", metavar="MODEL_DIR",
                       help="fine-tune an existing model (new labels re-initialise the output "
                            "layer and CRF)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_distribution_options(train)
    _add_data_options(train)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="score a model on annotated data")
    evaluate.add_argument("model", help="model directory")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--json", help="write the scores as JSON to this file")
    _add_data_options(evaluate)
    evaluate.set_defaults(func=_evaluate)

    predict = commands.add_parser("predict", help="annotate raw text")
    predict.add_argument("model", help="model directory")
    predict.add_argument("texts", nargs="*", help="texts to annotate (one document each)")
    predict.add_argument("--input", nargs="+", metavar="FILE",
                         help="UTF-8 text files, one document each")
    predict.add_argument("--format", dest="output_format", default="jsonl",
                         choices=("jsonl", "conll", "i2b2"),
                         help="jsonl (default), conll (tokens and tags), or i2b2 (.con files)")
    predict.add_argument("--output", help="output file (jsonl, conll) or folder (i2b2)")
    predict.set_defaults(func=_predict)

    export = commands.add_parser("export", help="write a SavedModel for TensorFlow Serving")
    export.add_argument("model", help="model directory")
    export.add_argument("--output", required=True, help="model base path, e.g. models/clinical_ner")
    export.add_argument("--version", type=int,
                        help="version number (default: highest existing + 1)")
    export.set_defaults(func=_export)

    from clinical_ner.serving import client, server

    server.register_cli(commands)
    client.register_cli(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except ClinicalNERError as error:
        print(f"clinical-ner {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
