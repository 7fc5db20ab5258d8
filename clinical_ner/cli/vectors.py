"""clinical-ner vectors: train word vectors on your own unlabeled notes."""
from __future__ import annotations

import argparse

from clinical_ner.cli.common import non_empty, options_named, unwind_on_sigterm
from clinical_ner.errors import check_output_file
from clinical_ner.vectors.inputs import DEFAULT_TEXT_FIELD

NAME = "vectors"
HELP = "train word vectors on unlabeled text, for train --embeddings (needs the [vectors] extra)"
# train_vectors' keyword arguments, each the dest of the option of the same name.
VECTORS_OPTIONS = ("output", "method", "dim", "window", "epochs", "min_count", "workers",
                   "text_field", "seed", "tmp_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # extend: a second --text adds its paths (the last one alone was read).
    parser.add_argument("--text", required=True, nargs="+", action="extend", metavar="PATH",
                        type=non_empty,
                        help="unlabeled text: files or folders (.txt, one document a line "
                             "or a file; .jsonl; also .gz, .xz, .bz2)")
    parser.add_argument("--output", required=True,
                        help="vectors file to write (word2vec text format)")
    parser.add_argument("--method", default="word2vec", choices=("word2vec", "fasttext"),
                        help="skip-gram word2vec, or fastText (subword n-grams) (default: "
                             "%(default)s)")
    parser.add_argument("--dim", type=int, default=100, help="vector size (default: %(default)s)")
    parser.add_argument("--window", type=int, default=5,
                        help="context words on each side (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="passes over the text (default: %(default)s)")
    parser.add_argument("--min-count", type=int, default=5,
                        help="words seen fewer times get no vector, so rare words (names, "
                             "identifiers) stay out of the file (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes / threads (default: %(default)s)")
    parser.add_argument("--text-field",
                        help="the text's field in JSON lines inputs (.jsonl, .ndjson, .json) "
                             f"(default: {DEFAULT_TEXT_FIELD})")
    parser.add_argument("--seed", type=int, default=42,
                        help="random seed of word2vec (default: %(default)s)")
    parser.add_argument("--tmp-dir", metavar="DIR",
                        help="folder for the temporary token file, deleted at the end "
                             "(default: the system's temporary folder, $TMPDIR)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.vectors.trainer import train_vectors

    check_output_file("--output", args.output)
    # So that the temporary token file is deleted.
    unwind_on_sigterm()
    with options_named(args, VECTORS_OPTIONS):
        report = train_vectors(args.text, progress=not args.quiet,
                               **{option: getattr(args, option) for option in VECTORS_OPTIONS})
    print(report.summary())
    return 0
