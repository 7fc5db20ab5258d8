"""A model's tag space: its tag list, what each tag means for spans, which sequences it allows.

Tag *schemes* (reading and writing BIO, BIOES, IOB1, ...) are
:mod:`clinical_ner.text.tags`; this module is about the list of tags one
model predicts over, as the CRF layer, the exported inference graph and the
LiteRT runtime see it: :func:`tag_inventory` builds that list,
:func:`tag_roles` and :func:`entity_token_spans` turn tag ids into entity
spans, :func:`transition_mask` gives the transitions the model's scheme
allows as boolean arrays, and :func:`allowed_tag_mask` the tags each token of
a partly labelled sentence may take (training from several corpora).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np

from clinical_ner.text.tags import (
    MODEL_SCHEME_PREFIXES,
    MODEL_SCHEMES,
    OUTSIDE,
    canonical_scheme,
    entity_labels,
    is_tag,
    parse_tag,
    to_scheme,
)


def _is_label(label: str) -> bool:
    return is_tag(f"B-{label}")


def tag_inventory(labels: list[str], scheme: str) -> list[str]:
    """All tags of ``labels`` in ``"bio"`` or ``"bioes"``: ``O``, then per label.

    Labels are sorted and de-duplicated; each label's tags follow in the
    order B, I (, E, S), e.g. ``["O", "B-problem", "I-problem", "B-test",
    "I-test"]``.
    """
    canonical = canonical_scheme(scheme, ("bio", "bioes"))
    inventory = [OUTSIDE]
    for label in sorted(set(labels)):
        if not _is_label(label):
            raise ValueError(f"invalid entity label {label!r} (empty or with whitespace)")
        inventory.extend(f"{prefix}-{label}" for prefix in MODEL_SCHEME_PREFIXES[canonical])
    return inventory


class TagRoles(NamedTuple):
    """What each tag of a model's inventory means for span extraction.

    ``labels``: the sorted entity types; ``label_index``: int32 ``[K]``, each
    tag's type as an index into ``[""] + labels`` (0 for ``O``); ``begins``:
    bool ``[K]``, whether the tag always begins an entity (``B-``, ``S-``).
    """

    labels: list[str]
    label_index: np.ndarray
    begins: np.ndarray


def tag_roles(tags: Sequence[str]) -> TagRoles:
    """The :class:`TagRoles` of a BIO or BIOES tag list, for extracting spans in a graph.

    A tag that does not begin an entity (``I-``, ``E-``) continues one of the
    same label, or begins one after ``O`` or another label, as conlleval
    reads ill-formed sequences.

    >>> roles = tag_roles(["O", "B-test", "I-test", "S-problem"])
    >>> roles.labels, roles.label_index.tolist(), roles.begins.tolist()
    (['problem', 'test'], [0, 2, 2, 1], [False, True, False, True])
    """
    labels = entity_labels(tags)
    label_index = np.zeros(len(tags), dtype=np.int32)
    begins = np.zeros(len(tags), dtype=bool)
    for position, tag in enumerate(tags):
        prefix, entity_type = parse_tag(tag)
        if prefix != OUTSIDE:
            label_index[position] = labels.index(entity_type) + 1
            begins[position] = prefix in ("B", "S")
    return TagRoles(labels, label_index, begins)


def entity_token_spans(tag_ids: np.ndarray, label_index: np.ndarray,
                       begins: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first_token, last_token, label)`` of each entity in one sentence's tag ids.

    ``label_index`` and ``begins`` come from :func:`tag_roles`; ``label``
    is a label index (1-based into its ``labels``). A token begins an entity
    when its label is not ``O`` and its tag begins one or its label differs
    from the previous token's, exactly as the exported graph
    (:mod:`clinical_ner.model.inference_graph`) decides with tensor ops; the LiteRT
    runtime uses this NumPy version.

    >>> _, label_index, begins = tag_roles(["O", "B-test", "I-test"])
    >>> entity_token_spans(np.array([1, 2, 0, 2, 1]), label_index, begins)
    [(0, 1, 1), (3, 3, 1), (4, 4, 1)]
    """
    labels = label_index[tag_ids]
    previous = np.concatenate([[0], labels[:-1]])
    starts = ((labels > 0) & (begins[tag_ids] | (previous != labels))).tolist()
    labels = labels.tolist()
    spans = []
    for first, starts_here in enumerate(starts):
        if starts_here:
            last = first
            while last + 1 < len(labels) and labels[last + 1] == labels[first] \
                    and not starts[last + 1]:
                last += 1
            spans.append((first, last, labels[first]))
    return spans


def inventory_scheme(tags: Sequence[str]) -> str:
    """The scheme of a model saved before models stored theirs: ``"bioes"`` if any tag is ``E-``/``S-``.

    Only for reading such models (their tag lists came from
    :func:`tag_inventory`, so the prefixes tell the scheme apart); everything
    else takes the scheme from the configuration.
    """
    return "bioes" if any(parse_tag(tag)[0] in ("E", "S") for tag in tags) else "bio"


class TransitionMask(NamedTuple):
    """Which tag sequences a scheme allows, as boolean arrays over a tag list.

    ``allowed[i, j]``: tag ``i`` may be followed by tag ``j`` (``[K, K]``);
    ``start``: tags that may begin a sentence (``[K]``); ``end``: tags that
    may end one (``[K]``).
    """

    allowed: np.ndarray
    start: np.ndarray
    end: np.ndarray


