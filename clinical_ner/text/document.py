"""In-memory corpus: documents made of tokenized, tagged sentences."""
from __future__ import annotations

from dataclasses import dataclass, field

#: The i2b2/VA 2010 assertion classes, in their canonical order. A model
#: predicts the subset its training data had (``Vocabulary.assertions``).
ASSERTION_CLASSES = (
    "present", "absent", "possible", "conditional", "hypothetical",
    "associated_with_someone_else",
)
#: The one entity label that carries an assertion (as in i2b2 2010).
ASSERTION_LABEL = "problem"


@dataclass(frozen=True)
class Entity:
    """A labelled span of a text.

    ``start`` and ``end`` are half-open code-point offsets into the original
    text, so ``text[start:end] == entity.text``. ``confidence`` is the CRF
    marginal probability of the entity's weakest token (``None`` for gold
    annotations). ``assertion`` is the i2b2 assertion (``present``,
    ``absent``, ...) when one was read or predicted, with the model's
    probability for it in ``assertion_confidence``.
    """

    start: int
    end: int
    text: str
    label: str
    confidence: float | None = None
    assertion: str | None = None
    assertion_confidence: float | None = None

    def to_dict(self) -> dict:
        result = {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "label": self.label,
            "confidence": self.confidence,
        }
        # Absent keys, not nulls, where there is no assertion: output of a
        # model without assertions stays exactly what it was.
        if self.assertion is not None:
            result["assertion"] = self.assertion
            result["assertion_confidence"] = self.assertion_confidence
        return result


@dataclass(frozen=True)
class Mention:
    """A gold or predicted entity as an inclusive token range of one sentence."""

    first_token: int
    last_token: int
    label: str
    assertion: str | None = None


@dataclass
class Sentence:
    """One sentence: tokens, their IOB2 tags and where they came from.

    ``tags`` holds canonical IOB2 tags (``O``, ``B-X``, ``I-X``) whatever the
    source scheme was. ``offsets`` are code-point spans into the document
    text when the sentence was cut out of a text (brat, i2b2, raw text), and
    ``None`` for CoNLL. ``source`` is ``"path:line"`` of its first line, for
    error messages.
    """

    tokens: list[str]
    tags: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    source: str = ""
    # Assertions (``present``, ``absent``, ...; see ASSERTION_CLASSES) keyed by
    # the inclusive token range of their concept; the tokens of a problem
    # with an assertion are the targets of the model's assertion output.
    assertions: dict[tuple[int, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.tokens):
            raise ValueError(
                f"{self.source}: {len(self.tokens)} tokens but {len(self.tags)} tags"
            )
        if self.offsets is not None and len(self.offsets) != len(self.tokens):
            raise ValueError(
                f"{self.source}: {len(self.tokens)} tokens but {len(self.offsets)} offsets"
            )


@dataclass
class Document:
    """A document: its name (file stem), its text when known, its sentences.

    ``boundaries_marked`` is False for a CoNLL file without ``-DOCSTART-`` lines, read as
    one document although it may hold many (BC5CDR's files hold 500 abstracts each).
    """

    name: str
    sentences: list[Sentence]
    text: str | None = None
    boundaries_marked: bool = True
