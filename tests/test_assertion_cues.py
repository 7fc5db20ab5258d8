"""Cued copies of training sentences (``assertion_cue_copies``): more negated and hedged problems."""
import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from clinical_ner.config import NERConfig
from clinical_ner.errors import ConfigError
from clinical_ner.text.document import ASSERTION_CLASSES, Sentence
from clinical_ner.training import assertion_cues
from clinical_ner.training.assertion_cues import cued_copies, cues
from clinical_ner.training.multi_corpus import TrainingCorpora
from clinical_ner.training.trainer import _tagger_skips_copies, _with_cued_copies, train
from clinical_ner.model.vocab import Vocabulary
from helpers import negation_sentences, tiny_assertion_config, write_i2b2

ALL_CLASSES = ["present", "absent", "possible"]


def note() -> Sentence:
    return Sentence(
        tokens=["CT", "showed", "a", "nodule", "and", "no", "effusion", ";", "fever", "."],
        tags=["B-test", "O", "O", "B-problem", "O", "O", "B-problem", "O", "B-problem", "O"],
        source="note.txt:1",
        assertions={(3, 3): "present", (6, 6): "absent", (8, 8): "present"})


def check_copy(original: Sentence, cued: Sentence) -> None:
    """One cue of the lexicon beside one problem that was present; everything else as it was."""
    width = len(cued.tokens) - len(original.tokens)
    at = next((i for i, (a, b) in enumerate(zip(original.tokens, cued.tokens)) if a != b),
              len(original.tokens))
    # A cue equal to the tokens after it could start later; take the lexicon's word for it.
    candidates = [cue for cue in cues() if len(cue.tokens) == width]
    inserted = next((i, cue) for i in range(at, -1, -1) for cue in candidates
                    if tuple(cued.tokens[i:i + width]) == cue.tokens
                    and cued.tokens[:i] + cued.tokens[i + width:] == original.tokens)
    at, cue = inserted
    assert cued.tags[at:at + width] == ["O"] * width
    assert cued.tags[:at] + cued.tags[at + width:] == original.tags

    def moved(position: int) -> int:
        return position + width if position >= at else position

    changed = [(span, cued.assertions[(moved(span[0]), moved(span[1]))])
               for span in original.assertions
               if cued.assertions[(moved(span[0]), moved(span[1]))] != original.assertions[span]]
    assert len(cued.assertions) == len(original.assertions)
    assert len(changed) == 1
    (first, last), new_class = changed[0]
    assert original.assertions[(first, last)] == "present" and new_class == cue.assertion
    assert at == first if cue.before else at == last + 1
    assert cued.source == f"{original.source} (cued copy)"


def test_every_present_problem_gets_a_copy_with_a_cue_beside_it_at_share_one():
    original = note()
    kept = copy.deepcopy(original)
    copies = cued_copies([original], share=1.0, seed=0, classes=ALL_CLASSES)
    assert len(copies) == 2  # two present problems; the absent one is not copied
    for source, cued in copies:
        assert source == 0
        check_copy(original, cued)
    assert original == kept


@pytest.mark.parametrize("seed", range(20))
def test_copies_are_well_formed_whatever_the_draw(seed):
    sentences = [note() for _ in range(5)]
    for source, cued in cued_copies(sentences, share=0.5, seed=seed, classes=ALL_CLASSES):
        check_copy(sentences[source], cued)


def test_the_share_and_the_seed_decide_which_problems_are_copied():
    sentences = [note() for _ in range(150)]  # 300 present problems
    assert cued_copies(sentences, share=0.0, seed=1, classes=ALL_CLASSES) == []
    fifth = cued_copies(sentences, share=0.2, seed=1, classes=ALL_CLASSES)
    assert 30 <= len(fifth) <= 90  # 60 expected; the binomial's 4.9 standard deviations
    assert cued_copies(sentences, share=0.2, seed=1, classes=ALL_CLASSES) == fifth
    assert cued_copies(sentences, share=0.2, seed=2, classes=ALL_CLASSES) != fifth
    # About half the copies hedged (note() has no possible problem of its own), not the
    # lexicon's one cue in four.
    hedged = sum("possible" in cued.assertions.values() for _, cued in fifth)
    assert 0.25 * len(fifth) <= hedged <= 0.75 * len(fifth)


