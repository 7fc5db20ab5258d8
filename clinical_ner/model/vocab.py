"""Vocabularies of words, characters and tags, saved inside the model directory."""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from clinical_ner.artifacts.keras_model import VOCAB_FILE
from clinical_ner.errors import ModelError
# PAD is the first entry (id 0) of the word and character vocabularies.
from clinical_ner.text.tokenizer import PAD, normalize_word
from clinical_ner.untrusted_json import read_json_file

#: The unknown entry (id 1) of both vocabularies.
UNKNOWN = "<unk>"
PAD_ID = 0
UNKNOWN_ID = 1


@dataclass
class Vocabulary:
    """Words (normalised forms), characters and tags, index = model id.

    ``words`` and ``chars`` start with the padding entry ``""`` (id 0) and the
    unknown entry ``"<unk>"`` (id 1); ``tags`` are the CRF's tags with ``O``
    first. The featurizer (``clinical_ner.model.features.Featurizer``) turns token
    strings into these ids, in the training pipeline and inside the exported
    graph alike. ``assertions`` are the assertion classes of the model's
    assertion output (a subset of ``text.document.ASSERTION_CLASSES`` in that order;
    empty: the model has no assertion output, as every model before 0.4).
    """

    words: list[str]
    chars: list[str]
    tags: list[str]
    assertions: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        sentences: Iterable[list[str]],
        tags: list[str],
        embedding_words: list[str] | None,
        min_word_count: int,
    ) -> "Vocabulary":
        """Build from training sentences (lists of tokens).

        Words are every embedding word (so that words unseen in training but
        covered by the vectors keep their meaning at test time) plus training
        words seen at least ``min_word_count`` times; rarer ones map to
        ``<unk>``, which teaches the model what an unknown word looks like.
        Characters are all characters of the training tokens.
        """
        word_counts: collections.Counter[str] = collections.Counter()
        char_counts: collections.Counter[str] = collections.Counter()
        for tokens in sentences:
            for token in tokens:
                word_counts[normalize_word(token)] += 1
                char_counts.update(token)
        words = [PAD, UNKNOWN]
        seen = set(words)
        for word in embedding_words or []:
            if word not in seen:
                seen.add(word)
                words.append(word)
        for word, count in sorted(word_counts.items(), key=lambda item: (-item[1], item[0])):
            if count >= min_word_count and word not in seen:
                seen.add(word)
                words.append(word)
        chars = [PAD, UNKNOWN] + sorted(char_counts, key=lambda c: (-char_counts[c], c))
        return cls(words=words, chars=chars, tags=list(tags))

    def training_words_first(
        self, sentences: Iterable[list[str]]
    ) -> tuple["Vocabulary", np.ndarray, int]:
        """This vocabulary reordered: padding, ``<unk>`` and the words of ``sentences`` first.

        Only those words' embedding rows get gradients when training on
        ``sentences``, so the model trains them in a table of their own
        (:class:`clinical_ner.model.layers.word_embedding.PartlyTrainableEmbedding`).
        Both groups keep their relative order. Returns the reordered
        vocabulary, ``order`` (new id ``i`` is old id ``order[i]``, so
        ``old_table[order]`` is the reordered embedding table) and how many
        leading words are in use.

        Example:
        >>> vocab = Vocabulary(["", "<unk>", "the", "fever", "cough"], ["", "<unk>"], ["O"])
        >>> reordered, order, in_use = vocab.training_words_first([["Cough", "rare"]])
        >>> reordered.words, order.tolist(), in_use
        (['', '<unk>', 'cough', 'the', 'fever'], [0, 1, 4, 2, 3], 3)
        """
        ids = {word: word_id for word_id, word in enumerate(self.words)}
        in_use = {0, 1}
        for tokens in sentences:
            for token in tokens:
                word_id = ids.get(normalize_word(token))
                if word_id is not None:
                    in_use.add(word_id)
        order = np.array(sorted(in_use) + [i for i in range(len(self.words)) if i not in in_use])
        reordered = Vocabulary(words=[self.words[i] for i in order], chars=self.chars,
                               tags=self.tags, assertions=self.assertions)
        return reordered, order, len(in_use)

    def embedding_matrix(
        self, embedding_words: list[str], vectors: np.ndarray, seed: int
    ) -> np.ndarray:
        """Initial word-embedding weights: pretrained rows where known.

        Words without a vector get small random vectors with the same spread
        as the pretrained ones; padding gets zeros.
        """
        rng = np.random.default_rng(seed)
        scale = float(vectors.std())
        matrix = rng.normal(0.0, scale, size=(len(self.words), vectors.shape[1]))
        index = {word: row for row, word in enumerate(embedding_words)}
        for word_id, word in enumerate(self.words):
            row = index.get(word)
            if row is not None:
                matrix[word_id] = vectors[row]
        matrix[0] = 0.0
        return matrix.astype(np.float32)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / VOCAB_FILE
        path.write_text(
            json.dumps({"words": self.words, "chars": self.chars, "tags": self.tags,
                        "assertions": self.assertions}, ensure_ascii=False),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Vocabulary":
        """The vocabularies saved in a model directory or export.

        Raises :class:`~clinical_ner.errors.ModelError` naming the file if it
        is missing or damaged.
        """
        path = Path(directory) / VOCAB_FILE
        data = read_json_file(path, ModelError, "copy the whole model folder again, or train "
                              "or export it again")
        fields = ("words", "chars", "tags", "assertions")
        # "assertions" is absent before 0.4.0; a str there would be classes of one letter.
        if not isinstance(data, dict) or not all(
                (name in data or name == "assertions")
                and isinstance(data.get(name, []), list)
                and all(isinstance(item, str) for item in data.get(name, []))
                for name in fields):
            raise ModelError(f"{path}: not a clinical-ner vocabulary (expected lists of "
                             f"strings {', '.join(fields)})")
        return cls(words=data["words"], chars=data["chars"], tags=data["tags"],
                   assertions=data.get("assertions", []))
