"""The spaCy tokenizer ``clinical_ner.Tokenizer.v1``: the Doc's tokens are our model's tokens.

With it, every entity of the ``clinical_ner`` component is exactly a span of
the Doc (no widening to whole tokens), case reports tokenize six to seven
times as fast as with spaCy's English tokenizer (short sentences slower:
spaCy's caches them; benchmarks/README.md, spaCy pipelines), and the component
reads each Doc's text from here (:func:`doc_text`) instead of joining its
tokens. Registered through the ``spacy_tokenizers`` entry point::

    nlp = spacy.blank("en", config={
        "nlp": {"tokenizer": {"@tokenizers": "clinical_ner.Tokenizer.v1"}}})
    nlp.add_pipe("clinical_ner")
    [t.text for t in nlp("28-year-old (BP 120/80).")]
    # ['28', '-', 'year', '-', 'old', '(', 'BP', '120', '/', '80', ')', '.']

The rules are :mod:`clinical_ner.text.tokenizer`'s. Separators between tokens
follow spaCy's convention, so that ``doc.text`` is the text: one space after
a token is that token's ``whitespace_``, any other run of separators is a
token of its own (``is_space``), as spaCy's tokenizer makes them. A lone
surrogate, which spaCy's string store cannot hold, becomes U+FFFD, one for one
(so ``doc.text`` holds U+FFFD there, at the same offsets), as the model reads
it anyway. The tokenizer has no settings, so it saves nothing with
``nlp.to_disk``.
"""
import weakref
from pathlib import Path
from typing import Callable, Iterable

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from spacy.vocab import Vocab

from clinical_ner.export.signatures import replace_lone_surrogates
from clinical_ner.text.tokenizer import tokens_and_gaps

REGISTERED_NAME = "clinical_ner.Tokenizer.v1"

# The text each living Doc of this tokenizer was made from. spaCy's doc.text joins
# a Token object's text per token (a tenth of the model's own time on case reports,
# benchmarks/README.md, spaCy pipelines); the clinical_ner component reads it here.
# Weak keys: the entry goes with its Doc, and nothing else holds on to the text.
_TEXTS: "weakref.WeakKeyDictionary[Doc, str]" = weakref.WeakKeyDictionary()


def text_length(doc: Doc) -> int:
    """``len(doc.text)`` without building the text."""
    return doc[-1].idx + len(doc[-1].text_with_ws) if len(doc) else 0


def doc_text(doc: Doc) -> str:
    """``doc.text``: the text this tokenizer made ``doc`` from, if it did, else spaCy's.

    A Doc's text cannot change (spaCy's retokenizer keeps it), but
    ``Doc.from_bytes`` can fill an empty Doc object with another Doc: a text
    whose length differs is not used.
    """
    text = _TEXTS.get(doc)
    if text is None or len(text) != text_length(doc):
        return doc.text
    return text


class ClinicalNERTokenizer:
    """Makes a Doc whose tokens are those of :func:`clinical_ner.text.tokenizer.tokenize`."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        # spaCy hashes each token's UTF-8 bytes, which a lone surrogate has none of
        # (UnicodeEncodeError); U+FFFD keeps every offset and is what the model reads.
        text = replace_lone_surrogates(text)
        words: list[str] = []
        spaces: list[bool] = []
        start, pairs = tokens_and_gaps(text)
        if start:
            # Separators before the first token (or all of a text without one).
            words.append(text[:start])
            spaces.append(False)
        # Each token and the separators after it: they tile the rest of the text.
        for token, gap in pairs:
            words.append(token)
            # One space after a token is its whitespace_; the rest is a token.
            if gap[:1] == " ":
                spaces.append(True)
                gap = gap[1:]
            else:
                spaces.append(False)
            if gap:
                words.append(gap)
                spaces.append(False)
        doc = Doc(self.vocab, words=words, spaces=spaces)
        _TEXTS[doc] = text
        return doc

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