def test_only_the_data_s_classes_are_used():
    copies = cued_copies([note() for _ in range(20)], share=1.0, seed=4,
                         classes=["present", "absent"])
    assert copies and all("possible" not in cued.assertions.values() for _, cued in copies)
    assert cued_copies([note()], share=1.0, seed=4, classes=["present"]) == []
    untagged = Sentence(tokens=["pain"], assertions={(0, 0): "present"})
    assert cued_copies([untagged], share=1.0, seed=4, classes=ALL_CLASSES) == []


def test_the_lexicon_is_medspacy_s_with_its_licence():
    data = json.loads(assertion_cues.CUES_FILE.read_text(encoding="utf-8"))
    assert data["licence"][0] == "MIT License" and "medspacy" in " ".join(data["licence"])
    lexicon = cues()
    assert len(lexicon) == len(data["cues"]) > 50
    assert all(cue.tokens and cue.assertion in ASSERTION_CLASSES for cue in lexicon)
    assert {cue.assertion for cue in lexicon} == {"absent", "possible"}
    assert {cue.before for cue in lexicon} == {True, False}


def test_copies_join_their_source_s_corpus():
    sentences = [note(), Sentence(tokens=["Cough", "."], tags=["B-problem", "O"]), note()]
    training = TrainingCorpora(SimpleNamespace(), sentences, np.array([0, 1, 2]))
    config = NERConfig(assertion_cue_copies=1.0, seed=7)
    lines = []
    combined, combined_training = _with_cued_copies(config, sentences, training, lines.append)
    assert lines == ["assertion cues: 4 cued copies of training sentences "
                     "(assertion_cue_copies 1)"]
    assert combined[:3] == sentences and len(combined) == 7
    assert combined_training.sentences == combined
    assert combined_training.corpus_index.tolist() == [0, 1, 2, 0, 0, 2, 2]


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.2"])
def test_the_share_must_be_a_number_from_zero_to_one(value):
    with pytest.raises(ConfigError, match="assertion_cue_copies must be (in|a number)"):
        NERConfig(assertion_cue_copies=value)


def test_training_adds_the_copies_and_their_words(tmp_path):
    data = write_i2b2(tmp_path / "data", negation_sentences(40, seed=8))
    lines = []
    train(data, tmp_path / "model", config=tiny_assertion_config(
        epochs=1, assertion_cue_copies=0.5), progress=False, emit=lines.append)
    logged = [line for line in lines if line.startswith("assertion cues: ")]
    assert len(logged) == 1 and int(logged[0].split()[2]) > 0
    # The cues' words are training words: the vocabulary has rows for them.
    words = set(Vocabulary.load(tmp_path / "model").words)
    cue_words = {token.lower() for cue in cues() for token in cue.tokens}
    assert len(cue_words & words) > 5
    assert NERConfig.load(tmp_path / "model").assertion_cue_copies == 0.5


def test_copies_train_the_assertion_output_only():
    """A copy allows every tag (no CRF loss); the originals keep their gold path or mask."""
    tags = ["O", "B-problem", "I-problem", "B-test", "I-test"]
    original = Sentence(tokens=["CT", "pain"], tags=["B-test", "B-problem"])
    cued = Sentence(tokens=["CT", "no", "pain"], tags=["B-test", "O", "B-problem"])
    masks = _tagger_skips_copies(None, [original, cued], 1, tags, "bio")
    assert masks[0].astype(int).tolist() == [[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]
    assert masks[1].shape == (3, 5) and masks[1].all()
    partial = [np.array([[True, False, False, True, True]] * 2)]
    masks = _tagger_skips_copies(partial, [original, cued], 1, tags, "bio")
    assert masks[0] is partial[0] and masks[1].all()

