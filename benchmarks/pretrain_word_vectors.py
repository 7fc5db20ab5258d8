"""Pre-train in-domain word vectors (skip-gram with negative sampling) on our corpora's text.

    python -m benchmarks.pretrain_word_vectors --output benchmarks/work/vectors/indomain.50d.txt
    python -m benchmarks.pretrain_word_vectors --output benchmarks/work/vectors/glove+indomain.txt \\
        --concat-with ../shared/data/embeddings/glove.6B.50d.pruned.txt

Reads only the *tokens* of the training splits of every corpus in the shared data folder
(BC5CDR, NCBI-disease and MACCROBAT in the i2b2 layout; tags are never looked at) and never a
test split: any path with a ``test`` component is refused. Development splits are left out by
default too, because the dev figures are what we report: vectors trained on the dev text
(even without its tags) raised NCBI-disease dev F1 by 0.014 on average over two seeds, vectors
from the training text alone by 0.005 over three, and those lowered BC5CDR test F1 by 0.008
with one seed (benchmarks/README.md, "What was tried"). ``--corpus`` reads other splits when asked. Words are keyed by
:func:`clinical_ner.text.tokenizer.normalize_word`, the key the embeddings loader and the model's
vocabulary use, so every vector written here is found by ``clinical-ner train --embeddings``.

The training is word2vec's skip-gram with negative sampling (Mikolov et al., 2013): a
dynamic window (for each centre word a window size drawn from 1..``--window``), frequent-word
subsampling (``--sample``), negatives drawn from the unigram distribution raised to 0.75,
and a learning rate decaying linearly to ``lr * 1e-4``. It runs in NumPy on mini-batches of
(centre, context) pairs; a word that occurs several times in one batch gets the mean of its
gradients rather than their sum, which keeps frequent words (and frequent negatives) stable
at batch sizes where summed updates would blow up. Because of that mean, the default rate
(0.25) is ten times word2vec's per-pair 0.025: at 0.025 five epochs here left every vector
pointing nearly the same way (nearest-neighbour cosines of 0.97-1.00). Everything random comes from one seeded
generator, so a run is reproducible bit for bit on the same machine and NumPy.

Output: a GloVe-style text file (``word v1 v2 ...``, no header, most frequent words first).
With ``--concat-with GLOVE_FILE`` every word of either vocabulary gets the GloVe vector
(zeros if GloVe lacks it) followed by the in-domain vector (zeros if the corpora lack it);
the in-domain part is first rescaled so that its values have the GloVe values' standard
deviation (``--no-rescale`` keeps the raw scale).
"""
from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from benchmarks.corpora import CORPORA
from clinical_ner.vectors.reader import load_embeddings
from clinical_ner.formats import load_corpus
from clinical_ner.text.tokenizer import normalize_word

REPOSITORY = Path(__file__).resolve().parents[1]

DEFAULT_DATA_ROOT = REPOSITORY.parent / "shared" / "data"
#: Training splits only (relative to the data root): dev text would flatter the dev figures.
DEFAULT_CORPORA = tuple(spec.train for spec in CORPORA.values())
DEFAULT_PROBES = ("cisplatin", "hypertension", "seizures", "carcinoma", "mri", "mg")


def read_sentences(paths: Iterable[Path]) -> list[list[str]]:
    """The normalised tokens of every sentence of every corpus in ``paths`` (tags ignored)."""
    sentences: list[list[str]] = []
    for path in paths:
        if "test" in path.parts or path.stem == "test":
            raise SystemExit(f"refusing to read {path}: test splits are held out")
        corpus = load_corpus(path)
        before = len(sentences)
        for document in corpus.documents:
            for sentence in document.sentences:
                words = [normalize_word(token) for token in sentence.tokens]
                words = [word for word in words if word and not any(c.isspace() for c in word)]
                if words:
                    sentences.append(words)
        tokens = sum(len(s) for s in sentences[before:])
        print(f"  {path}: {len(sentences) - before} sentences, {tokens} tokens", flush=True)
    return sentences


def build_vocabulary(sentences: list[list[str]], min_count: int) -> tuple[list[str], np.ndarray]:
    """Words seen at least ``min_count`` times, most frequent first, and their counts."""
    counts = collections.Counter(word for sentence in sentences for word in sentence)
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count),
                  key=lambda item: (-item[1], item[0]))
    return [w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64)


