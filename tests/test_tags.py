"""Tag schemes: normalisation to IOB2, mentions, model-side schemes."""
from __future__ import annotations

import doctest
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_ner.model import tag_space as tag_space_module
from clinical_ner.text import tags as tags_module
from clinical_ner.text.document import Mention
from clinical_ner.errors import DataFormatError
from clinical_ner.text.tags import (
    MODEL_SCHEMES,
    detect_scheme,
    entity_labels,
    from_scheme,
    mentions_to_tags,
    normalize_tags,
    parse_tag,
    tags_to_mentions,
    to_iob2_tag,
    to_scheme,
)
from clinical_ner.model.tag_space import (
    allowed_tag_mask, inventory_scheme, tag_inventory, tag_roles, transition_mask,
)


@pytest.mark.parametrize(
    ("tags", "scheme", "expected"),
    [
        (["O", "B-X", "I-X", "B-X", "B-Y"], "bio", ["O", "B-X", "I-X", "B-X", "B-Y"]),
        (["O", "B-X", "I-X"], "iob2", ["O", "B-X", "I-X"]),
        # IOB1: I- starts entities, B- only splits two adjacent same-type entities.
        (["I-X", "I-X", "B-X", "O", "I-Y", "I-X"], "iob1",
         ["B-X", "I-X", "B-X", "O", "B-Y", "B-X"]),
        (["S-X", "B-Y", "I-Y", "E-Y", "O", "B-X", "E-X"], "bioes",
         ["B-X", "B-Y", "I-Y", "I-Y", "O", "B-X", "I-X"]),
        (["S-X", "B-Y", "E-Y"], "iobes", ["B-X", "B-Y", "I-Y"]),
        (["U-X", "B-Y", "I-Y", "L-Y", "O"], "bilou", ["B-X", "B-Y", "I-Y", "I-Y", "O"]),
    ],
)
def test_schemes_normalise_to_iob2(tags, scheme, expected):
    assert normalize_tags(tags, scheme) == expected
    assert normalize_tags(tags, "auto") == expected


def test_auto_reads_a_mixture_of_iob1_and_iob2():
    # An explicit IOB1 rejects "O B-X"; auto reads B- as a start and I- starts too.
    tags = ["O", "B-X", "I-X", "O", "I-Y", "B-Y"]
    assert normalize_tags(tags) == ["O", "B-X", "I-X", "O", "B-Y", "B-Y"]
    with pytest.raises(DataFormatError):
        normalize_tags(tags, "iob1")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["O", "B-X", "I-X"], "bio"),
        ([], "bio"),
        (["O", "I-X"], "iob1"),
        (["B-X", "I-Y"], "iob1"),
        (["B-X", "E-X"], "bioes"),
        (["U-X"], "bioes"),
        (["I-X", "L-X"], "bioes"),
    ],
)
def test_detect_scheme(tags, expected):
    assert detect_scheme(tags) == expected


@pytest.mark.parametrize(
    ("tags", "scheme", "bad_index", "fragment"),
    [
        (["O", "I-X"], "bio", 1, "an I- tag after O:"),
        (["B-X", "I-Y"], "bio", 1, "an I- tag after B- of another type"),
        (["I-X"], "bio", 0, "the sentence start"),
        (["O", "B-X"], "iob1", 1, "a B- tag after O:"),
        (["B-X", "S-X"], "bio", 1, "an S- tag is not a BIO tag"),
        (["B-X", "O"], "bioes", 1, "an O tag after B-:"),
        (["B-X", "I-X", "B-X", "E-X"], "bioes", 2, "a B- tag after I-:"),
        (["O", "E-X"], "bioes", 1, "an E- tag after O:"),
        (["S-X", "I-X"], "bioes", 1, "an I- tag after S-:"),
        (["O", "B-X", "I-X"], "bioes", 2, "ends inside an entity"),
    ],
)
def test_explicit_scheme_violation_names_file_and_line(tags, scheme, bad_index, fragment):
    lines = [10 + 2 * i for i in range(len(tags))]
    with pytest.raises(DataFormatError) as caught:
        normalize_tags(tags, scheme, path="data/train.conll", lines=lines)
    assert caught.value.path == "data/train.conll"
    assert caught.value.line == lines[bad_index]
    assert fragment in caught.value.problem


def test_auto_with_bioes_tags_is_strict():
    with pytest.raises(DataFormatError) as caught:
        normalize_tags(["S-X", "B-Y", "O"], lines=[1, 2, 3])
    assert caught.value.line == 3


def test_line_is_none_without_line_numbers():
    with pytest.raises(DataFormatError) as caught:
        normalize_tags(["O", "I-X"], "bio")
    assert caught.value.path == "<input>"
    assert caught.value.line is None


