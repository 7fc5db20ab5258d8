"""Tokenizer and sentence splitter for raw clinical text, with exact offsets.

The rules are deliberately small so that the exported SavedModel can repeat
them with core TensorFlow string ops (see ``clinical_ner.text.graph_tokenizer``); both
implementations read the same per-code-point tables defined here, so they
agree on every input.

Every code point belongs to one class:

* ``WORD``: letters, digits, ``_`` and combining marks (``str.isalnum()``,
  Unicode category ``M*``). A maximal run of WORD code points is one token.
* ``SEPARATOR``: whitespace and control/format characters (``str.isspace()``,
  categories ``Cc`` and ``Cf``). They separate tokens and are never part of one.
* ``OTHER``: everything else (punctuation, symbols, emoji, unassigned code
  points). Each one is a token of its own, which splits hyphens and
  punctuation the way the public corpora do (``28 - year - old``).

A sentence ends at a line break, after a ``.``, ``!`` or ``?`` token that is
followed by a separator or the end of the text, and after
``max_sentence_tokens`` tokens (long runs without punctuation are cut into
windows so that no single sentence can exhaust memory).

Offsets count Unicode code points of the original string, so
``text[token.start:token.end] == token.text`` always holds.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from clinical_ner.config import NERConfig

WORD = 0
SEPARATOR = 1
OTHER = 2

SENTENCE_FINAL = frozenset(".!?")
# Exactly the boundaries of str.splitlines().
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# The configuration's default, for callers without a configuration (the brat
# reader; a model passes its own setting).
DEFAULT_MAX_SENTENCE_TOKENS = NERConfig.max_sentence_tokens
MAX_CODE_POINT = 0x10FFFF
#: The padding token: what token rows are right-padded with everywhere (the
#: training batches, the inference graph, the ``tokens`` signature input),
#: and the first entry (id 0) of the model's vocabularies.
PAD = ""


@dataclass(frozen=True)
class Token:
    """A token and its half-open code-point span ``[start, end)`` in the text."""

    text: str
    start: int
    end: int


def char_class(char: str) -> int:
    """Return the tokenizer class (WORD, SEPARATOR or OTHER) of one character."""
    if char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M":
        return WORD
    if char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):
        return SEPARATOR
    return OTHER


@functools.lru_cache(maxsize=None)
def char_class_runs() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Run-length encoding of :func:`char_class` over all code points.

    Returns ``(starts, classes)``: code points ``starts[i]`` up to
    ``starts[i + 1] - 1`` have class ``classes[i]``. The in-graph tokenizer
    stores these two vectors as constants and looks classes up with a sorted
    search.
    """
    starts: list[int] = []
    classes: list[int] = []
    for code_point in range(MAX_CODE_POINT + 1):
        cls = char_class(chr(code_point))
        if not classes or classes[-1] != cls:
            starts.append(code_point)
            classes.append(cls)
    return tuple(starts), tuple(classes)


# The last code point of the Basic Multilingual Plane.
MAX_BMP_CODE_POINT = 0xFFFF
_BEYOND_BMP = re.compile(f"[\\U{MAX_BMP_CODE_POINT + 1:08x}-\\U{MAX_CODE_POINT:08x}]")


def _regex_class(cls: int, last: int) -> str:
    """The code points up to ``last`` of class ``cls``, as ranges of a character class."""
    starts, classes = char_class_runs()
    bounds = list(starts[1:]) + [MAX_CODE_POINT + 1]
    parts = []
    for start, end, run_class in zip(starts, bounds, classes):
        if run_class == cls and start <= last:
            parts.append(f"\\U{start:08x}-\\U{min(end - 1, last):08x}")
    return "".join(parts)


