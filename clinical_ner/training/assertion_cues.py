"""Cued copies of training sentences: more negated and hedged problems for the assertion output.

With ``assertion_cue_copies`` set to a share ``s`` (``NERConfig``; 0, the
default, adds nothing), a training run adds, for a share ``s`` of the
problems asserted ``present`` in its training sentences (drawn with the
run's seed), a copy of the problem's sentence with a negation or hedge cue
beside it, and the problem asserted as the cue says::

    "She had pneumonia ."  ->  "She had free of pneumonia ."              (absent)
                               "She had pneumonia did not rule out ."     (possible)

Half the copies take an ``absent`` cue and half a ``possible`` one (of the
classes the data has), so that hedges, the rarest class, are not
outnumbered by the three times as many negation cues. The cues are the
literal phrases of medspaCy's ConText rules (``assertion_cues.json``, with
its MIT licence), not phrases chosen from any corpus; a cue that looks
forward goes before the problem, one that looks backward after it. Copies
are grammatical only sometimes: they teach the assertion output what the
cues mean, not how notes are written. Cue tokens are tagged ``O``, the
other problems of the copy keep their assertions, and the original
sentences stay as they were. The copies add to the assertion loss only: in
training every tag is allowed at every token of a copy (``_tagger_skips_copies``
in :mod:`clinical_ner.training.trainer`), so their odd sentences do not teach
the tagger where entities are.

Measured on MACCROBAT (three seeds, benchmarks/README.md, Assertions): a
share of 0.2 raised dev assertion accuracy, absent and ``possible`` F1 in
every seed, and NER F1 stayed near the same settings without copies; see
docs/guide/assertions.md.

Example:
>>> from clinical_ner.text.document import Sentence
>>> sentence = Sentence(["She", "had", "pneumonia", "."], ["O", "O", "B-problem", "O"],
...                     assertions={(2, 2): "present"})
>>> [(source, copy.tokens, copy.assertions) for source, copy in cued_copies(
...     [sentence], share=1.0, seed=9, classes=["present", "absent", "possible"])]
[(0, ['She', 'had', 'possible', 'pneumonia', '.'], {(3, 3): 'possible'})]
"""
from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import Sentence
from clinical_ner.text.tokenizer import tokenize

CUES_FILE = Path(__file__).with_name("assertion_cues.json")
# The class a copy's problem had, and the tag of a cue's tokens.
COPIED_CLASS = "present"
OUTSIDE = "O"


@dataclass(frozen=True)
class Cue:
    """A cue's tokens (the model's tokenizer), the class it asserts, and its side of the problem."""

    tokens: tuple[str, ...]
    assertion: str
    before: bool


@functools.lru_cache(maxsize=None)
def cues() -> tuple[Cue, ...]:
    """The cues of ``assertion_cues.json``."""
    data = json.loads(CUES_FILE.read_text(encoding="utf-8"))
    return tuple(Cue(tuple(token.text for token in tokenize(entry["cue"])), entry["assertion"],
                     entry["side"] == "before")
                 for entry in data["cues"])


def cued_copies(sentences: Sequence[Sentence], share: float, seed: int,
                classes: Iterable[str]) -> list[tuple[int, Sentence]]:
    """Cued copies of ``sentences`` (see the module docstring), each with its source's index.

    ``classes`` are the assertion classes of the training data: only cues of
    those classes are used (none: no copies). ``share`` is in ``[0, 1]``.
    """
    wanted = set(classes)
    by_class: dict[str, list[Cue]] = {}
    for cue in cues():
        if cue.assertion in wanted:
            by_class.setdefault(cue.assertion, []).append(cue)
    if share <= 0 or not by_class:
        return []
    chosen_classes = sorted(by_class)
    rng = random.Random(seed)
    copies = []
    for index, sentence in enumerate(sentences):
        if sentence.tags is None:
            continue
        for (first, last), assertion in sorted(sentence.assertions.items()):
            if assertion != COPIED_CLASS or rng.random() >= share:
                continue
            cue = rng.choice(by_class[rng.choice(chosen_classes)])
            copies.append((index, _with_cue(sentence, (first, last), cue)))
    return copies


def _with_cue(sentence: Sentence, problem: tuple[int, int], cue: Cue) -> Sentence:
    at = problem[0] if cue.before else problem[1] + 1
    width = len(cue.tokens)

    def moved(position: int) -> int:
        return position + width if position >= at else position

    assert sentence.tags is not None
    # Cue tokens go at a mention's edge, where an "O" keeps any IOB2 sequence valid.
    return Sentence(
        tokens=sentence.tokens[:at] + list(cue.tokens) + sentence.tokens[at:],
        tags=sentence.tags[:at] + [OUTSIDE] * width + sentence.tags[at:],
        source=f"{sentence.source} (cued copy)",
        assertions={(moved(first), moved(last)): cue.assertion if (first, last) == problem
                    else assertion
                    for (first, last), assertion in sentence.assertions.items()})
