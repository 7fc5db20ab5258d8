"""The spaCy tokenizer ``clinical_ner.Tokenizer.v1``: the Doc's tokens are our model's tokens.

With it, every entity of the ``clinical_ner`` component is exactly a span of
the Doc (no widening to whole tokens), and case reports tokenize about six
times as fast as with spaCy's English tokenizer (short sentences slower:
spaCy's caches them; benchmarks/README.md, spaCy pipelines). Registered through the ``spacy_tokenizers`` entry point::

    nlp = spacy.blank("en", config={
        "nlp": {"tokenizer": {"@tokenizers": "clinical_ner.Tokenizer.v1"}}})
    nlp.add_pipe("clinical_ner")
    [t.text for t in nlp("28-year-old (BP 120/80).")]
    # ['28', '-', 'year', '-', 'old', '(', 'BP', '120', '/', '80', ')', '.']

The rules are :mod:`clinical_ner.text.tokenizer`'s. Separators between tokens
follow spaCy's convention, so that ``doc.text`` is the text: one space after
a token is that token's ``whitespace_``, any other run of separators is a
token of its own (``is_space``), as spaCy's tokenizer makes them. The
tokenizer has no settings, so it saves nothing with ``nlp.to_disk``.
"""
from pathlib import Path
from typing import Callable, Iterable

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from spacy.vocab import Vocab

from clinical_ner.text.tokenizer import token_and_gap_pattern

REGISTERED_NAME = "clinical_ner.Tokenizer.v1"


class ClinicalNERTokenizer:
    """Makes a Doc whose tokens are those of :func:`clinical_ner.text.tokenizer.tokenize`."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        words: list[str] = []
        spaces: list[bool] = []
        first = True
        for match in token_and_gap_pattern(text).finditer(text):
            if first and match.start():
                # Separators before the first token: a token of their own.
                words.append(text[:match.start()])
                spaces.append(False)
            first = False
            token, gap = match.groups()
            words.append(token)
            # One space after a token is its whitespace_; the rest is a token.
            spaces.append(gap[:1] == " ")
            rest = gap[1:] if spaces[-1] else gap
            if rest:
                words.append(rest)
                spaces.append(False)
        if first and text:
            words.append(text)  # separators only
            spaces.append(False)
        return Doc(self.vocab, words=words, spaces=spaces)

    # spaCy serializes a pipeline's tokenizer with these; this one has no state.
    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return b""

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = tuple()
                   ) -> "ClinicalNERTokenizer":
        return self

    def to_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = tuple()
                  ) -> "ClinicalNERTokenizer":
        return self


@registry.tokenizers(REGISTERED_NAME)
def create_clinical_ner_tokenizer() -> Callable[[Language], ClinicalNERTokenizer]:
    """spaCy's registry function for ``{"@tokenizers": "clinical_ner.Tokenizer.v1"}``."""
    return lambda nlp: ClinicalNERTokenizer(nlp.vocab)