def transition_mask(tags: Sequence[str], scheme: str) -> TransitionMask:
    """The transitions, first tags and last tags that ``scheme`` allows among ``tags``.

    ``tags`` are a model's tags (ids are their positions), all of
    ``scheme`` (``"bio"`` or ``"bioes"``, see :data:`MODEL_SCHEMES`), and
    unique. The CRF layer forbids what the mask forbids when decoding;
    another decoder (a LiteRT export) can take the same arrays.

    BIO: ``I-X`` may only follow ``B-X`` or ``I-X`` and cannot start a
    sentence; everything else is allowed, and any tag may end a sentence.

    BIOES: ``B-X`` and ``I-X`` must be followed by ``I-X`` or ``E-X``;
    ``O``, ``E-*`` and ``S-*`` must be followed by ``O``, ``B-*`` or ``S-*``;
    a sentence starts with ``O``, ``B-*`` or ``S-*`` and ends with ``O``,
    ``E-*`` or ``S-*``.

    >>> mask = transition_mask(["O", "B-test", "I-test"], "bio")
    >>> mask.allowed.astype(int).tolist()
    [[1, 1, 0], [1, 1, 1], [1, 1, 1]]
    >>> mask.start.tolist(), mask.end.tolist()
    ([True, True, False], [True, True, True])
    """
    canonical = canonical_scheme(scheme, MODEL_SCHEMES)
    if len(set(tags)) != len(tags):
        raise ValueError(f"tags must be unique, got {list(tags)}")
    parsed = []
    prefixes_allowed = MODEL_SCHEME_PREFIXES[canonical]
    for tag in tags:
        # tag[0], not parse_tag's prefix: BILOU's U-/L- are not a model's tags.
        if tag != OUTSIDE and not (is_tag(tag) and tag[0] in prefixes_allowed):
            raise ValueError(
                f"tag {tag!r} is not a {canonical.upper()} tag: expected O or one of "
                f"{'/'.join(p + '-' for p in prefixes_allowed)} and an entity type")
        parsed.append(parse_tag(tag))
    num_tags = len(parsed)
    allowed = np.zeros((num_tags, num_tags), dtype=bool)
    for i, (prefix_from, type_from) in enumerate(parsed):
        for j, (prefix_to, type_to) in enumerate(parsed):
            if canonical == "bioes":
                if prefix_from in ("B", "I"):
                    allowed[i, j] = prefix_to in ("I", "E") and type_to == type_from
                else:
                    allowed[i, j] = prefix_to in (OUTSIDE, "B", "S")
            elif prefix_to == "I":
                allowed[i, j] = prefix_from in ("B", "I") and type_from == type_to
            else:
                allowed[i, j] = True
    prefixes = [prefix for prefix, _ in parsed]
    if canonical == "bioes":
        start = np.array([prefix in (OUTSIDE, "B", "S") for prefix in prefixes], dtype=bool)
        end = np.array([prefix in (OUTSIDE, "E", "S") for prefix in prefixes], dtype=bool)
    else:
        start = np.array([prefix != "I" for prefix in prefixes], dtype=bool)
        end = np.ones(num_tags, dtype=bool)
    return TransitionMask(allowed, start, end)


def allowed_tag_mask(iob2_tags: Sequence[str], tags: Sequence[str], scheme: str,
                     open_labels: Iterable[str]) -> np.ndarray:
    """Which of the model's ``tags`` each token of a partly labelled sentence may take.

    ``iob2_tags`` are the sentence's gold tags; ``open_labels`` the labels
    that its corpus does not annotate completely (coverage ``partial`` or
    ``none``, :mod:`clinical_ner.formats.corpora`). Returns bool
    ``[tokens, len(tags)]``:

    * a token inside a mention may take only the tag that ``scheme`` gives it;
    * an unmarked token may take ``O`` or any tag of an open label, except
      (BIO) ``I-X`` right after an ``X`` mention, which would lengthen that
      mention; the CRF's transition mask rules out the other sequences the
      scheme forbids (an ``I-X`` after ``O``, for instance).

    With no open labels each token allows exactly its gold tag.

    >>> tags = ["O", "B-problem", "I-problem", "B-test", "I-test"]
    >>> allowed_tag_mask(["B-problem", "O"], tags, "bio", ["test"]).astype(int).tolist()
    [[0, 1, 0, 0, 0], [1, 0, 0, 1, 1]]
    >>> allowed_tag_mask(["B-problem", "O"], tags, "bio", ["problem"]).astype(int).tolist()
    [[0, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    """
    index = {tag: position for position, tag in enumerate(tags)}
    converted = to_scheme(list(iob2_tags), scheme)
    unknown = sorted({tag for tag in converted if tag not in index})
    if unknown:
        raise ValueError(f"tag(s) {', '.join(unknown)} are not among the model's tags")
    open_labels = set(open_labels)
    unmarked = np.array([tag == OUTSIDE or parse_tag(tag)[1] in open_labels for tag in tags])
    is_bio = canonical_scheme(scheme, MODEL_SCHEMES) == "bio"
    mask = np.zeros((len(converted), len(tags)), dtype=bool)
    for position, tag in enumerate(converted):
        if tag != OUTSIDE:
            mask[position, index[tag]] = True
            continue
        mask[position] = unmarked
        previous = converted[position - 1] if position else OUTSIDE
        lengthening = f"I-{parse_tag(previous)[1]}" if previous != OUTSIDE else None
        if is_bio and lengthening in index:
            mask[position, index[lengthening]] = False
    return mask
