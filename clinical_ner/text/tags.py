"""Tag schemes: reading IOB1 / BIO / BIOES / BILOU into canonical IOB2, and back.

Every sentence inside the package carries IOB2 tags (``O``, ``B-X``,
``I-X``: every entity starts with ``B-``). This module converts other
schemes to IOB2 and IOB2 to the schemes the model may train on.

Scheme names (case-insensitive):

* ``"bio"`` (alias ``"iob2"``): ``B-X`` starts every entity, ``I-X`` continues
  a ``B-X``/``I-X``.
* ``"iob1"``: ``I-X`` starts an entity; ``B-X`` is used only to start an
  entity right after another ``X`` entity.
* ``"bioes"`` (alias ``"iobes"``) and ``"bilou"``: ``S-X``/``U-X`` is a
  one-token entity, ``B-X (I-X)* E-X`` / ``B-X (I-X)* L-X`` a longer one.
  The two spellings may be mixed; both mean the same thing.
* ``"auto"`` (readers' default): a sequence with any ``S-``, ``E-``, ``U-``
  or ``L-`` tag is read as strict BIOES/BILOU. Otherwise it is read as a
  mixture of IOB1 and IOB2: ``B-X`` always starts an entity and an ``I-X``
  that does not continue an ``X`` entity (after ``O``, another type or at the
  sentence start) also starts one, as in IOB1. Such a sequence therefore
  never fails to read, while an explicit ``"bio"`` or ``"iob1"`` rejects it.

A tag is ``O`` or ``<prefix>-<type>`` where the prefix is one of ``B I E S
U L`` (upper case) and the type is non-empty and has no whitespace; anything
else is an error.

The model's side (as spaCy's ``training/iob_utils.py``): a model trains on
one of the :data:`MODEL_SCHEMES`, named explicitly in its configuration
(``NERConfig.tag_scheme``) and in the model's own config, never guessed from
its tags. :func:`to_scheme` / :func:`from_scheme` convert sequences and
:func:`to_iob2_tag` says which IOB2 tag a model tag stands for. What a
model's tag list means as a whole (its inventory, the role of each tag in
span extraction, the transitions its scheme allows) is
:mod:`clinical_ner.model.tag_space`.
"""
from __future__ import annotations

import re
from typing import Iterable

from clinical_ner.text.document import Mention
from clinical_ner.errors import DataFormatError

#: The tag outside every entity.
OUTSIDE = "O"

_ALIASES = {
    "auto": "auto",
    "bio": "bio",
    "iob2": "bio",
    "iob1": "iob1",
    "bioes": "bioes",
    "iobes": "bioes",
    "bilou": "bioes",
}
#: The prefixes of each scheme a model can be trained on, in the order a
#: label's tags are listed (what :func:`to_scheme` can produce).
MODEL_SCHEME_PREFIXES = {"bio": ("B", "I"), "bioes": ("B", "I", "E", "S")}
#: Schemes a model can be trained on (``NERConfig.tag_scheme``).
MODEL_SCHEMES = tuple(MODEL_SCHEME_PREFIXES)
_TAG = re.compile(r"([BIESUL])-(\S+)")
# BILOU spellings of the BIOES prefixes.
_BILOU = {"U": "S", "L": "E"}

_EXPECTED_TAG = "expected O or B-/I-/E-/S-/U-/L- followed by an entity type"


def canonical_scheme(scheme: str, allowed: tuple[str, ...]) -> str:
    """The canonical name of ``scheme`` (aliases resolved); ValueError unless it is one of ``allowed``."""
    canonical = _ALIASES.get(scheme.lower())
    if canonical not in allowed:
        names = sorted(name for name, value in _ALIASES.items() if value in allowed)
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {names}")
    return canonical