@functools.lru_cache(maxsize=None)
def _patterns(last: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The token pattern and the token-and-gap pattern for texts of code points up to ``last``."""
    word = _regex_class(WORD, last)
    separator = _regex_class(SEPARATOR, last)
    return (re.compile(f"[{word}]+|[^{word}{separator}]"),
            re.compile(f"([{word}]+|[^{word}{separator}])([{separator}]*)"))


def _last_code_point(text: str) -> int:
    if text.isascii() or _BEYOND_BMP.search(text) is None:
        return MAX_BMP_CODE_POINT
    return MAX_CODE_POINT


def token_and_gap_pattern(text: str = "") -> re.Pattern[str]:
    """Like :func:`token_pattern`, with two groups: the token and the separators after it.

    Matches are adjacent: only separators before the first token are in none.
    """
    return _patterns(_last_code_point(text) if text else MAX_CODE_POINT)[1]


def tokens_and_gaps(text: str) -> tuple[int, list[tuple[str, str]]]:
    """Where ``text``'s first token starts, and each token with the separators after it.

    From that start on, the pairs tile the text (the matches are adjacent), so
    each token's offsets add up from it; ``findall`` builds no match object
    per token (split_sentences took a fifth less time on case reports than
    with ``finditer``: benchmarks/README.md, "Exact shapes"). Without a token:
    ``len(text)`` and no pairs.

    >>> tokens_and_gaps("  CT:  clear.")
    (2, [('CT', ''), (':', '  '), ('clear', ''), ('.', '')])
    """
    pattern = token_and_gap_pattern(text)
    first = pattern.search(text)
    if first is None:
        return len(text), []
    return first.start(), pattern.findall(text, first.start())


def token_pattern(text: str = "") -> re.Pattern[str]:
    """The compiled regular expression whose matches are :func:`tokenize`'s tokens in ``text``.

    Python's ``re`` finds a character of the Basic Multilingual Plane in a
    class's bitmap, but tries every range beyond it one by one, and the
    classes have hundreds of those: a text without code points beyond
    U+FFFF (nearly every note) gets the same classes without them: the same
    matches (``tests/test_tokenizer.py`` checks every code point), found
    faster (``split_sentences`` took 14.2 ms instead of 26.1 ms for a batch of
    the MACCROBAT dev reports: benchmarks/README.md, "A faster tokenizer").
    Without ``text``, the pattern for any text.
    """
    return _patterns(_last_code_point(text) if text else MAX_CODE_POINT)[0]


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens with exact code-point offsets.

    >>> [t.text for t in tokenize("28-year-old (BP 120/80).")]
    ['28', '-', 'year', '-', 'old', '(', 'BP', '120', '/', '80', ')', '.']
    """
    return [Token(m.group(), m.start(), m.end()) for m in token_pattern(text).finditer(text)]


def count_tokens(text: str) -> int:
    """How many tokens :func:`tokenize` finds in ``text``, without building them.

    >>> count_tokens("28-year-old (BP 120/80).")
    12
    """
    # findall is about twice as fast as counting finditer's match objects.
    return len(token_pattern(text).findall(text))


def _ends_sentence(length: int, token: str, gap: str, max_sentence_tokens: int) -> bool:
    """Whether a sentence of ``length`` tokens ends at ``token``, followed by separators ``gap``.

    At a line break, after a final "." with any separator ("2.5" has none
    after its period and so stays one sentence), or at the length limit.
    """
    return length >= max_sentence_tokens or bool(
        gap and (token in SENTENCE_FINAL or not LINE_BREAKS.isdisjoint(gap)))


def split_sentences(
    text: str, max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS
) -> list[list[Token]]:
    """Tokenize ``text`` and group the tokens into sentences.

    >>> [[t.text for t in s] for s in split_sentences("Chest pain. No fever\\nCT: clear")]
    [['Chest', 'pain', '.'], ['No', 'fever'], ['CT', ':', 'clear']]
    """
    if max_sentence_tokens < 1:
        raise ValueError(f"max_sentence_tokens must be >= 1, got {max_sentence_tokens}")
    sentences: list[list[Token]] = []
    current: list[Token] = []
    position, pairs = tokens_and_gaps(text)
    for token, gap in pairs:
        end = position + len(token)
        current.append(Token(token, position, end))
        position = end + len(gap)
        if _ends_sentence(len(current), token, gap, max_sentence_tokens):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def sentence_token_texts(
    text: str, max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS
) -> list[list[str]]:
    """The token strings of :func:`split_sentences`, without offsets, for bulk text.

    Same tokens and the same sentence ends, faster: no :class:`Token` is
    built. Word vectors (``clinical_ner.vectors.tokens``) tokenise millions of lines with it.

    >>> sentence_token_texts("Chest pain. No fever\\nCT: clear")
    [['Chest', 'pain', '.'], ['No', 'fever'], ['CT', ':', 'clear']]
    """
    if max_sentence_tokens < 1:
        raise ValueError(f"max_sentence_tokens must be >= 1, got {max_sentence_tokens}")
    sentences: list[list[str]] = []
    current: list[str] = []
    for token, gap in token_and_gap_pattern(text).findall(text):
        current.append(token)
        if _ends_sentence(len(current), token, gap, max_sentence_tokens):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


# Word normalisation and casing. Both work one code point at a time, so the
# exported graph can repeat them with table lookups on decoded code points.

NO_SHAPE = 0
DIGIT = 1
UPPER = 2
LOWER = 3

CASING_FEATURES = (
    "padding",
    "numeric",
    "mainly_numeric",
    "all_lower",
    "all_upper",
    "initial_upper",
    "contains_digit",
    "other",
)


def char_shape(char: str) -> int:
    """DIGIT for decimal digits of any script, UPPER/LOWER by case, else NO_SHAPE."""
    if unicodedata.decimal(char, None) is not None:
        return DIGIT
    if char.isupper():
        return UPPER
    if char.islower():
        return LOWER
    return NO_SHAPE


def normalize_char(char: str) -> str:
    """Map one character for vocabulary lookup: digits to ``0``, then lowercase.

    Characters whose lowercase is not a single code point (``İ``) are kept, so
    that normalisation never changes a token's length.
    """
    if char_shape(char) == DIGIT:
        return "0"
    lowered = char.lower()
    return lowered if len(lowered) == 1 else char


@functools.lru_cache(maxsize=None)
def normalization_map() -> dict[int, int]:
    """Every code point that :func:`normalize_char` changes, mapped to its result."""
    mapping = {}
    for code_point in range(MAX_CODE_POINT + 1):
        normalized = normalize_char(chr(code_point))
        if normalized != chr(code_point):
            mapping[code_point] = ord(normalized)
    return mapping


def normalize_word(token: str) -> str:
    """Lowercase a token and replace its digits by ``0`` (``"CT2"`` -> ``"ct0"``)."""
    return token.translate(normalization_map())


@functools.lru_cache(maxsize=None)
def char_shape_runs() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Run-length encoding of :func:`char_shape`, like :func:`char_class_runs`."""
    starts: list[int] = []
    shapes: list[int] = []
    for code_point in range(MAX_CODE_POINT + 1):
        shape = char_shape(chr(code_point))
        if not shapes or shapes[-1] != shape:
            starts.append(code_point)
            shapes.append(shape)
    return tuple(starts), tuple(shapes)


def casing_feature(token: str) -> int:
    """Index into :data:`CASING_FEATURES` of a non-empty token's casing.

    Decided from counts of digits and upper/lower-case characters, in this
    order: all digits -> numeric; more than half digits -> mainly_numeric;
    all lowercase -> all_lower; all uppercase -> all_upper; first character
    uppercase -> initial_upper; any digit -> contains_digit; else other.
    """
    shapes = [char_shape(char) for char in token]
    digits = shapes.count(DIGIT)
    if digits == len(shapes):
        return CASING_FEATURES.index("numeric")
    if 2 * digits > len(shapes):
        return CASING_FEATURES.index("mainly_numeric")
    if shapes.count(LOWER) == len(shapes):
        return CASING_FEATURES.index("all_lower")
    if shapes.count(UPPER) == len(shapes):
        return CASING_FEATURES.index("all_upper")
    if shapes[0] == UPPER:
        return CASING_FEATURES.index("initial_upper")
    if digits:
        return CASING_FEATURES.index("contains_digit")
    return CASING_FEATURES.index("other")
