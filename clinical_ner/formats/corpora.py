"""Corpus files: several corpora that label different things, described for training and scoring.

A corpus file (TOML, or JSON with the same structure) lists the model's
labels and, for each corpus, where its data is, how its labels map onto the
model's and how completely it annotates each of them::

    labels = ["problem", "test", "treatment"]
    select = { maccrobat = 1.0 }          # dev score that chooses the epoch

    [[corpus]]
    name = "maccrobat"
    train = ["maccrobat/train.conll"]     # paths relative to this file
    dev = "maccrobat/dev.conll"

    [[corpus]]
    name = "ncbi"
    train = "ncbi-disease/train.conll"
    format = "conll"                      # default "auto"
    weight = 0.5                          # share of its sentences per epoch
    label_map = { Disease = "problem" }   # every source label -> model label ("" drops it)
    coverage = { problem = "partial" }    # complete | partial | none

``coverage`` defaults to ``complete`` for a label the corpus maps onto and
``none`` for the others. ``select`` weighs the dev corpora's exact micro F1
into the score that chooses the epoch; without it every dev corpus counts
equally. ``docs/guide/multi-corpus.md`` has the full description and
``docs/design/multi-corpus.md`` the training loss.

Mistakes are :class:`~clinical_ner.errors.ConfigError` naming the file, the
corpus and the label, raised before any training starts
(:func:`check_corpus_labels` checks the data against the mappings).
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from clinical_ner.errors import ConfigError
from clinical_ner.formats import Corpus, FORMATS, detect_format, load_corpus

#: How a corpus annotates one of the model's labels: ``complete`` (an
#: unmarked token is not this label), ``partial`` (its mentions are this label,
#: but unmarked text may still be) or ``none`` (it does not annotate it).
LABEL_COVERAGES = ("complete", "partial", "none")
_CORPUS_KEYS = {"name", "train", "dev", "format", "weight", "label_map", "coverage"}
_TOP_KEYS = {"labels", "select", "corpus"}
_BRAT_TYPE = re.compile(r"T[^\t]*\t(\S+)")


@dataclass
class CorpusSpec:
    """One corpus of a corpus file (paths resolved against the file's folder)."""

    name: str
    train: list[Path]
    dev: Path | None = None
    format: str = "auto"
    weight: float = 1.0
    label_map: dict[str, str | None] | None = None
    coverage: dict[str, str] = field(default_factory=dict)

    def open_labels(self) -> list[str]:
        """The model labels an unmarked token of this corpus may still be (not ``complete``)."""
        return sorted(label for label, how in self.coverage.items() if how != "complete")

    def scored_labels(self) -> list[str]:
        """The labels its mentions can carry (coverage other than ``none``): what it can score."""
        return sorted(label for label, how in self.coverage.items() if how != "none")

    def to_dict(self) -> dict:
        return {"name": self.name, "train": [str(p) for p in self.train],
                "dev": None if self.dev is None else str(self.dev), "format": self.format,
                "weight": self.weight, "label_map": self.label_map, "coverage": self.coverage}


@dataclass
class CorpusSet:
    """A corpus file: the model's labels, the corpora and the dev selection weights."""

    labels: list[str]
    corpora: list[CorpusSpec]
    selection: dict[str, float]
    source: str = "<corpus file>"

    def by_name(self, name: str) -> CorpusSpec:
        for spec in self.corpora:
            if spec.name == name:
                return spec
        raise ConfigError(f"{self.source}: no corpus named {name!r} (the file has "
                          f"{', '.join(spec.name for spec in self.corpora)})")

    def is_partly_labelled(self) -> bool:
        """Whether any corpus leaves a label open (else training is plain concatenation)."""
        return any(spec.open_labels() for spec in self.corpora)

    def dev_corpora(self) -> list[CorpusSpec]:
        return [spec for spec in self.corpora if spec.dev is not None]

    def to_dict(self) -> dict:
        return {"labels": self.labels, "select": self.selection,
                "corpus": [spec.to_dict() for spec in self.corpora]}


def read_corpus_file(path: str | Path) -> CorpusSet:
    """Read and check a corpus file (``.toml`` or ``.json``); paths become absolute."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{where}: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table (JSON object) at the top")
    unknown = sorted(set(values) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected "
                          f"{', '.join(sorted(_TOP_KEYS))}")
    labels = values.get("labels")
    if not isinstance(labels, list) or not labels or not all(
            isinstance(label, str) and re.fullmatch(r"\S+", label) for label in labels):
        raise ConfigError(f"{where}: labels must be a non-empty list of the model's labels")
    corpora_values = values.get("corpus")
    if not isinstance(corpora_values, list) or not corpora_values:
        raise ConfigError(f"{where}: no [[corpus]] tables")
    corpora = [_corpus_spec(item, index, path.parent, set(labels), where)
               for index, item in enumerate(corpora_values, start=1)]
    names = [spec.name for spec in corpora]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: corpus names must be unique, got {', '.join(names)}")
    for label in labels:
        if not any(spec.coverage.get(label, "none") != "none" for spec in corpora):
            raise ConfigError(f"{where}: no corpus annotates label {label}")
    selection = values.get("select")
    if selection is None:
        selection = {spec.name: 1.0 for spec in corpora if spec.dev is not None}
    if not isinstance(selection, dict):
        raise ConfigError(f"{where}: select must be a table of corpus name = weight")
    for name, weight in selection.items():
        spec = next((spec for spec in corpora if spec.name == name), None)
        if spec is None or spec.dev is None:
            raise ConfigError(f"{where}: select names {name!r}, which is not a corpus with "
                              "a dev path")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"{where}: select weight of {name} must be a number >= 0")
    if selection and sum(selection.values()) <= 0:
        raise ConfigError(f"{where}: select weights must not all be 0")
    return CorpusSet(sorted(set(labels)), corpora,
                     {name: float(weight) for name, weight in selection.items()}, where)


def _corpus_spec(item, index: int, folder: Path, labels: set[str], where: str) -> CorpusSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ConfigError(f"{where}: corpus {index} needs a name")
    name = item["name"]
    context = f"{where}: corpus {name}"
    unknown = sorted(set(item) - _CORPUS_KEYS)
    if unknown:
        raise ConfigError(f"{context}: unknown key(s) {', '.join(unknown)}; expected "
                          f"{', '.join(sorted(_CORPUS_KEYS))}")
    train = item.get("train")
    train = [train] if isinstance(train, str) else train
    if not isinstance(train, list) or not train or not all(isinstance(p, str) for p in train):
        raise ConfigError(f"{context}: train must be a path or a list of paths")
    dev = item.get("dev")
    if dev is not None and not isinstance(dev, str):
        raise ConfigError(f"{context}: dev must be a path")
    data_format = item.get("format", "auto")
    if data_format not in ("auto", *FORMATS):
        raise ConfigError(f"{context}: format must be auto or one of {', '.join(FORMATS)}")
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise ConfigError(f"{context}: weight must be a number > 0")
    label_map = item.get("label_map")
    if label_map is not None:
        if not isinstance(label_map, dict) or not all(
                isinstance(value, str) for value in label_map.values()):
            raise ConfigError(f"{context}: label_map must be a table of source label = "
                              "model label (\"\" drops the source label)")
        label_map = {source: (target or None) for source, target in label_map.items()}
        for source, target in label_map.items():
            if target is not None and target not in labels:
                raise ConfigError(f"{context}: label_map maps {source} onto {target}, which "
                                  f"is not one of the model's labels ({', '.join(sorted(labels))})")
    coverage = item.get("coverage", {})
    if not isinstance(coverage, dict):
        raise ConfigError(f"{context}: coverage must be a table of label = "
                          f"{' | '.join(LABEL_COVERAGES)}")
    for label, how in coverage.items():
        if label not in labels:
            raise ConfigError(f"{context}: coverage names label {label}, which is not one of "
                              f"the model's labels ({', '.join(sorted(labels))})")
        if how not in LABEL_COVERAGES:
            raise ConfigError(f"{context}: coverage of {label} must be one of "
                              f"{', '.join(LABEL_COVERAGES)}, got {how!r}")
    mapped = (set(label for label in label_map.values() if label) if label_map is not None
              else None)
    full_coverage = {}
    for label in sorted(labels):
        default = "complete" if mapped is None or label in mapped else "none"
        full_coverage[label] = coverage.get(label, default)
        if mapped is not None and label in mapped and full_coverage[label] == "none":
            raise ConfigError(f"{context}: label_map maps onto {label} but its coverage is "
                              "none")
    return CorpusSpec(
        name=name, train=[(folder / p).resolve() for p in train],
        dev=None if dev is None else (folder / dev).resolve(), format=data_format,
        weight=float(weight), label_map=label_map, coverage=full_coverage)


def source_labels(path: str | Path, data_format: str = "auto") -> set[str]:
    """The entity types a corpus's files use before any label map (brat: every ``T`` type)."""
    data_format = detect_format(path) if data_format == "auto" else data_format
    if data_format != "brat":
        return set(load_corpus(path, data_format, skip_invalid=True).labels)
    path = Path(path)
    files = [path.with_suffix(".ann")] if path.is_file() else sorted(path.glob("*.ann"))
    types = set()
    for ann in files:
        for line in ann.read_text(encoding="utf-8-sig", errors="replace").splitlines():
            match = _BRAT_TYPE.match(line)
            if match:
                types.add(match[1])
    return types


def check_corpus_labels(corpus_set: CorpusSet, dev: bool = True) -> None:
    """:func:`check_label_map` for every corpus, on its training files and, with ``dev``,
    its dev file (in a cluster only the chief reads dev files)."""
    for spec in corpus_set.corpora:
        check_label_map(corpus_set, spec,
                        list(spec.train) + ([spec.dev] if dev and spec.dev is not None else []),
                        spec.format)


def check_label_map(corpus_set: CorpusSet, spec: CorpusSpec, paths: list, data_format: str
                    ) -> None:
    """Every source label of ``spec``'s label map occurs in ``paths`` and every label found
    there is in the map (or, without a map, is a model label).

    Reads the files' label names (never their text into a message), so that
    a typo in a mapping fails before training rather than silently dropping
    a label.
    """
    found: set[str] = set()
    for path in paths:
        found |= source_labels(path, data_format)
    context = f"{corpus_set.source}: corpus {spec.name}"
    if spec.label_map is not None:
        _check_map_sources(spec.label_map, found, f"{context}: label_map", "corpus")
        unmapped = sorted(found - set(spec.label_map))
        if unmapped:
            raise ConfigError(f"{context}: label {unmapped[0]} is not in its label_map; map "
                              f"it, or drop it with {unmapped[0]} = \"\"")
    else:
        unknown = sorted(found - set(corpus_set.labels))
        if unknown:
            raise ConfigError(f"{context}: label {unknown[0]} is not one of the model's "
                              f"labels ({', '.join(corpus_set.labels)}); map it with "
                              "label_map (\"\" drops it)")
        # Without a map every label defaults to complete: a label the files never
        # use would teach the model that it never occurs.
        absent = sorted(label for label, how in spec.coverage.items()
                        if how != "none" and label not in found)
        if absent:
            raise ConfigError(f"{context}: its files have no {absent[0]} mention, but its "
                              f"coverage of {absent[0]} is {spec.coverage[absent[0]]}; set "
                              f"coverage {absent[0]} = \"none\" if the corpus does not "
                              "annotate it")


def check_label_map_sources(label_map: dict[str, str | None], paths: list,
                            data_format: str = "auto") -> None:
    """``--label-map``: every source label it names occurs in at least one of ``paths``.

    A misspelt source label would otherwise map nothing, and its mentions
    would silently train, or be scored, as ``O``.
    """
    found: set[str] = set()
    for path in paths:
        found |= source_labels(path, data_format)
    _check_map_sources(label_map, found, "--label-map", "data")


def _check_map_sources(label_map: dict, found: set[str], context: str, what: str) -> None:
    missing = sorted(set(label_map) - found)
    if missing:
        raise ConfigError(f"{context} names label {missing[0]}, which the {what} does not "
                          f"have (it has {', '.join(sorted(found)) or 'no labels'})")


def load_spec_corpus(spec: CorpusSpec, path: Path, skip_invalid: bool = False) -> Corpus:
    """One of ``spec``'s files read in its format, with its label map applied."""
    return load_corpus(path, spec.format, label_map=spec.label_map, skip_invalid=skip_invalid)
