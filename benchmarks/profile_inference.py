"""Where inference time goes: each stage of the graph timed on its own.

    python -m benchmarks.profile_inference --model runs/maccrobat \\
        --data ../shared/data/maccrobat-i2b2/dev

Tags the data's sentences (sorted by length, in chunks of ``--batch-size``,
as ``annotate`` does) and times, each in its own ``tf.function``: the
featurizer (strings to ids), the model's forward pass up to the emissions, and
inside it the char-CNN and the BiLSTM alone, the CRF decode (Viterbi and
marginals), and the whole ``tag_tokens`` and ``annotate_text`` graphs; then
the same stages on one sentence at a time. Prints tokens/s (median of
``--repeats`` timed runs after a warm-up) and milliseconds; writes nothing.
Run it on a quiet machine: it measures what the cores give it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from clinical_ner.annotators.keras_annotator import KerasAnnotator  # noqa: E402
from benchmarks.bench_util import read_data  # noqa: E402
from clinical_ner.formats import load_corpus  # noqa: E402
from clinical_ner.export.signatures import padded_token_rows  # noqa: E402


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: traces the graph
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def padded(sentences: list[list[str]]) -> np.ndarray:
    return np.array(padded_token_rows(sentences), dtype=object)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory from clinical-ner train")
    parser.add_argument("--data", required=True, help="a corpus file or folder (any format)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single-calls", type=int, default=200)
    parser.add_argument("--bilstm-fused-max-batch", type=int, default=None, metavar="N",
                        help="override the BiLSTM's fused_max_batch (0: Keras' loop only), "
                             "to compare its two inference paths on the same model")
    args = parser.parse_args(argv)
    # Before the model: a corpus it cannot read stops at once, in one line.
    documents = read_data(parser, "--data", lambda: load_corpus(args.data)).documents

    ner = KerasAnnotator.load(args.model)
    module, model = ner.module, ner.model
    if args.bilstm_fused_max_batch is not None:
        # Read when the graphs are traced, which happens below.
        model.get_layer("bilstm").fused_max_batch = args.bilstm_fused_max_batch
    sentences = sorted((list(s.tokens) for d in documents for s in d.sentences if s.tokens), key=len)
    # CoNLL documents have no text: their sentences, a line each, stand in for it.
    texts = np.array([(d.text if d.text is not None else
                       "\n".join(" ".join(s.tokens) for s in d.sentences)).encode("utf-8")
                      for d in documents], dtype=object)
    tokens = sum(len(sentence) for sentence in sentences)
    batches = [padded(sentences[i:i + args.batch_size])
               for i in range(0, len(sentences), args.batch_size)]
    cells = sum(batch.size for batch in batches)
    print(f"{len(documents)} documents, {len(sentences)} sentences, {tokens} tokens; "
          f"batches of {args.batch_size}: {1 - tokens / cells:.0%} padding")

    featurize = tf.function(module.featurizer,
                            input_signature=[tf.TensorSpec([None, None], tf.string)])

    def features_of(batch) -> dict:
        features = featurize(tf.constant(batch.astype(str).tolist()))
        if not model.use_casing:
            del features["casing_ids"]
        return features

    features = [features_of(batch) for batch in batches]
    # reduce_retracing: one trace for every batch shape, as the exported graph has.
    forward = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    char_encoder = tf.function(model.get_layer("char_encoder"), reduce_retracing=True)
    lstm_input_model = keras.Model(model.inputs, model.get_layer("token_features").output)
    bilstm_layer = model.get_layer("bilstm")
    bilstm = tf.function(lambda hidden, mask: bilstm_layer(hidden, mask=mask),
                         reduce_retracing=True)
    lstm_inputs = [(lstm_input_model(f), f["word_ids"] != 0) for f in features]
    emissions = [(forward(f), model.sequence_lengths(f)) for f in features]

    stages: list[tuple[str, Callable[[], object]]] = [
        ("featurize", lambda: [features_of(batch) for batch in batches]),
        ("model forward (emissions)", lambda: [forward(f) for f in features]),
        ("  of which char-CNN", lambda: [char_encoder(f["char_ids"]) for f in features]),
        ("  of which BiLSTM", lambda: [bilstm(hidden, mask) for hidden, mask in lstm_inputs]),
        ("CRF decode (Viterbi + marginals)",
         lambda: [model.crf.decode(e, lengths) for e, lengths in emissions]),
        ("tag_tokens (whole graph)", lambda: [module.tag_tokens(batch) for batch in batches]),
        ("annotate_text (all documents, one call)", lambda: module.annotate_text(texts)),
    ]
    print(f"\nBatched, median of {args.repeats}:")
    for name, function in stages:
        seconds = median_seconds(function, args.repeats)
        print(f"  {name:42s} {tokens / seconds:10,.0f} tokens/s")

    rng = np.random.default_rng(0)
    sample = [sentences[i] for i in rng.choice(len(sentences), args.single_calls)]
    sample_features = [features_of(padded([sentence])) for sentence in sample]
    sample_emissions = [(forward(f), model.sequence_lengths(f)) for f in sample_features]
    sample_texts = [np.array([" ".join(sentence).encode("utf-8")], dtype=object)
                    for sentence in sample]
    single: list[tuple[str, list[Callable[[], object]]]] = [
        ("featurize", [lambda s=s: features_of(padded([s])) for s in sample]),
        ("model forward (emissions)", [lambda f=f: forward(f) for f in sample_features]),
        ("CRF decode", [lambda e=e, n=n: model.crf.decode(e, n) for e, n in sample_emissions]),
        ("tag_tokens", [lambda s=s: module.tag_tokens(padded([s])) for s in sample]),
        ("annotate_text", [lambda t=t: module.annotate_text(t) for t in sample_texts]),
    ]
    mean_tokens = statistics.mean(len(sentence) for sentence in sample)
    print(f"\nOne sentence per call ({args.single_calls} sentences, "
          f"{mean_tokens:.1f} tokens on average), p50:")
    for name, calls in single:
        for call in calls[:5]:
            call()
        runs = []
        for call in calls:
            started = time.perf_counter()
            call()
            runs.append(time.perf_counter() - started)
        print(f"  {name:42s} {statistics.median(runs) * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