def encode(sentences: list[list[str]], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of all in-vocabulary tokens in one array, and each token's sentence number."""
    ids: list[int] = []
    sentence_ids: list[int] = []
    for number, sentence in enumerate(sentences):
        for word in sentence:
            word_id = index.get(word)
            if word_id is not None:
                ids.append(word_id)
                sentence_ids.append(number)
    return np.array(ids, dtype=np.int64), np.array(sentence_ids, dtype=np.int64)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling: keep a word of frequency f with (sqrt(f/t) + 1) * t/f, at most 1."""
    if sample <= 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    return np.minimum(1.0, (np.sqrt(counts / threshold) + 1.0) * threshold / counts)


def epoch_pairs(ids: np.ndarray, sentence_ids: np.ndarray, keep: np.ndarray, window: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's shuffled (centre, context) pairs: subsampled tokens, dynamic windows.

    Windows do not cross sentence boundaries; the distance to a context word is counted
    after subsampling, as in word2vec.
    """
    kept = rng.random(len(ids)) < keep[ids]
    tokens, sentences = ids[kept], sentence_ids[kept]
    reach = rng.integers(1, window + 1, size=len(tokens))  # each centre's window size
    centres: list[np.ndarray] = []
    contexts: list[np.ndarray] = []
    for distance in range(1, window + 1):
        left, right = np.arange(len(tokens) - distance), np.arange(distance, len(tokens))
        same = sentences[left] == sentences[right]
        forward = same & (reach[left] >= distance)   # centre left, context right
        backward = same & (reach[right] >= distance)  # centre right, context left
        centres += [tokens[left[forward]], tokens[right[backward]]]
        contexts += [tokens[right[forward]], tokens[left[backward]]]
    centre, context = np.concatenate(centres), np.concatenate(contexts)
    order = rng.permutation(len(centre))
    return centre[order], context[order]


def mean_update(matrix: np.ndarray, rows: np.ndarray, gradients: np.ndarray, lr: float) -> None:
    """``matrix[r] += lr * mean(gradients of r)`` for each distinct row ``r`` in ``rows``."""
    order = np.argsort(rows, kind="stable")
    rows, gradients = rows[order], gradients[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    sums = np.add.reduceat(gradients, starts, axis=0)
    matrix[rows[starts]] += (lr / sizes)[:, None] * sums


def train_skipgram(ids: np.ndarray, sentence_ids: np.ndarray, counts: np.ndarray, dim: int,
                   window: int, negatives: int, sample: float, epochs: int, lr: float,
                   batch_size: int, seed: int) -> np.ndarray:
    """Skip-gram with negative sampling; returns the input (word) vectors, float32."""
    rng = np.random.default_rng(seed)
    vocab_size = len(counts)
    word_vectors = ((rng.random((vocab_size, dim)) - 0.5) / dim).astype(np.float32)
    context_vectors = np.zeros((vocab_size, dim), dtype=np.float32)
    noise = counts.astype(np.float64) ** 0.75
    noise_cdf = np.cumsum(noise / noise.sum())
    noise_cdf[-1] = 1.0
    keep = keep_probabilities(counts.astype(np.float64), sample)
    # The learning-rate schedule needs the total number of pairs; estimate it from epoch 1.
    planned = None
    done = 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        centre, context = epoch_pairs(ids, sentence_ids, keep, window, rng)
        planned = planned or len(centre) * epochs
        loss_sum, loss_count, rate = 0.0, 0, lr
        for begin in range(0, len(centre), batch_size):
            c = centre[begin:begin + batch_size]
            o = context[begin:begin + batch_size]
            n = np.searchsorted(noise_cdf, rng.random((len(c), negatives)), side="right")
            # Targets: column 0 the true context (label 1), then the negatives (label 0).
            targets = np.concatenate([o[:, None], n], axis=1)
            labels = np.zeros(targets.shape, dtype=np.float32)
            labels[:, 0] = 1.0
            v = word_vectors[c]                      # [B, d]
            u = context_vectors[targets]             # [B, 1+k, d]
            scores = np.einsum("bd,bkd->bk", v, u)
            probabilities = 1.0 / (1.0 + np.exp(-np.clip(scores, -30.0, 30.0)))
            g = labels - probabilities               # d log-likelihood / d score
            rate = lr * max(1e-4, 1.0 - done / planned)
            mean_update(word_vectors, c, np.einsum("bk,bkd->bd", g, u), rate)
            mean_update(context_vectors, targets.ravel(),
                        (g[:, :, None] * v[:, None, :]).reshape(-1, dim), rate)
            done += len(c)
            if begin % (batch_size * 64) == 0:
                p = np.where(labels > 0, probabilities, 1.0 - probabilities)
                loss_sum += float(-np.log(np.maximum(p, 1e-7)).sum(axis=1).mean())
                loss_count += 1
        print(f"  epoch {epoch}/{epochs}: {len(centre)} pairs, loss {loss_sum / max(loss_count, 1):.4f}, "
              f"lr {rate:.5f}, {time.perf_counter() - start:.1f} s", flush=True)
    return word_vectors


def nearest(words: list[str], vectors: np.ndarray, probes: Iterable[str], k: int = 6) -> None:
    """Print each probe word's ``k`` nearest neighbours by cosine similarity."""
    index = {word: row for row, word in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
    for probe in probes:
        row = index.get(normalize_word(probe))
        if row is None:
            continue
        similarity = unit @ unit[row]
        best = [i for i in np.argsort(-similarity)[:k + 1] if i != row][:k]
        print(f"  {probe}: " + ", ".join(f"{words[i]} {similarity[i]:.2f}" for i in best))


def write_vectors(path: Path, words: list[str], vectors: np.ndarray) -> None:
    """A GloVe-style text file: ``word v1 v2 ...`` per line, no header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for word, vector in zip(words, vectors):
            handle.write(word + " " + " ".join(f"{value:.6f}" for value in vector) + "\n")
    partial.replace(path)


def concatenate(glove_words: list[str], glove: np.ndarray, words: list[str],
                vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Every word of either vocabulary: [GloVe vector or zeros, in-domain vector or zeros].

    GloVe's words come first, in its order, then the in-domain words it lacks.
    """
    glove_index = {w: i for i, w in enumerate(glove_words)}
    union = list(glove_words) + [w for w in words if w not in glove_index]
    own_index = {w: i for i, w in enumerate(words)}
    result = np.zeros((len(union), glove.shape[1] + vectors.shape[1]), dtype=np.float32)
    for row, word in enumerate(union):
        if word in glove_index:
            result[row, :glove.shape[1]] = glove[glove_index[word]]
        if word in own_index:
            result[row, glove.shape[1]:] = vectors[own_index[word]]
    return union, result


def token_coverage(sentences: list[list[str]], vocabulary: set[str]) -> float:
    """The share of running tokens whose normalised form is in ``vocabulary``."""
    total = sum(len(s) for s in sentences)
    return sum(word in vocabulary for s in sentences for word in s) / max(total, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " (word2vec skip-gram, negative sampling).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", required=True, type=Path,
                        help="the vectors file to write (GloVe text layout)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="the shared data folder")
    parser.add_argument("--corpus", action="append", default=None, metavar="PATH",
                        help="a corpus to read, relative to --data-root (repeatable; test "
                             "splits are refused); default: " + ", ".join(DEFAULT_CORPORA))
    parser.add_argument("--dim", type=int, default=50, help="vector size")
    parser.add_argument("--window", type=int, default=5, help="maximum context distance")
    parser.add_argument("--negatives", type=int, default=5, help="negative samples per pair")
    parser.add_argument("--min-count", type=int, default=2, help="drop rarer words")
    parser.add_argument("--sample", type=float, default=1e-3,
                        help="subsampling threshold for frequent words (0: off)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the text")
    parser.add_argument("--lr", type=float, default=0.25, help="initial learning rate")
    parser.add_argument("--batch-size", type=int, default=1024, help="pairs per update")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--concat-with", type=Path, default=None, metavar="GLOVE_FILE",
                        help="write GloVe vectors concatenated with the in-domain ones")
    parser.add_argument("--no-rescale", action="store_true",
                        help="with --concat-with: keep the in-domain vectors' own scale")
    parser.add_argument("--probe", action="append", default=None, metavar="WORD",
                        help="print this word's nearest neighbours (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    paths = [args.data_root / relative for relative in (args.corpus or DEFAULT_CORPORA)]
    print("reading tokens (no tags):", flush=True)
    sentences = read_sentences(paths)
    total = sum(len(s) for s in sentences)
    words, counts = build_vocabulary(sentences, args.min_count)
    ids, sentence_ids = encode(sentences, {w: i for i, w in enumerate(words)})
    print(f"{len(sentences)} sentences, {total} tokens, {len(set(w for s in sentences for w in s))} "
          f"distinct words; vocabulary (min count {args.min_count}): {len(words)} words covering "
          f"{len(ids) / total:.4f} of the tokens", flush=True)
    train_start = time.perf_counter()
    vectors = train_skipgram(ids, sentence_ids, counts, args.dim, args.window, args.negatives,
                             args.sample, args.epochs, args.lr, args.batch_size, args.seed)
    print(f"skip-gram training: {time.perf_counter() - train_start:.1f} s", flush=True)
    nearest(words, vectors, args.probe or DEFAULT_PROBES)
    if args.concat_with:
        glove_words, glove = load_embeddings(args.concat_with)
        if not args.no_rescale:
            vectors = vectors * (glove.std() / vectors.std())
        glove_set, own_set = set(glove_words), set(words)
        print(f"GloVe: {len(glove_words)} words covering {token_coverage(sentences, glove_set):.4f}"
              f" of the tokens; in-domain: {len(words)}; both: {len(glove_set & own_set)}; "
              f"union: {len(glove_set | own_set)} covering "
              f"{token_coverage(sentences, glove_set | own_set):.4f}", flush=True)
        out_words, out_vectors = concatenate(glove_words, glove, words, vectors)
    else:
        out_words, out_vectors = words, vectors
    write_vectors(args.output, out_words, out_vectors)
    print(f"wrote {len(out_words)} vectors of dimension {out_vectors.shape[1]} to {args.output} "
          f"({time.perf_counter() - started:.1f} s in all)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
