"""From a sentence's predicted tag ids to entities: pure Python and NumPy, no TensorFlow.

The exported TensorFlow graph (:mod:`clinical_ner.inference`) assembles
entities with tensor ops from :func:`tag_structure`'s arrays;
:func:`entity_token_spans` is the same rule for one sentence in NumPy, which
the LiteRT runtime (:mod:`clinical_ner.runtime`) uses. Both read ill-formed
sequences as conlleval does.
"""
from __future__ import annotations

import numpy as np


def tag_structure(tags: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Entity labels, and for each tag its label index (0 = ``O``) and whether it begins an entity.

    ``B-`` and ``S-`` begin an entity; ``I-`` and ``E-`` continue one of the
    same label (or begin one after ``O`` or another label, as conlleval reads
    ill-formed sequences).

    >>> labels, label_index, begins = tag_structure(["O", "B-test", "I-test"])
    >>> labels, label_index.tolist(), begins.tolist()
    (['test'], [0, 1, 1], [False, True, False])
    """
    labels = sorted({tag[2:] for tag in tags if tag != "O"})
    label_index = np.zeros(len(tags), dtype=np.int32)
    begins = np.zeros(len(tags), dtype=bool)
    for position, tag in enumerate(tags):
        if tag != "O":
            label_index[position] = labels.index(tag[2:]) + 1
            begins[position] = tag[:2] in ("B-", "S-")
    return labels, label_index, begins


def iob2_tag(tag: str) -> str:
    """The IOB2 tag a BIO or BIOES tag stands for in a valid sequence."""
    return {"S-": "B-", "E-": "I-"}.get(tag[:2], tag[:2]) + tag[2:] if tag != "O" else tag


def entity_token_spans(tag_ids: np.ndarray, label_index: np.ndarray,
                       begins: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first_token, last_token, label)`` of each entity in one sentence's tag ids.

    ``label_index`` and ``begins`` come from :func:`tag_structure`; ``label``
    is a label index (1-based into its ``labels``). A token begins an entity
    when its label is not ``O`` and its tag begins one or its label differs
    from the previous token's, exactly as the exported graph decides.

    >>> _, label_index, begins = tag_structure(["O", "B-test", "I-test"])
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
