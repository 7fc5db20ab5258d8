"""``LiteRTAnnotator``: ``annotate`` and ``tag`` on a LiteRT export, without TensorFlow."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clinical_ner.export import signatures
from clinical_ner.annotators.base import Annotator
from clinical_ner.config import NERConfig
from clinical_ner.text.document import Entity
from clinical_ner.artifacts import litert as layout
from clinical_ner.annotators.litert.crf import ConstrainedCRF
from clinical_ner.annotators.litert.featurize import NumpyFeaturizer, bucket
from clinical_ner.annotators.litert.network import EmissionsNetwork
from clinical_ner.model.tag_space import entity_token_spans, tag_roles
from clinical_ner.text.tags import to_iob2_tag
from clinical_ner.text.tokenizer import split_sentences
from clinical_ner.model.vocab import Vocabulary

# Sentences per network call. The TensorFlow graph takes 128; here smaller
# chunks peak lower (the interpreter's working memory grows with the chunk)
# at the same speed: all 24 MACCROBAT dev documents peaked at 157 MiB with
# 128, 133 with 64, 111 with 32 and 97 with 16, at 10.0k-12.6k tokens/s
# (one run each on the loaded shared 2-core machine, an ad-hoc script not
# committed; docs/design/litert.md).
CHUNK_SIZE = 32


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
    with the same transition constraints; nothing imports TensorFlow.
    ``config`` and ``vocab`` are those the model was trained with;
    ``manifest`` is the export's ``litert.json``.
    """

    def __init__(self, directory: Path, manifest: dict, config: NERConfig, vocab: Vocabulary,
                 crf: ConstrainedCRF, network: EmissionsNetwork) -> None:
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self.vocab = vocab
        self.crf = crf
        self.network = network
        self.featurizer = NumpyFeaturizer(vocab.words, vocab.chars, config.max_word_length)
        self._labels, self._label_index, self._begins = tag_roles(vocab.tags)
        self._iob2_tags = [to_iob2_tag(tag) for tag in vocab.tags]

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 1,
             workers: int | None = None) -> "LiteRTAnnotator":
        """Load a directory written by ``clinical-ner export MODEL --format litert``.

        ``workers`` interpreters score chunks of a batch (and concurrent
        callers) in parallel threads (LiteRT releases the GIL while it
        computes); ``None`` (the default) gives one per core the process may
        run on (its CPU affinity), so a large batch uses them all, at about
        12 MiB more per interpreter. ``workers=1`` uses one core and the
        least memory: what batch engines, which run one worker per core,
        set. ``num_threads`` is each interpreter's own thread count (more
        than 1 was slower than more workers: docs/litert.md).
        """
        directory = Path(directory)
        if workers is None:
            workers = usable_cores()
        if not layout.is_litert_export(directory):
            raise layout.LiteRTExportError(
                f"{directory}: not a LiteRT export (no {layout.MANIFEST_FILE}); write one with "
                "'clinical-ner export MODEL --format litert --output DIR'")
        manifest = layout.read_manifest(directory)
        config = NERConfig.load(directory)
        try:
            vocab = Vocabulary.load(directory)
        except (OSError, ValueError, KeyError) as error:
            raise layout.LiteRTExportError(
                f"{directory / 'vocab.json'}: cannot be read ({error})") from None
        crf_data = layout.read_json(directory / layout.CRF_FILE)
        crf = ConstrainedCRF.from_dict(crf_data)
        if crf.num_tags != len(vocab.tags):
            raise layout.LiteRTExportError(
                f"{directory / layout.CRF_FILE}: {crf.num_tags} tags, but vocab.json has "
                f"{len(vocab.tags)}")
        network = EmissionsNetwork(directory / manifest["network"], manifest["inputs"],
                                   num_threads=num_threads, workers=workers)
        return cls(directory, manifest, config, vocab, crf, network)

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        results: list[tuple[list[str], list[float]]] = [([], []) for _ in sentences]
        # Sentences of "" tokens only are all padding.
        real = [i for i, sentence in enumerate(sentences) if any(sentence)]
        for index, (tag_ids, confidence) in zip(real, self._decode([sentences[i] for i in real])):
            results[index] = ([self._iob2_tags[tag] for tag in tag_ids],
                              [float(value) for value in confidence])
        return results

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        sentences, owners = [], []
        for document, text in enumerate(texts):
            # The bytes the graph would receive: lone surrogates become U+FFFD
            # (one code point for one, so offsets hold).
            readable = signatures.encode_text(text).decode("utf-8")
            for sentence in split_sentences(readable, self.config.max_sentence_tokens):
                sentences.append(sentence)
                owners.append(document)
        decoded = self._decode([[token.text for token in sentence] for sentence in sentences])
        results: list[list[Entity]] = [[] for _ in texts]
        for sentence, document, (tag_ids, confidence) in zip(sentences, owners, decoded):
            text = texts[document]
            for first, last, label in entity_token_spans(tag_ids, self._label_index,
                                                         self._begins):
                start, end = sentence[first].start, sentence[last].end
                results[document].append(Entity(
                    start=start, end=end, text=text[start:end], label=self._labels[label - 1],
                    confidence=float(confidence[first:last + 1].min())))
        return results

    def _decode(self, sentences: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tag ids and their marginals of each sentence (non-empty lists of tokens).

        Sentences are sorted by length and scored ``CHUNK_SIZE`` at a time,
        each chunk as wide as its longest sentence, as the graph chunks them;
        with several workers, chunks run in parallel threads.
        """
        lengths = np.array([sum(1 for token in sentence if token) for sentence in sentences],
                           dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        chunks = [order[start:start + CHUNK_SIZE]
                  for start in range(0, len(order), CHUNK_SIZE)]
        results: list[tuple[np.ndarray, np.ndarray]] = [None] * len(sentences)  # type: ignore

        def decode_chunk(rows: np.ndarray) -> None:
            tag_ids, confidence = self._decode_chunk([sentences[row] for row in rows],
                                                     lengths[rows])
            for position, row in enumerate(rows):
                length = lengths[row]
                results[row] = (tag_ids[position, :length], confidence[position, :length])

        if self.network.workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(self.network.workers) as pool:
                list(pool.map(decode_chunk, chunks))
        else:
            for rows in chunks:
                decode_chunk(rows)
        return results

    def _decode_chunk(self, chunk: list[list[str]], lengths: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(sentence) for sentence in chunk)
        char_width = bucket(self.featurizer.char_width(chunk), limit=self.config.max_word_length)
        if len(chunk) == 1:
            # One sentence (the latency-bound case): shapes rounded up and as
            # many spelling rows as positions, so that they depend on its
            # length only and repeat between calls.
            width = bucket(longest)
            features = self.featurizer(chunk, width, char_width, rows=width)
        else:
            # A chunk costs far more than a change of shapes: no padding steps.
            features = self.featurizer(chunk, longest, char_width)
        emissions = self.network(features)[:, :longest]
        return self.crf.decode(emissions, lengths)


#: Deprecated alias (the 0.3 name); remove in 0.5 (CHANGELOG.md).
LiteRTNER = LiteRTAnnotator
