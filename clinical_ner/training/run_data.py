"""What a training run trains on, recorded in its checkpoint so that ``--resume`` keeps it.

A resumed run on other data, or without the dev data that chose its best
epoch, would silently overwrite ``model.keras`` with a model of no single
run. The checkpoint therefore records, when the run starts, a digest of the
sentences (not the paths: a moved data folder is the same data) and the
options that shape them; a resume compares them and names the option that
differs. The digests hold no clinical text, and no message prints any.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from clinical_ner.errors import ConfigError
from clinical_ner.text.document import Sentence

# (fact, the option that sets it, what a difference means), in the order they are checked:
# the options that shape the sentences first, so that a changed --label-map is named as
# such and not as other training sentences.
_FACTS = (
    ("corpus_file", "--corpus", "a corpus file or --train/--dev"),
    ("corpora", "--corpus", "its corpora's sentences, weights or coverage, or its select"),
    ("input_format", "--input-format", "the format read"),
    ("label_map", "--label-map", "the label map"),
    ("assertion_map", "--assertion-map", "the assertion map"),
    ("dev", "--dev", "dev data given or not"),
    ("train_sha256", "--train", "the training sentences"),
    ("dev_sha256", "--dev", "the dev sentences"),
)


def sentences_digest(sentences: Sequence[Sentence]) -> str:
    """SHA-256 of the sentences' tokens, tags and assertions: what training reads of them."""
    digest = hashlib.sha256()
    for sentence in sentences:
        assertions = sorted([list(span), value] for span, value in sentence.assertions.items())
        digest.update(json.dumps([sentence.tokens, sentence.tags, assertions]).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _map_digest(mapping: dict | None) -> str | None:
    if mapping is None:
        return None
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode("utf-8")).hexdigest()


def dev_parts(dev: Sequence[Sentence] | dict[str, Sequence[Sentence]]
              ) -> dict[str, Sequence[Sentence]]:
    """The dev sentences by dev corpus name (``""`` for the one dev set of ``--dev``)."""
    return dev if isinstance(dev, dict) else {"": dev}


def data_facts(train: Sequence[Sentence], dev: Sequence[Sentence] | dict | None, has_dev: bool,
               corpus_file: bool, data_format: str, label_map: dict | None,
               assertion_map: dict | None, corpora: dict | None = None) -> dict:
    """The facts that define a run's data, as ``checkpoint/state.json`` records them.

    ``dev`` is the dev sentences (a corpus file's: a list per dev corpus name),
    or ``None`` where this process does not read them (a worker other than
    the chief), which leaves their digest out. ``corpora``: a corpus file's
    settings that shape training beside the sentences
    (:meth:`~clinical_ner.training.multi_corpus.TrainingCorpora.settings`).
    """
    facts = {"corpus_file": corpus_file, "input_format": data_format,
             "label_map": _map_digest(label_map), "assertion_map": _map_digest(assertion_map),
             "dev": has_dev, "train_sentences": len(train),
             "train_sha256": sentences_digest(train)}
    if corpora is not None:
        facts["corpora"] = _map_digest(corpora)
    if dev is not None and has_dev:
        parts = dev_parts(dev)
        facts["dev_sentences"] = sum(len(part) for part in parts.values())
        facts["dev_sha256"] = sentences_digest(
            [sentence for name in sorted(parts) for sentence in parts[name]])
    return facts


def check_same_data(recorded: dict | None, current: dict, output: Path,
                    emit: Callable[[str], None]) -> None:
    """Refuse (:class:`ConfigError`) to resume ``output`` on other data than it was trained on.

    ``recorded`` is ``None`` for a checkpoint written before the facts were
    recorded: accepted with a warning, since nothing can be compared.
    """
    if recorded is None:
        emit(f"warning: {output}'s checkpoint does not record its training data (an older "
             "version wrote it), so resuming cannot check that the data is the same")
        return
    for fact, option, what in _FACTS:
        if fact not in recorded or fact not in current or recorded[fact] == current[fact]:
            continue
        if current["corpus_file"] and option != "--corpus":
            option = "--corpus"  # the corpus file sets the data, its maps and its dev corpora
        counts = ""
        if fact == "dev":
            what = ("given now, not by the interrupted run" if current["dev"]
                    else "given by the interrupted run, not now")
        if fact.endswith("_sha256"):
            part = fact.removesuffix("_sha256")
            counts = (f": {current[part + '_sentences']} sentences now, "
                      f"{recorded[part + '_sentences']} in the checkpoint")
        raise ConfigError(f"--resume continues {output} on the data it was trained on, but "
                          f"{option} differs ({what}{counts}); give it as the interrupted run "
                          "did, or train anew into another --output")
