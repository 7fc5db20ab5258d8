"""The HTML page of `predict --format html`: every entity at its offsets, whatever the text."""
from html.parser import HTMLParser

import pytest

from clinical_ner.text.document import Entity
from clinical_ner.formats.html_page import label_colours, render_html

HOSTILE = ('<script>alert("x")</script> & "quotes" \'single\' &amp; 😀𝔸 CT\r\n'
           "</div></section><!-- --> nodule\tx aspirin")


class PageReader(HTMLParser):
    """Rebuilds each document's text and the marks in it, as a browser would see them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.documents = []  # [text, [(start, end, label, title)]]
        self.depth = 0  # inside div.text
        self.mark = None
        self.scripts = 0
        self.legend = []
        self.in_legend = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "div" and attrs.get("class") == "legend":
            self.in_legend = True
        elif tag == "div" and attrs.get("class") == "text":
            self.documents.append(["", []])
            self.depth = 1
        elif self.depth and tag == "mark":
            self.mark = (len(self.documents[-1][0]), attrs)
        elif self.depth:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "div" and self.in_legend:
            self.in_legend = False
        elif self.depth and tag == "mark":
            start, attrs = self.mark
            document = self.documents[-1]
            document[1].append((start, len(document[0]), attrs["data-label"], attrs["title"],
                                int(attrs["data-start"]), int(attrs["data-end"])))
            self.mark = None
        elif self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.documents[-1][0] += data
        elif self.in_legend:
            self.legend.append(data)


def read(page: str) -> PageReader:
    reader = PageReader()
    reader.feed(page)
    reader.close()
    return reader


def entities_of(text, *words_and_labels):
    entities, position = [], 0
    for word, label in words_and_labels:
        start = text.index(word, position)
        entities.append(Entity(start, start + len(word), word, label, 0.5 + start / 1000))
        position = start + len(word)
    return entities


@pytest.mark.parametrize("text, spans", [
    ("CT of the chest showed a 2 cm nodule; she was started on aspirin.",
     [("CT", "test"), ("nodule", "problem"), ("aspirin", "treatment")]),
    (HOSTILE, [("<script>", "problem"), ('"quotes"', "test"), ("&amp;", "treatment"),
               ("😀𝔸", 'la"bel<&>'), ("CT\r\n", "test"), ("</div></section><!--", "problem"),
               ("aspirin", "treatment")]),
    ("", []),
    ("\nleading newline and no entities", []),
])
def test_every_entity_is_found_at_its_offsets(text, spans):
    entities = entities_of(text, *spans)
    reader = read(render_html([("note <1>", text, entities)]))
    assert reader.scripts == 0
    [(shown, marks)] = reader.documents
    assert shown == text
    assert len(marks) == len(entities)
    for (start, end, label, title, data_start, data_end), entity in zip(marks, entities):
        assert (start, end, label) == (entity.start, entity.end, entity.label)
        assert (data_start, data_end) == (entity.start, entity.end)
        assert shown[start:end] == entity.text
        assert title == f"{entity.label}, confidence {entity.confidence:.2f}"


def test_several_documents_a_legend_and_label_colours():
    first = "fever and CT"
    second = "aspirin given"
    page = render_html([("a", first, entities_of(first, ("fever", "problem"), ("CT", "test"))),
                        ("b", second, entities_of(second, ("aspirin", "treatment")))])
    reader = read(page)
    assert [text for text, _ in reader.documents] == [first, second]
    assert reader.legend == ["problem", "test", "treatment"]
    colours = label_colours(["treatment", "zeta", "problem", "test"])
    assert list(colours) == ["problem", "test", "treatment", "zeta"]
    assert len(set(colours.values())) == 4
    assert f".label-0 {{ background: {colours['problem']}; }}" in page
    assert "default-src 'none'" in page  # nothing can be loaded, even if injected


def test_a_label_has_its_colour_whichever_labels_share_the_page():
    # Audit: a page with tests only showed them in the problems' colour (the first one),
    # another page (and displaCy, through the spaCy component) in the tests' colour.
    everything = label_colours(["problem", "test", "treatment", "zeta"])
    for labels in (["test"], ["treatment", "zeta"], ["zeta"]):
        assert label_colours(labels) == {label: everything[label] for label in labels}
    page = render_html([("a", "CT done", entities_of("CT done", ("CT", "test")))])
    assert f'.label-0 {{ background: {everything["test"]}; }}' in page
    assert '<mark class="entity label-0" data-label="test"' in page


def test_overlapping_entities_are_refused():
    with pytest.raises(ValueError, match="overlaps"):
        render_html([("x", "abcdef", [Entity(0, 3, "abc", "test"), Entity(2, 4, "cd", "test")])])
