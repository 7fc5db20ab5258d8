"""``LiteRTAnnotator``: ``annotate`` and ``tag`` on a LiteRT export, without TensorFlow."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clinical_ner.export import signatures
from clinical_ner.annotators.base import Annotator
from clinical_ner.config import NERConfig
from clinical_ner.errors import check_integer, shown_value
from clinical_ner.text.document import ASSERTION_LABEL, Entity
from clinical_ner.artifacts import litert as layout
from clinical_ner.annotators.litert.crf import ConstrainedCRF
from clinical_ner.annotators.litert.featurize import NumpyFeaturizer
from clinical_ner.annotators.litert.network import EmissionsNetwork
from clinical_ner.annotators.litert.processes import WorkerProcesses, character_groups
from clinical_ner.model.tag_space import entity_token_spans, tag_roles
from clinical_ner.text.tags import to_iob2_tag
from clinical_ner.text.tokenizer import Token, split_sentences
from clinical_ner.model.vocab import Vocabulary

# A sentence's tag ids and their marginals [T], and its tokens' assertion
# probabilities [T, N] (None for a model without assertions).
Decoded = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]

# Sentences per network call. The TensorFlow graph takes 128; here smaller
# chunks peak lower (the interpreter's working memory grows with the largest
# chunk it has seen) at the same speed down to 16: a batch worker peaked at
# 253 MB with 16 against 308 with 32, at 71k-74k tokens/s with either (8: 234
# MB, 9 % slower). `python -m benchmarks.litert_chunk_size`, benchmarks/README.md.
CHUNK_SIZE = 16
# And at most this many padded positions (sentences x the longest one's
# tokens), so that chunks of long sentences hold fewer of them: the working
# memory follows the positions (the char-CNN's output over a chunk's
# spellings is its largest tensor). 384 (16 sentences of 24 tokens) took 25
# MiB off a one-interpreter process annotating BC5CDR sentences, at the same
# tokens/s; 256 was slower. Same command.
CHUNK_POSITIONS = 384
# How an annotator with several workers spreads an annotate batch of two or more
# texts and at least PROCESS_MIN_CHARACTERS over them: "processes" (one group of
# texts per worker process) or "threads" (chunks over interpreters in threads, as
# for smaller batches, tag and classify_assertions). On 2 cores processes were
# 8-46 % faster than threads on case reports and 6-38 % on batches of BC5CDR
# sentences from 2,500 characters up, the smallest measured
# (`python -m benchmarks.litert_workers`, benchmarks/README.md, "Threads or processes").
PARALLEL_MODES = ("processes", "threads")
PROCESS_MIN_CHARACTERS = 2_500
# A bound on workers and num_threads: well above any core count we run on, and far
# below what ran out of memory (a million workers) or crashed LiteRT at exit (100,000
# threads, an audit's probe).
MAX_WORKERS_OR_THREADS = 1024


def length_chunks(lengths: np.ndarray, max_sentences: int, max_positions: int
                  ) -> list[np.ndarray]:
    """The indices of sentences of these ``lengths``, sorted by length and cut into chunks.

    A chunk holds at most ``max_sentences`` sentences and, unless it is one
    sentence, at most ``max_positions`` padded positions (its sentence count
    times its longest sentence's length; ``0``: no limit).

    >>> [chunk.tolist() for chunk in length_chunks(np.array([5, 1, 30, 2, 9]), 2, 20)]
    [[1, 3], [0, 4], [2]]
    """
    chunks: list[np.ndarray] = []
    start = 0
    order = np.argsort(lengths, kind="stable")
    for end, row in enumerate(order):
        # Sorted: the new sentence is the chunk's longest.
        count = end - start + 1
        if count > max_sentences or (max_positions and count > 1
                                     and count * lengths[row] > max_positions):
            chunks.append(order[start:end])
            start = end
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity call
        return max(1, os.cpu_count() or 1)


class LiteRTAnnotator(Annotator):
    """A LiteRT export ready to annotate notes, with every annotator's API (:class:`~clinical_ner.annotators.base.Annotator`).

    Example (after ``clinical-ner export runs/sample --format litert --output runs/sample-litert``)::

        ner = LiteRTAnnotator.load("runs/sample-litert")   # or ClinicalNER.load(...)
        for entity in ner.annotate("CT of the chest showed a 2 cm nodule."):
            print(entity.start, entity.end, entity.label, entity.text, entity.confidence)

    Text is split with :func:`clinical_ner.text.tokenizer.split_sentences`, featurized
    in NumPy, scored by the LiteRT interpreter and decoded by a NumPy CRF
    with the same transition constraints; nothing imports TensorFlow. With
    a model that has assertions, a problem's assertion is the class whose
    probability, averaged over its tokens, is the highest (the TensorFlow
    graph's rule), and ``classify_assertions`` applies it to given spans.
    ``config`` and ``vocab`` are those the model was trained with;
    ``manifest`` is the export's ``litert.json``.
    """

    def __init__(self, directory: Path, manifest: dict, config: NERConfig, vocab: Vocabulary,
                 crf: ConstrainedCRF, network: EmissionsNetwork,
                 parallel: str = "processes") -> None:
        if parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel must be one of {PARALLEL_MODES}, "
                             f"not {shown_value(parallel)}")
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self.vocab = vocab
        self.crf = crf
        self.network = network
        self.featurizer = NumpyFeaturizer(vocab.words, vocab.chars, config.max_word_length)
        self._labels, self._label_index, self._begins = tag_roles(vocab.tags)
        self.assertion_classes = list(vocab.assertions)
        self.labels = list(self._labels)
        # Label ids count from 1 (0: outside), as entity_token_spans gives them.
        self._asserted_label = (self._labels.index(ASSERTION_LABEL) + 1
                                if ASSERTION_LABEL in self._labels else -1)
        self._iob2_tags = [to_iob2_tag(tag) for tag in vocab.tags]
        # Started at the first batch that uses them.
        self._processes = (WorkerProcesses(directory, network.workers, network.num_threads)
                           if parallel == "processes" and network.workers > 1 else None)

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 1,
             workers: int | None = None, parallel: str = "processes") -> "LiteRTAnnotator":
        """Load a directory written by ``clinical-ner export MODEL --format litert``.

        ``workers`` is how many cores a batch may use; ``None`` (the default)
        gives one per core the process may run on (its CPU affinity).
        ``workers=1`` uses one core and the least memory: what batch engines,
        which run one worker per core, set. With more, an ``annotate`` batch
        of two or more texts and at least ``PROCESS_MIN_CHARACTERS``
        characters is cut into that many groups of texts, each annotated by a
        worker process with the export loaded (started at the first such
        batch, in under a second; while one caller's batch has them, another
        caller's runs here; ``parallel="threads"`` keeps every batch in this
        process); one text, smaller batches, ``tag`` and
        ``classify_assertions`` spread their chunks over ``workers``
        interpreters in threads (LiteRT releases the GIL while it
        computes; about 12 MiB per interpreter). ``num_threads`` is each
        interpreter's own thread count (more than 1 was slower than more
        workers: docs/design/litert.md).
        """
        directory = Path(directory)
        if workers is None:
            workers = usable_cores()
        # Each worker is an interpreter (and a process at the first large batch), and each
        # interpreter thread a thread: far more than cores only costs memory, or crashes LiteRT.
        check_integer("workers", workers, maximum=MAX_WORKERS_OR_THREADS)
        check_integer("num_threads", num_threads, maximum=MAX_WORKERS_OR_THREADS)
        manifest, config, vocab, crf = read_export(directory)
        output_names = manifest.get("network_outputs")
        network = EmissionsNetwork(directory / manifest["network"], manifest["inputs"],
                                   num_threads=num_threads, workers=workers,
                                   output_names=output_names)
        return cls(directory, manifest, config, vocab, crf, network, parallel)

    def _annotate_texts(self, texts: list[str], batch_size: int, max_batch_characters: int
                        ) -> list[list[Entity]]:
        """Large batches spread over the worker processes (see ``load``); the rest runs here."""
        if (self._processes is not None and len(texts) >= 2
                and sum(len(text) for text in texts) >= PROCESS_MIN_CHARACTERS):
            groups = character_groups(texts, self._processes.count)
            answers = self._processes.annotate(
                [([texts[index] for index in group], batch_size, max_batch_characters)
                 for group in groups])
            # None: another thread's batch has the processes.
            if answers is not None:
                results: list[list[Entity]] = [[] for _ in texts]
                for group, entities in zip(groups, answers):
                    for index, text_entities in zip(group, entities):
                        results[index] = text_entities
                return results
        return super()._annotate_texts(texts, batch_size, max_batch_characters)

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the running worker processes (none until a batch needs them)."""
        return self._processes.pids if self._processes is not None else []

    def close(self) -> None:
        """Stop the worker processes, if any ran (a later large batch starts them again)."""
        if self._processes is not None:
            self._processes.close()

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        return [([self._iob2_tags[tag] for tag in tag_ids], [float(value) for value in confidence])
                for tag_ids, confidence, _ in self._decode(sentences)]

    def _split_and_decode(self, texts: list[str]
                          ) -> list[tuple[list[Token], int, Decoded]]:
        """Each sentence of ``texts``, the text it belongs to, and its decoding."""
        sentences, owners = [], []
        for document, text in enumerate(texts):
            # The bytes the graph would receive: lone surrogates become U+FFFD
            # (one code point for one, so offsets hold).
            readable = signatures.encode_text(text).decode("utf-8")
            for sentence in split_sentences(readable, self.config.max_sentence_tokens):
                sentences.append(sentence)
                owners.append(document)
        decoded = self._decode([[token.text for token in sentence] for sentence in sentences])
        return list(zip(sentences, owners, decoded))

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        results: list[list[Entity]] = [[] for _ in texts]
        for sentence, document, (tag_ids, confidence, probabilities) in \
                self._split_and_decode(texts):
            text = texts[document]
            for first, last, label in entity_token_spans(tag_ids, self._label_index,
                                                         self._begins):
                start, end = sentence[first].start, sentence[last].end
                assertion = assertion_confidence = None
                if probabilities is not None and label == self._asserted_label:
                    assertion, assertion_confidence = self._pooled_assertion(
                        probabilities[first:last + 1])
                results[document].append(Entity(
                    start=start, end=end, text=text[start:end], label=self._labels[label - 1],
                    confidence=float(confidence[first:last + 1].min()), assertion=assertion,
                    assertion_confidence=assertion_confidence))
        return results

    def _classify_assertions_batch(self, texts: list[str], spans: list[list[tuple[int, int]]]
                                   ) -> list[list[tuple[str, float]]]:
        starts: list[list[int]] = [[] for _ in texts]
        ends: list[list[int]] = [[] for _ in texts]
        probabilities: list[list[np.ndarray]] = [[] for _ in texts]
        for sentence, document, (_, _, sentence_probabilities) in self._split_and_decode(texts):
            starts[document] += [token.start for token in sentence]
            ends[document] += [token.end for token in sentence]
            probabilities[document].append(sentence_probabilities)
        results = []
        for document, document_spans in enumerate(spans):
            token_start, token_end = np.array(starts[document]), np.array(ends[document])
            token_probabilities = (np.concatenate(probabilities[document]) if
                                   probabilities[document] else None)
            row = []
            for start, end in document_spans:
                # A span's tokens are those that overlap it, as in the graph.
                overlaps = (token_end > start) & (token_start < end)
                row.append(self._pooled_assertion(token_probabilities[overlaps])
                           if overlaps.any() else ("", 0.0))
            results.append(row)
        return results

    def _pooled_assertion(self, probabilities: np.ndarray) -> tuple[str, float]:
        """The class of the highest mean probability over tokens ``[n, N]``, and that mean."""
        mean = probabilities.mean(axis=0, dtype=np.float32)
        best = int(np.argmax(mean))
        return self.assertion_classes[best], float(mean[best])

    def _decode(self, sentences: list[list[str]]) -> list[Decoded]:
        """Tag ids, their marginals and assertion probabilities of each sentence.

        Sentences are non-empty lists of tokens; the probabilities are
        ``[tokens, N]``, or ``None`` for a model without assertions.

        Sentences are sorted by length and scored in chunks of at most
        ``CHUNK_SIZE`` sentences and ``CHUNK_POSITIONS`` positions
        (:func:`length_chunks`), each chunk as wide as its longest sentence;
        with several workers, chunks run in parallel threads.
        """
        lengths = np.array([sum(1 for token in sentence if token) for sentence in sentences],
                           dtype=np.int64)
        chunks = length_chunks(lengths, CHUNK_SIZE, CHUNK_POSITIONS)
        results: list[Decoded] = [None] * len(sentences)  # type: ignore

        def decode_chunk(rows: np.ndarray) -> None:
            tag_ids, confidence, probabilities = self._decode_chunk(
                [sentences[row] for row in rows], lengths[rows])
            for position, row in enumerate(rows):
                length = lengths[row]
                results[row] = (tag_ids[position, :length], confidence[position, :length],
                                None if probabilities is None
                                else probabilities[position, :length])

        if self.network.workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(self.network.workers) as pool:
                list(pool.map(decode_chunk, chunks))
        else:
            for rows in chunks:
                decode_chunk(rows)
        return results

    def _decode_chunk(self, chunk: list[list[str]], lengths: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        longest = max(len(sentence) for sentence in chunk)
        features = self.featurizer(chunk, longest, self.featurizer.char_width(chunk))
        emissions, *assertion_outputs = self.network(features)
        tag_ids, confidence = self.crf.decode(emissions[:, :longest], lengths)
        probabilities = assertion_outputs[0][:, :longest] if assertion_outputs else None
        return tag_ids, confidence, probabilities


#: Deprecated alias (the 0.3 name); remove in 0.5 (CHANGELOG.md).
LiteRTNER = LiteRTAnnotator


def read_export(directory: str | Path) -> tuple[dict, NERConfig, Vocabulary, ConstrainedCRF]:
    """A LiteRT export's manifest, settings, vocabularies and CRF, all checked; not its network.

    Raises :class:`~clinical_ner.artifacts.litert.LiteRTExportError` naming the
    file (and field) that is missing or does not fit, or that differs from the
    SHA-256 the manifest recorded (the network's too). What ``load`` reads
    first, and what a batch engine's driver checks before its workers start.
    """
    directory = Path(directory)
    if not layout.looks_like_litert_export(directory):
        raise layout.LiteRTExportError(
            f"{directory}: not a LiteRT export (no {layout.MANIFEST_FILE}); write one with "
            "'clinical-ner export MODEL --format litert --output DIR'")
    layout.check_complete(directory)
    manifest = layout.read_manifest(directory)
    config = NERConfig.load(directory)
    vocab = Vocabulary.load(directory)
    crf_data = layout.read_json(directory / layout.CRF_FILE)
    try:
        crf = ConstrainedCRF.from_dict(crf_data)
    except ValueError as error:
        raise layout.LiteRTExportError(f"{directory / layout.CRF_FILE}: {error}; export the "
                                       "model again") from None
    if crf.num_tags != len(vocab.tags):
        raise layout.LiteRTExportError(
            f"{directory / layout.CRF_FILE}: {crf.num_tags} tags, but vocab.json has "
            f"{len(vocab.tags)}")
    # Format version 2 names two outputs: the emissions, then the assertion probabilities.
    output_names = manifest.get("network_outputs")
    if bool(output_names) != bool(vocab.assertions) or (
            output_names is not None and len(output_names) != 2):
        raise layout.LiteRTExportError(
            f"{directory}: vocab.json's assertions {vocab.assertions} do not match the "
            f"network's outputs {output_names}; export the model again")
    # Last, so that a file edited by hand is named by the field that does not fit.
    layout.check_checksums(directory, manifest)
    return manifest, config, vocab, crf