@pytest.mark.parametrize("bad", ["X-foo", "B-", "b-X", "I_X", "B-a b", "", "ZZSECRET", "o"])
def test_malformed_tags_are_errors_that_do_not_quote_them(bad):
    with pytest.raises(DataFormatError) as caught:
        normalize_tags(["O", bad], "auto", path="f.conll", lines=[4, 5])
    assert caught.value.line == 5
    assert "ZZSECRET" not in str(caught.value)
    assert "invalid tag" in caught.value.problem


def test_unknown_scheme_and_line_count_mismatch_are_value_errors():
    with pytest.raises(ValueError, match="unknown tag scheme"):
        normalize_tags(["O"], "bieo")
    with pytest.raises(ValueError, match="line numbers"):
        normalize_tags(["O", "O"], lines=[1])


def test_tags_to_mentions_and_back():
    tags = ["B-X", "I-X", "B-X", "O", "B-Y", "I-Y", "I-Y"]
    mentions = [Mention(0, 1, "X"), Mention(2, 2, "X"), Mention(4, 6, "Y")]
    assert tags_to_mentions(tags) == mentions
    assert mentions_to_tags(7, list(reversed(mentions))) == tags


@pytest.mark.parametrize("tags", [["I-X"], ["B-X", "I-Y"], ["S-X"], ["B-"]])
def test_tags_to_mentions_rejects_invalid_iob2(tags):
    with pytest.raises(ValueError):
        tags_to_mentions(tags)


@pytest.mark.parametrize(
    "mentions",
    [
        [Mention(0, 2, "X"), Mention(2, 3, "Y")],
        [Mention(1, 1, "X"), Mention(1, 1, "X")],
        [Mention(3, 4, "X")],
        [Mention(-1, 0, "X")],
        [Mention(2, 1, "X")],
    ],
)
def test_mentions_to_tags_rejects_overlaps_and_bad_ranges(mentions):
    with pytest.raises(ValueError):
        mentions_to_tags(4, mentions)


def test_to_scheme_bioes():
    assert to_scheme(["B-X", "B-X", "I-X", "O", "B-Y", "I-Y", "I-Y"], "bioes") == [
        "S-X", "B-X", "E-X", "O", "B-Y", "I-Y", "E-Y"
    ]
    assert to_scheme(["O", "B-X"], "bio") == ["O", "B-X"]
    with pytest.raises(ValueError):
        to_scheme(["O", "I-X"], "bioes")
    with pytest.raises(ValueError):
        to_scheme(["O"], "iob1")


@pytest.mark.parametrize(
    ("tags", "scheme", "expected"),
    [
        (["O", "I-X", "I-X"], "bio", ["O", "B-X", "I-X"]),
        (["B-X", "I-Y"], "bio", ["B-X", "B-Y"]),
        (["B-X", "O"], "bioes", ["B-X", "O"]),
        (["I-X", "E-X"], "bioes", ["B-X", "I-X"]),
        (["S-X", "I-X", "E-X"], "bioes", ["B-X", "B-X", "I-X"]),
        (["B-X", "E-X", "E-X"], "bioes", ["B-X", "I-X", "B-X"]),
        (["B-X", "B-X", "E-Y"], "bioes", ["B-X", "B-X", "B-Y"]),
    ],
)
def test_from_scheme_repairs_model_output(tags, scheme, expected):
    assert from_scheme(tags, scheme) == expected


@pytest.mark.parametrize(
    ("tags", "scheme"), [(["S-X"], "bio"), (["E-X"], "bio"), (["X"], "bioes")]
)
def test_from_scheme_rejects_foreign_or_malformed_tags(tags, scheme):
    with pytest.raises(ValueError):
        from_scheme(tags, scheme)


def test_tag_inventory():
    assert tag_inventory(["test", "problem", "test"], "bio") == [
        "O", "B-problem", "I-problem", "B-test", "I-test"
    ]
    assert tag_inventory(["x"], "bioes") == ["O", "B-x", "I-x", "E-x", "S-x"]
    assert tag_inventory([], "iob2") == ["O"]
    with pytest.raises(ValueError):
        tag_inventory(["chest pain"], "bio")


@st.composite
def sentences_with_mentions(draw):
    """A token count and non-overlapping mentions in random order."""
    mentions, position = [], 0
    for gap, length, label in draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(1, 4), st.sampled_from(["X", "Y", "problem"])),
            max_size=8,
        )
    ):
        first = position + gap
        mentions.append(Mention(first, first + length - 1, label))
        position = first + length
    n_tokens = position + draw(st.integers(0, 3))
    return n_tokens, draw(st.permutations(mentions))


