"""One self-contained HTML page showing annotated texts: entities highlighted by label.

Everything from the text, the document names and the labels is escaped, so
any text is safe to show (``<script>`` shows as text); the page loads nothing
(no scripts, fonts or images, and a Content-Security-Policy that forbids
them). Each entity is a ``<mark>`` with its label's colour and its label and
confidence in the ``title`` attribute (shown on hover); a legend lists the
labels. An entity with an assertion other than ``present`` is drawn
differently (an absent one struck through in a dashed frame, a possible one
in a dotted frame, the others in a dashed grey one) and its badge names the
assertion; a second legend shows each assertion on the page. The text keeps
its line breaks and spaces.

Example:
>>> from clinical_ner.text.document import Entity
>>> page = render_html([("note", "CT <ok>", [Entity(0, 2, "CT", "test", 0.97)])])
>>> '<mark class="entity label-0" data-label="test" data-start="0" data-end="2" title="test, confidence 0.97">CT</mark> &lt;ok&gt;' in page
True
"""
from __future__ import annotations

import html
from typing import Sequence

from clinical_ner.text.document import ASSERTION_CLASSES, Entity

# Colour-blind-safe pastel backgrounds (Okabe-Ito hues, lightened); the known
# clinical labels always get the same colour, other labels the next free one.
PALETTE = ("#f4b6b6", "#a8d8f0", "#b9e6b0", "#f7dd9c", "#d9c2ec", "#f2c49b", "#c7d0d8",
           "#f0b8d8")
KNOWN_LABELS = ("problem", "test", "treatment")

_STYLE = """
body { font: 16px/1.6 system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; color: #555; margin-top: 2em; }
.legend { display: flex; flex-wrap: wrap; gap: .5em; margin: 1em 0; }
.legend span { padding: .1em .5em; border-radius: .3em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #ddd;
        border-radius: .3em; padding: 1em; }
mark { padding: .05em .15em; border-radius: .25em; color: inherit; }
mark.entity::after { content: attr(data-label); font-size: .65em; font-weight: 600;
                     vertical-align: super; margin-left: .2em; color: #444; }
mark[data-assertion] { border: 2px dashed #555; padding: 0 .1em; }
mark[data-assertion="present"] { border: none; padding: .05em .15em; }
mark[data-assertion="absent"] { border-color: #b3261e; text-decoration: line-through 2px #b3261e; }
mark[data-assertion="possible"] { border-style: dotted; border-color: #8a5a00; }
mark.entity[data-assertion]:not([data-assertion="present"])::after {
  content: attr(data-label) " \\b7  " attr(data-assertion); }
mark.entity[data-assertion="absent"]::after { color: #b3261e; display: inline-block; }
mark.entity[data-assertion="possible"]::after { color: #8a5a00; }
.assertion-legend mark { background: #eee; }
"""


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A background colour for each label: fixed ones for problem/test/treatment.

    A known label keeps its colour whichever labels come with it (a page with
    only tests shows them in the tests' colour, as displaCy does through the
    spaCy component); other labels take the colours after them, in sorted order.
    """
    present = set(labels)
    ordered = list(KNOWN_LABELS) + sorted(present - set(KNOWN_LABELS))
    return {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(ordered)
            if label in present}


def _escape(text: str) -> str:
    # A carriage return would be folded into the next line feed by an HTML
    # parser; as a character reference it stays part of the text.
    return html.escape(text, quote=True).replace("\r", "&#13;")


def _highlighted(text: str, entities: Sequence[Entity], classes: dict[str, str]) -> str:
    parts = []
    position = 0
    for entity in sorted(entities, key=lambda e: (e.start, e.end)):
        if entity.start < position or not 0 <= entity.start < entity.end <= len(text):
            raise ValueError(f"entity at {entity.start}:{entity.end} overlaps another or lies "
                             f"outside the text of {len(text)} characters")
        parts.append(_escape(text[position:entity.start]))
        confidence = ("" if entity.confidence is None
                      else f", confidence {entity.confidence:.2f}")
        assertion_attribute = assertion = ""
        if entity.assertion is not None:
            assertion_attribute = f' data-assertion="{_escape(entity.assertion)}"'
            assertion = f", {_escape(entity.assertion)}" + (
                "" if entity.assertion_confidence is None
                else f" ({entity.assertion_confidence:.2f})")
        parts.append(
            f'<mark class="entity {classes[entity.label]}" data-label="{_escape(entity.label)}" '
            f'data-start="{entity.start}" data-end="{entity.end}"{assertion_attribute} '
            f'title="{_escape(entity.label)}{assertion}{confidence}">'
            f"{_escape(text[entity.start:entity.end])}</mark>")
        position = entity.end
    parts.append(_escape(text[position:]))
    return "".join(parts)


def render_html(documents: Sequence[tuple[str, str, Sequence[Entity]]],
                title: str = "clinical-ner entities") -> str:
    """The page for ``(name, text, entities)`` triples, as one string.

    Entities must not overlap (``Annotator.annotate`` never returns
    overlapping ones); offsets are code points of ``text``.
    """
    labels = sorted({entity.label for _, _, entities in documents for entity in entities})
    colours = label_colours(labels)
    classes = {label: f"label-{index}" for index, label in enumerate(colours)}
    label_style = "".join(f".{classes[label]} {{ background: {colour}; }}\n"
                          for label, colour in colours.items())
    legend = "".join(f'<span class="{classes[label]}">{_escape(label)}</span>'
                     for label in colours)
    count = sum(len(entities) for _, _, entities in documents)
    assertions = {entity.assertion for _, _, entities in documents for entity in entities
                  if entity.assertion is not None}
    assertion_legend = ""
    if assertions:
        ordered = [name for name in ASSERTION_CLASSES if name in assertions]
        ordered += sorted(assertions - set(ASSERTION_CLASSES))
        assertion_legend = (
            '<div class="legend assertion-legend">Assertion: ' + "".join(
                f'<mark data-assertion="{_escape(name)}">{_escape(name)}</mark>'
                for name in ordered) + "</div>\n")
    body = []
    for number, (name, text, entities) in enumerate(documents, start=1):
        body.append(f'<section class="document" id="document-{number}">'
                    f"<h2>{_escape(name)} ({len(entities)} entities)</h2>"
                    f'<div class="text">{_highlighted(text, entities, classes)}</div></section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_escape(title)}</title>\n<style>{_STYLE}{label_style}</style>\n</head>\n"
        f"<body>\n<h1>{_escape(title)}</h1>\n"
        f"<p>{len(documents)} document(s), {count} entities. Hover over an entity for its "
        f"label{', assertion' if assertions else ''} and confidence.</p>\n"
        f'<div class="legend">{legend or "no entities"}</div>\n'
        + assertion_legend
        + "\n".join(body) + "\n</body>\n</html>\n")