def _parse(tag: str) -> tuple[str, str | None] | None:
    """``("O", None)``, ``(prefix, type)`` with U/L mapped to S/E, or None if invalid."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    match = _TAG.fullmatch(tag)
    if match is None:
        return None
    prefix, entity_type = match.groups()
    return _BILOU.get(prefix, prefix), entity_type


def detect_scheme(tags: list[str]) -> str:
    """Guess the scheme of a tag sequence: ``"bioes"``, ``"iob1"`` or ``"bio"``.

    Any ``S-``/``E-``/``U-``/``L-`` tag means BIOES (or BILOU, read the same
    way); otherwise an ``I-X`` that does not continue an ``X`` entity means
    IOB1; otherwise BIO. Invalid tags are ignored here (normalisation reports
    them).
    """
    parsed = [_parse(tag) for tag in tags]
    if any(p is not None and p[0] in ("S", "E") for p in parsed):
        return "bioes"
    previous: tuple[str, str | None] | None = (OUTSIDE, None)
    for current in parsed:
        if current is not None and current[0] == "I" and (
            previous is None or previous[0] == OUTSIDE or previous[1] != current[1]
        ):
            return "iob1"
        previous = current
    return "bio"


def normalize_tags(
    tags: list[str],
    scheme: str = "auto",
    path: str = "<input>",
    lines: list[int] | None = None,
) -> list[str]:
    """Convert one sentence's tags from ``scheme`` to IOB2, checking them.

    ``path`` and ``lines`` (the 1-based line of each tag) only serve the
    error message. A tag that is not a tag, or a sequence that the
    explicitly given scheme does not allow, raises :class:`DataFormatError`
    at the first tag where the sequence stops being valid (the last tag when
    an entity is left open at the end). See the module docstring for
    ``"auto"``.
    """
    canonical = canonical_scheme(scheme, ("auto", "bio", "iob1", "bioes"))
    if lines is not None and len(lines) != len(tags):
        raise ValueError(f"{len(tags)} tags but {len(lines)} line numbers")

    def fail(index: int, problem: str) -> DataFormatError:
        return DataFormatError(path, lines[index] if lines is not None else None, problem)

    parsed: list[tuple[str, str | None]] = []
    for index, tag in enumerate(tags):
        result = _parse(tag)
        if result is None:
            # Not quoted: a malformed last column may be clinical text (see _tag).
            raise fail(index, f"invalid tag ({_EXPECTED_TAG})")
        parsed.append(result)

    if canonical == "auto":
        canonical = "bioes" if detect_scheme(tags) == "bioes" else "mixed"
    if canonical == "bioes":
        return _read_bioes(tags, parsed, fail)
    return _read_iob(tags, parsed, canonical, fail)


def _read_iob(tags, parsed, mode, fail) -> list[str]:
    """Read BIO (``mode="bio"``), strict IOB1 or the auto IOB1/IOB2 mixture."""
    result = []
    previous_prefix, previous_type = OUTSIDE, None
    for index, (prefix, entity_type) in enumerate(parsed):
        continues = previous_prefix in ("B", "I") and previous_type == entity_type
        if prefix in ("E", "S"):
            raise fail(index, f"{_tag(parsed, index)} is not a {mode.upper()} tag")
        if prefix == OUTSIDE:
            result.append(OUTSIDE)
        elif prefix == "B":
            if mode == "iob1" and not continues:
                raise fail(index, f"{_tag(parsed, index)} after {_previous(parsed, index)}: "
                                  "IOB1 uses B- only to start an entity right after another "
                                  "entity of its type")
            result.append(tags[index])
        elif continues:
            result.append(f"I-{entity_type}")
        elif mode == "bio":
            raise fail(index, f"{_tag(parsed, index)} after {_previous(parsed, index)}: in "
                              "BIO an entity must start with B- of its type")
        else:
            result.append(f"B-{entity_type}")
        previous_prefix, previous_type = prefix, entity_type
    return result


def _read_bioes(tags, parsed, fail) -> list[str]:
    result = []
    open_type: str | None = None
    for index, (prefix, entity_type) in enumerate(parsed):
        inside = prefix in ("I", "E")
        if open_type is not None and not (inside and entity_type == open_type):
            raise fail(index, f"{_tag(parsed, index)} after {_previous(parsed, index)}: in "
                              "BIOES an entity started with B- must continue with I- or end "
                              "with E- of its type")
        if open_type is None and inside:
            raise fail(index, f"{_tag(parsed, index)} after {_previous(parsed, index)}: in "
                              "BIOES an entity must start with B- (or be S-)")
        result.append(to_iob2_tag(tags[index]))
        open_type = entity_type if prefix in ("B", "I") else None
    if open_type is not None:
        raise fail(len(tags) - 1,
                   "the sentence ends inside an entity (BIOES entities end with E-)")
    return result


# The messages name a tag by its prefix, never its type: in a malformed file the
# last column may be a word of the note shaped like a tag (E-coli, B-cell, I-131).
def _tag(parsed: list[tuple[str, str | None]], index: int) -> str:
    prefix = parsed[index][0]
    return "an O tag" if prefix == OUTSIDE else f"{'a' if prefix == 'B' else 'an'} {prefix}- tag"


def _previous(parsed: list[tuple[str, str | None]], index: int) -> str:
    if index == 0:
        return "the sentence start"
    (prefix, entity_type), current_type = parsed[index - 1], parsed[index][1]
    if prefix == OUTSIDE:
        return OUTSIDE
    other = " of another type" if current_type is not None and entity_type != current_type else ""
    return f"{prefix}-{other}"


def tags_to_mentions(iob2_tags: list[str]) -> list[Mention]:
    """The entities of a valid IOB2 sequence as inclusive token ranges.

    Raises ValueError for anything that is not valid IOB2 (use
    :func:`normalize_tags` or :func:`from_scheme` first).
    """
    mentions = []
    start: int | None = None
    open_type: str | None = None
    for index, tag in enumerate(list(iob2_tags) + [OUTSIDE]):
        parsed = _parse(tag)
        if parsed is None or parsed[0] in ("E", "S"):
            raise ValueError(f"tag {index} is not an IOB2 tag")
        prefix, entity_type = parsed
        if prefix == "I":
            if entity_type != open_type:
                raise ValueError(f"tag {index} ({tag}) does not continue a {entity_type} entity")
            continue
        if open_type is not None:
            mentions.append(Mention(start, index - 1, open_type))
        start, open_type = (index, entity_type) if prefix == "B" else (None, None)
    return mentions


def mentions_to_tags(n_tokens: int, mentions: list[Mention]) -> list[str]:
    """IOB2 tags of ``n_tokens`` tokens holding ``mentions``.

    Raises ValueError when a mention is outside the sentence or two mentions
    share a token (IOB2 cannot represent that).
    """
    return _render(n_tokens, mentions, "bio")


def _render(n_tokens: int, mentions: list[Mention], scheme: str) -> list[str]:
    tags = [OUTSIDE] * n_tokens
    for mention in sorted(mentions, key=lambda m: (m.first_token, m.last_token)):
        first, last = mention.first_token, mention.last_token
        if not 0 <= first <= last < n_tokens:
            raise ValueError(
                f"mention {first}..{last} is not a token range of a {n_tokens}-token sentence"
            )
        if any(tag != OUTSIDE for tag in tags[first:last + 1]):
            raise ValueError(f"mention {first}..{last} overlaps another mention")
        label = mention.label
        tags[first] = f"B-{label}"
        tags[first + 1:last + 1] = [f"I-{label}"] * (last - first)
        if scheme == "bioes":
            if first == last:
                tags[first] = f"S-{label}"
            else:
                tags[last] = f"E-{label}"
    return tags


def to_scheme(iob2_tags: list[str], scheme: str) -> list[str]:
    """Rewrite valid IOB2 tags in ``"bio"`` (unchanged) or ``"bioes"``."""
    canonical = canonical_scheme(scheme, ("bio", "bioes"))
    return _render(len(iob2_tags), tags_to_mentions(iob2_tags), canonical)


def from_scheme(tags: list[str], scheme: str) -> list[str]:
    """Decode model output in ``"bio"`` or ``"bioes"`` to IOB2, repairing it.

    Unlike :func:`normalize_tags`, which validates input files, this never
    rejects a sequence of well-formed tags, because a model may predict an
    impossible one: an ``I-X``/``E-X`` that does not continue an ``X``
    entity starts a new one, and an entity left open by a missing ``E-X``
    simply ends where the next entity or ``O`` begins. For valid sequences,
    ``from_scheme(to_scheme(t, s), s) == t``. Raises ValueError for tags that
    are malformed or belong to another scheme.
    """
    canonical = canonical_scheme(scheme, ("bio", "bioes"))
    allowed = set(MODEL_SCHEME_PREFIXES[canonical])
    result = []
    open_type: str | None = None
    for index, tag in enumerate(tags):
        parsed = _parse(tag)
        if parsed is None or (parsed[0] != OUTSIDE and parsed[0] not in allowed):
            raise ValueError(f"tag {index} is not a {canonical.upper()} tag")
        prefix, entity_type = parsed
        if prefix == OUTSIDE:
            result.append(OUTSIDE)
        elif prefix in ("I", "E") and entity_type == open_type:
            result.append(f"I-{entity_type}")
        else:
            result.append(f"B-{entity_type}")
        # E- and S- close the entity, so a following I- starts a new one.
        open_type = entity_type if prefix in ("B", "I") else None
    return result


def parse_tag(tag: str) -> tuple[str, str | None]:
    """``("O", None)`` or ``(prefix, entity type)``, BILOU's U/L read as S/E.

    Raises ValueError for anything that is not a tag.

    >>> parse_tag("B-problem"), parse_tag("U-test"), parse_tag("O")
    (('B', 'problem'), ('S', 'test'), ('O', None))
    """
    parsed = _parse(tag)
    if parsed is None:
        raise ValueError(f"{tag!r} is not a tag ({_EXPECTED_TAG})")
    return parsed


def is_tag(tag: str) -> bool:
    """Whether ``tag`` is a tag (of any scheme): one that :func:`parse_tag` reads.

    >>> is_tag("B-problem"), is_tag("fever.")
    (True, False)
    """
    return _parse(tag) is not None


def entity_labels(tags: Iterable[str]) -> list[str]:
    """The sorted distinct entity types of ``tags`` (any scheme; ``O`` has none).

    >>> entity_labels(["O", "B-test", "I-test", "S-problem"])
    ['problem', 'test']
    """
    return sorted({parse_tag(tag)[1] for tag in tags if tag != OUTSIDE})


def to_iob2_tag(tag: str) -> str:
    """The IOB2 tag that a tag of a *valid* BIO or BIOES sequence stands for.

    ``S-X`` becomes ``B-X`` and ``E-X`` becomes ``I-X``; a sequence that the
    scheme does not allow needs :func:`from_scheme` instead.

    >>> [to_iob2_tag(tag) for tag in ["O", "B-x", "I-x", "E-x", "S-x"]]
    ['O', 'B-x', 'I-x', 'I-x', 'B-x']
    """
    prefix, entity_type = parse_tag(tag)
    if prefix == OUTSIDE:
        return OUTSIDE
    return f"{'B' if prefix in ('B', 'S') else 'I'}-{entity_type}"
