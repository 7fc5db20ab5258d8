"""What a small ensemble would gain: models that differ only in their seed, combined.

    python -m benchmarks.ensemble --data ../shared/data/bc5cdr/test.conll \\
        RUN_SEED42 RUN_SEED1

Each argument is a model directory from ``clinical-ner train`` on the same
training data with the same settings but another ``--seed`` (so the same
vocabularies and tags). The ensemble averages the members' CRF potentials,
the emissions of each sentence and the transition scores, and decodes the
average with the members' constrained Viterbi: the tag sequence that is most
likely under the normalised geometric mean of the members' CRF distributions.
Prints the exact micro F1 of each member and of the ensemble on ``--data``.
It costs one forward pass per member, so it measures accuracy only.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from clinical_ner.annotators.keras_annotator import KerasAnnotator  # noqa: E402
from clinical_ner.errors import ClinicalNERError  # noqa: E402
from clinical_ner.formats import load_corpus  # noqa: E402
from clinical_ner.model.layers.crf import CRF  # noqa: E402
from clinical_ner.evaluation.scorer import score_mentions  # noqa: E402
from clinical_ner.export.signatures import in_size_order_batches, padded_token_rows  # noqa: E402
from clinical_ner.text.tags import from_scheme, tags_to_mentions  # noqa: E402
from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences  # noqa: E402

CRF_PARAMETERS = ("transitions", "start_transitions", "end_transitions")
BATCH_SIZE = 64


def check_compatible(directories: list[str], members: list[KerasAnnotator]) -> None:
    first = members[0]
    for directory, member in zip(directories[1:], members[1:]):
        for part in ("words", "chars", "tags"):
            if getattr(member.vocab, part) != getattr(first.vocab, part):
                raise ClinicalNERError(
                    f"{directory}: its {part} differ from those of {directories[0]}; an "
                    "ensemble needs models trained on the same data with the same settings")
        if member.config.tag_scheme != first.config.tag_scheme:
            raise ClinicalNERError(f"{directory}: another tag scheme than {directories[0]}")


def ensemble_f1(members: list[KerasAnnotator], sentences, gold) -> float:
    """Exact micro F1 of the members' averaged potentials (one member: that model)."""
    first = members[0]
    # A CRF layer that decodes with the averaged transitions and the
    # members' shared constraints; a copy, so that the members stay intact.
    crf = CRF.from_config(first.model.crf.get_config())
    crf.build((None, None, len(first.vocab.tags)))
    for name in CRF_PARAMETERS:
        getattr(crf, name).assign(
            np.mean([getattr(m.model.crf, name).numpy() for m in members], axis=0))

    def mentions_of(batch: list[list[str]]) -> list:
        rows = padded_token_rows(batch)
        inputs = first.module.featurizer(tf.constant(np.array(rows, dtype=object)))
        emissions = tf.add_n([m.model(inputs, training=False) for m in members]) / len(members)
        lengths = first.model.sequence_lengths(inputs)
        tag_ids, _ = crf.decode(emissions, lengths)
        tags = [[first.vocab.tags[t] for t in row[:length]]
                for row, length in zip(tag_ids.numpy(), lengths.numpy())]
        return [tags_to_mentions(from_scheme(row, first.config.tag_scheme)) for row in tags]

    tokens = [sentence.tokens for sentence in sentences]
    predicted = in_size_order_batches(tokens, [len(t) for t in tokens], BATCH_SIZE, mentions_of)
    return score_mentions(gold, predicted)["exact"]["micro"]["f1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a labelled corpus file or folder")
    parser.add_argument("models", nargs="+", help="model directories (same data, other seeds)")
    args = parser.parse_args(argv)
    try:
        members = [KerasAnnotator.load(directory) for directory in args.models]
        check_compatible(args.models, members)
        sentences = corpus_sentences(load_corpus(args.data))
    except ClinicalNERError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    gold = [tags_to_mentions(sentence.tags) for sentence in sentences]
    for directory, member in zip(args.models, members):
        f1 = evaluate_sentences(member, sentences)["exact"]["micro"]["f1"]
        print(f"{directory}: exact micro F1 {f1:.4f}")
    print(f"ensemble of {len(members)}: exact micro F1 "
          f"{ensemble_f1(members, sentences, gold):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
