"""clinical-ner evaluate: score a model on annotated data."""
from __future__ import annotations

import argparse
import json
import sys

from clinical_ner.cli.common import (
    LOADABLE_MODEL, GivenOnce, add_annotated_data_options, check_model_scores_assertions,
    model_path, non_empty, read_assertion_map, read_label_map,
)
from clinical_ner.errors import ConfigError, DataFormatError, check_output_file
from clinical_ner.pretrained import DEFAULT_MODEL

NAME = "evaluate"
HELP = "score a model on annotated data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path,
                        help=f"{LOADABLE_MODEL}: {DEFAULT_MODEL}")
    parser.add_argument("--data", required=True, action=GivenOnce, type=non_empty,
                        help="annotated data to score on: a CoNLL file, or an i2b2 or brat folder")
    parser.add_argument("--json", help="write the scores as JSON to this file")
    parser.add_argument("--corpus", metavar="FILE.toml", type=non_empty,
                        help="read --data as the corpus --corpus-name of this corpus file: its "
                             "format and label map, scoring only the labels it annotates")
    parser.add_argument("--corpus-name", metavar="NAME", help="the corpus of --corpus")
    add_annotated_data_options(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.load import ClinicalNER, check_model_files
    from clinical_ner.evaluation.scorer import format_report
    from clinical_ner.formats.writers import write_output_file
    from clinical_ner.training.dataset import unknown_assertion_classes_note
    from clinical_ner.evaluation.evaluate import (
        check_labels_known, corpus_sentences, evaluate_sentences, has_assertions,
        report_skipped, unknown_labels_note,
    )

    # The model's own files too, a SavedModel's in its version folders: --json
    # MODEL/vocab.json (or BASE/1/saved_model.pb) left a model that no longer loads.
    check_model_files(args.model)  # first: no walk through a folder that is no model
    model_files = ([path for path in args.model.rglob("*") if path.is_file()]
                   if args.model.is_dir() else [])
    # And the maps and corpus file it reads (a --label-map of TYPE=LABEL pairs names no file).
    maps = [path for path in (args.label_map, args.assertion_map, args.corpus) if path]
    check_output_file("--json", args.json, inputs=[args.data, *maps, *model_files])
    data_format, label_map, labels, corpus_assertion_map = _corpus_reading(args)
    ner = ClinicalNER.load(args.model)
    # None for an export that does not record them (before 0.4.0): checked by the scores.
    model_labels = ner.labels
    check_labels_known(labels, model_labels, None if args.corpus is None else (
        lambda label: _corpus_label_source(args, label)))
    assertion_map = (read_assertion_map(args.assertion_map) if args.assertion_map is not None
                     else corpus_assertion_map)
    if args.assertion_map is not None:
        check_model_scores_assertions(args.model, ner.assertion_classes)
    corpus = load_corpus(args.data, data_format, label_map=label_map,
                         skip_invalid=args.skip_invalid, assertion_map=assertion_map)
    if args.assertion_map is not None:  # a corpus's map: checked with its label map
        from clinical_ner.formats.corpora import check_assertion_map_sources

        check_assertion_map_sources(assertion_map, [args.data], data_format, set(corpus.labels),
                                    training=False)
    report_skipped(corpus, args.data, lambda message: print(message, file=sys.stderr))
    sentences = corpus_sentences(corpus)
    if not sentences:
        # Scores of nothing would read as a model that finds nothing.
        raise DataFormatError(args.data, None, "no sentences to score")
    # With a label map (or a corpus's), check_labels_known refused labels the model lacks.
    if labels is None and (note := unknown_labels_note(str(args.data), corpus.labels,
                                                       model_labels)):
        print(note, file=sys.stderr)
    if not ner.assertion_classes and has_assertions(sentences):
        print(f"note: {args.data}: its problems carry assertions, but the model has none: "
              "no assertion scores", file=sys.stderr)
    # Scored as wrong, with no word of why, as labels the model lacks were.
    if (note := unknown_assertion_classes_note(args.data, sentences, ner.assertion_classes)):
        print(note, file=sys.stderr)
    report = evaluate_sentences(ner, sentences, labels=labels)
    if not corpus.labels:
        # A negative set (notes without mentions) measures the false positives; a plain note
        # whose last word is a tag ("..., O"), read as a CoNLL sentence, shows here too.
        print(f"note: {args.data}: no gold entity in its {len(sentences)} sentence(s) (every "
              "token is O): scored as a negative set, each predicted entity a false positive "
              f"({report['exact']['micro']['predicted']} here); recall and F1 are undefined "
              "without gold entities (0 in the scores)", file=sys.stderr)
    print(format_report(report), end="")
    if args.json:
        write_output_file(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _corpus_label_source(args: argparse.Namespace, label: str) -> str:
    """What asks to score ``label``: a corpus's coverage (it may have no label map, and then
    maps nothing)."""
    return (f"{args.corpus}: corpus {args.corpus_name} annotates label {label} (its "
            f"coverage of {label} is not none)")


def _corpus_reading(args: argparse.Namespace
                    ) -> tuple[str, dict | None, list[str] | None, dict | None]:
    """Format, label map, the labels to score (None: all) and, for a corpus of a corpus file,
    its assertion map, of ``--data``."""
    if args.corpus is None:
        if args.corpus_name is not None:
            raise ConfigError("--corpus-name needs --corpus")
        label_map = read_label_map(args.label_map)
        if label_map is None:
            return args.input_format, None, None, None
        from clinical_ner.formats.corpora import check_label_map_sources, mapped_labels

        check_label_map_sources(label_map, [args.data], args.input_format, training=False,
                                skip_invalid=args.skip_invalid)
        return args.input_format, label_map, mapped_labels(label_map), None
    from clinical_ner.formats.corpora import check_label_map, read_corpus_file

    if args.corpus_name is None or args.label_map is not None or args.assertion_map is not None:
        raise ConfigError("--corpus needs --corpus-name, and replaces --label-map and "
                          "--assertion-map")
    corpus_set = read_corpus_file(args.corpus)
    spec = corpus_set.by_name(args.corpus_name)
    data_format = spec.format if args.input_format == "auto" else args.input_format
    check_label_map(corpus_set, spec, [args.data], data_format, training=False,
                    skip_invalid=args.skip_invalid)
    return data_format, spec.label_map, spec.scored_labels(), spec.assertion_map