def _to_iob1(iob2_tags: list[str]) -> list[str]:
    """Independent IOB1 encoder: B- only right after a same-type entity."""
    result = []
    for index, tag in enumerate(iob2_tags):
        previous = iob2_tags[index - 1] if index else "O"
        if tag.startswith("B-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "I-" + tag[2:]
        result.append(tag)
    return result


@given(sentences_with_mentions())
def test_mentions_round_trip_through_tags(case):
    n_tokens, mentions = case
    tags = mentions_to_tags(n_tokens, mentions)
    assert len(tags) == n_tokens
    assert tags_to_mentions(tags) == sorted(mentions, key=lambda m: m.first_token)


@given(sentences_with_mentions(), st.sampled_from(["bio", "bioes"]))
def test_schemes_round_trip(case, scheme):
    iob2 = mentions_to_tags(*case)
    converted = to_scheme(iob2, scheme)
    assert from_scheme(converted, scheme) == iob2
    assert normalize_tags(converted, scheme) == iob2
    assert normalize_tags(converted, "auto") == iob2
    assert set(converted) <= set(tag_inventory(["X", "Y", "problem"], scheme))


@given(sentences_with_mentions())
def test_iob1_and_bilou_read_back(case):
    iob2 = mentions_to_tags(*case)
    assert normalize_tags(_to_iob1(iob2), "iob1") == iob2
    assert normalize_tags(_to_iob1(iob2), "auto") == iob2
    bilou = [t.replace("S-", "U-").replace("E-", "L-") for t in to_scheme(iob2, "bioes")]
    assert normalize_tags(bilou, "bilou") == iob2


# The model's side: tag lists of a stated scheme.
BIO_TAGS = ["O", "B-problem", "I-problem", "B-test", "I-test"]
BIOES_TAGS = ["O", "B-problem", "I-problem", "E-problem", "S-problem", "S-test"]


def test_bio_constraints():
    allowed, allowed_start, allowed_end = transition_mask(BIO_TAGS, "bio")
    forbidden_pairs = {
        (source, target)
        for source in BIO_TAGS
        for target in ("I-problem", "I-test")
        if source[2:] != target[2:]
    }
    for i, source in enumerate(BIO_TAGS):
        for j, target in enumerate(BIO_TAGS):
            assert allowed[i, j] == ((source, target) not in forbidden_pairs), (source, target)
    assert allowed_start.tolist() == [True, True, False, True, False]
    assert allowed_end.tolist() == [True] * 5
    assert allowed.dtype == allowed_start.dtype == allowed_end.dtype == bool


def test_bioes_constraints():
    allowed, allowed_start, allowed_end = transition_mask(BIOES_TAGS, "bioes")
    allowed_pairs = {
        ("B-problem", "I-problem"), ("B-problem", "E-problem"),
        ("I-problem", "I-problem"), ("I-problem", "E-problem"),
    }
    for source in ("O", "E-problem", "S-problem", "S-test"):
        for target in ("O", "B-problem", "S-problem", "S-test"):
            allowed_pairs.add((source, target))
    for i, source in enumerate(BIOES_TAGS):
        for j, target in enumerate(BIOES_TAGS):
            assert allowed[i, j] == ((source, target) in allowed_pairs), (source, target)
    assert allowed_start.tolist() == [True, True, False, False, True, True]
    assert allowed_end.tolist() == [True, False, False, True, True, True]


@pytest.mark.parametrize(("tags", "scheme"), [
    (["O", "B-x", "B-x"], "bio"), (["O", "<pad>"], "bio"), (["O", "B-"], "bio"),
    (["X-y"], "bio"),
    # The scheme is stated, not guessed: tags of another scheme are an error.
    (["O", "B-x", "I-x", "E-x", "S-x"], "bio"), (["O", "U-x"], "bioes"),
    (["O", "B-x", "I-x"], "iob1"),
])
def test_transition_masks_reject_tags_outside_the_scheme(tags, scheme):
    with pytest.raises(ValueError):
        transition_mask(tags, scheme)




@pytest.mark.parametrize("scheme", MODEL_SCHEMES)
def test_every_inventory_has_a_mask_of_its_size(scheme):
    inventory = tag_inventory(["problem", "test", "treatment"], scheme)
    mask = transition_mask(inventory, scheme)
    assert mask.allowed.shape == (len(inventory), len(inventory))
    assert mask.start.shape == mask.end.shape == (len(inventory),)
    # O may start and end a sentence, and follow O, in both schemes.
    assert mask.start[0] and mask.end[0] and mask.allowed[0, 0]


def test_parse_tag_reads_bilou_as_bioes_and_rejects_non_tags():
    assert parse_tag("L-x") == ("E", "x")
    assert parse_tag("I-a-b") == ("I", "a-b")
    for bad in ["", "o", "B-", "B x", "X-y", "B-two words"]:
        with pytest.raises(ValueError):
            parse_tag(bad)


def test_entity_labels_and_iob2_tags_of_model_tags():
    assert entity_labels(BIOES_TAGS) == ["problem", "test"]
    assert entity_labels(["O"]) == []
    assert [to_iob2_tag(tag) for tag in BIOES_TAGS] == [
        "O", "B-problem", "I-problem", "I-problem", "B-problem", "B-test"]


@pytest.mark.parametrize("scheme", MODEL_SCHEMES)
def test_tag_roles_extract_the_same_spans_as_tags_to_mentions(scheme):
    inventory = tag_inventory(["b", "a"], scheme)
    roles = tag_roles(inventory)
    sequence = to_scheme(["B-a", "I-a", "O", "B-b", "B-b", "I-b", "I-b"], scheme)
    # The inference graph's rule: a tagged token begins an entity when its
    # tag begins one or its label differs from the previous token's.
    spans, previous = [], 0
    for position, tag in enumerate(sequence):
        tag_id = inventory.index(tag)
        label = int(roles.label_index[tag_id])
        if label and (roles.begins[tag_id] or label != previous):
            spans.append(Mention(position, position, roles.labels[label - 1]))
        elif label:
            spans[-1] = Mention(spans[-1].first_token, position, spans[-1].label)
        previous = label
    assert spans == tags_to_mentions(from_scheme(sequence, scheme))


def test_inventory_scheme_of_models_saved_without_one():
    for scheme in MODEL_SCHEMES:
        assert inventory_scheme(tag_inventory(["x", "y"], scheme)) == scheme
    assert inventory_scheme(["O"]) == "bio"


@pytest.mark.parametrize("module", [tags_module, tag_space_module], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    results = doctest.testmod(module)
    assert results.attempted > 0
    assert results.failed == 0


def _allowed_sequences(gold: list[str], scheme: str, open_labels: set[str]) -> set[tuple]:
    """What partial labels mean, by enumeration: every sequence valid in ``scheme``
    that keeps each gold mention as it is and adds mentions of open labels only."""
    tags = tag_inventory(["problem", "test"], scheme)
    gold_mentions = set(tags_to_mentions(gold))
    result = set()
    for path in itertools.product(tags, repeat=len(gold)):
        try:
            iob2 = tags_module.normalize_tags(list(path), scheme)
        except DataFormatError:
            continue
        mentions = set(tags_to_mentions(iob2))
        if gold_mentions <= mentions and all(m.label in open_labels
                                             for m in mentions - gold_mentions):
            result.add(path)
    return result


def _sequences_through_mask(gold: list[str], scheme: str, open_labels: set[str]) -> set[tuple]:
    tags = tag_inventory(["problem", "test"], scheme)
    mask = allowed_tag_mask(gold, tags, scheme, open_labels)
    transitions = transition_mask(tags, scheme)
    result = set()
    for ids in itertools.product(range(len(tags)), repeat=len(gold)):
        if all(mask[t, i] for t, i in enumerate(ids)) and transitions.start[ids[0]] \
                and transitions.end[ids[-1]] \
                and all(transitions.allowed[a, b] for a, b in zip(ids, ids[1:])):
            result.add(tuple(tags[i] for i in ids))
    return result


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
@pytest.mark.parametrize("open_labels", [set(), {"test"}, {"problem"}, {"problem", "test"}])
@pytest.mark.parametrize("gold", [
    ["O", "O", "O"],
    ["B-problem", "O", "O"],
    ["B-problem", "I-problem", "O", "B-test"],
    ["O", "B-test", "B-test", "O"],
])
def test_allowed_tag_mask_allows_exactly_the_sequences_that_agree_with_the_labels(
        scheme, open_labels, gold):
    assert _sequences_through_mask(gold, scheme, open_labels) \
        == _allowed_sequences(gold, scheme, open_labels)


def test_allowed_tag_mask_of_a_completely_labelled_sentence_is_its_tags():
    tags = tag_inventory(["problem", "test"], "bioes")
    gold = ["B-problem", "I-problem", "O", "B-test"]
    mask = allowed_tag_mask(gold, tags, "bioes", [])
    assert [tags[i] for i in mask.argmax(axis=1)] == to_scheme(gold, "bioes")
    assert mask.sum(axis=1).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="S-treatment"):
        allowed_tag_mask(["B-treatment"], tags, "bioes", [])
