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
    # assertion_map = "map.json"          # brat: attribute values -> assertions

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

import contextlib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clinical_ner.errors import ConfigError, DataFormatError, check_number, shown_value
from clinical_ner.formats import Corpus, FORMATS, detect_format, load_corpus
from clinical_ner.formats.readers import apply_label_map
from clinical_ner.formats.brat import ATTRIBUTE_PREFIXES, read_assertion_map
from clinical_ner.text.document import ASSERTION_LABEL
from clinical_ner.text.tags import OUTSIDE
from clinical_ner.untrusted_json import UntrustedJSONError, parse_untrusted_json

#: How a corpus annotates one of the model's labels: ``complete`` (an
#: unmarked token is not this label), ``partial`` (its mentions are this label,
#: but unmarked text may still be) or ``none`` (it does not annotate it).
LABEL_COVERAGES = ("complete", "partial", "none")
_CORPUS_KEYS = {"name", "train", "dev", "format", "weight", "label_map", "coverage",
                "assertion_map"}
_TOP_KEYS = {"labels", "select", "corpus"}
_BRAT_TYPE = re.compile(r"T[^\t]*\t(\S+)")
_BRAT_ATTRIBUTE = re.compile(rf"[{ATTRIBUTE_PREFIXES}][^\t]*\t(\S+)")
#: What a corpus file describes for each corpus, so that training refuses the
#: options of a single corpus beside it (they would be ignored).
CORPUS_FILE_REPLACES = ("a corpus file (--corpus) replaces --train, --dev, --label-map, "
                        "--input-format and --assertion-map")
#: The largest corpus weight, in copies of the corpus per epoch (a weight of
#: 1e12 exhausted memory building one epoch's sentence indices).
MAX_CORPUS_WEIGHT = 1000.0


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
    assertion_map: dict | None = None  # brat attribute values -> assertions, read from
    assertion_map_path: Path | None = None  # this file

    def open_labels(self) -> list[str]:
        """The model labels an unmarked token of this corpus may still be (not ``complete``)."""
        return sorted(label for label, how in self.coverage.items() if how != "complete")

    def scored_labels(self) -> list[str]:
        """The labels its mentions can carry (coverage other than ``none``): what it can score."""
        return sorted(label for label, how in self.coverage.items() if how != "none")

    def to_dict(self) -> dict:
        return {"name": self.name, "train": [str(p) for p in self.train],
                "dev": None if self.dev is None else str(self.dev), "format": self.format,
                "weight": self.weight, "label_map": self.label_map, "coverage": self.coverage,
                "assertion_map": (None if self.assertion_map_path is None
                                  else str(self.assertion_map_path))}


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
        text = path.read_text(encoding="utf-8-sig")
        values = (parse_untrusted_json(text, unique_keys=True)
                  if path.suffix.lower() == ".json" else tomllib.loads(text))
    except (OSError, UnicodeDecodeError, UntrustedJSONError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{where}: {error}") from None
    except RecursionError:
        raise ConfigError(f"{where}: tables or arrays nested too deeply") from None
    except ValueError:  # tomllib: an integer beyond Python's limit on digits
        raise ConfigError(f"{where}: a number too long to read") from None
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
    if OUTSIDE in labels:
        raise ConfigError(f"{where}: labels must not include {OUTSIDE}, the tag of a token "
                          "outside every mention")
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
    elif not isinstance(selection, dict) or not selection:
        raise ConfigError(f"{where}: select must be a table of corpus name = weight (leave it "
                          "out to weigh every dev corpus alike)")
    for name, weight in selection.items():
        spec = next((spec for spec in corpora if spec.name == name), None)
        if spec is None or spec.dev is None:
            raise ConfigError(f"{where}: select names {name!r}, which is not a corpus with "
                              "a dev path")
        selection[name] = check_number(f"{where}: select weight of {name}", weight,
                                       allow_zero=True)
        if selection[name] > 0 and spec.dev in spec.train:
            weighed = ("select weighs it" if values.get("select") is not None
                       else "without select every dev corpus chooses the epoch")
            raise ConfigError(f"{where}: corpus {name}: dev is one of its train paths, and "
                              f"{weighed}: the epoch would be chosen on training data; give "
                              "dev a file of its own, or leave it out")
    if selection and sum(selection.values()) <= 0:
        raise ConfigError(f"{where}: select weights must not all be 0")
    _check_no_dev_in_training(corpora, selection, where)
    return CorpusSet(sorted(set(labels)), corpora, selection, where)


def _check_no_dev_in_training(corpora: list[CorpusSpec], selection: dict[str, float],
                              where: str) -> None:
    """No dev file that chooses the epoch is another corpus's training file (the check
    within one corpus is above): the epoch would be chosen on training data."""
    for name, weight in selection.items():
        dev = next(spec.dev for spec in corpora if spec.name == name)
        for spec in corpora:
            if weight > 0 and spec.name != name and dev in spec.train:
                raise ConfigError(f"{where}: corpus {name}: its dev {dev} is a train path of "
                                  f"corpus {spec.name}, and it chooses the epoch: the epoch "
                                  "would be chosen on training data")


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
    resolved = [(folder / p).resolve() for p in train]
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"{context}: train lists a path twice; give the corpus a weight to "
                          "draw its sentences more often")
    data_format = item.get("format", "auto")
    if data_format not in ("auto", *FORMATS):
        raise ConfigError(f"{context}: format must be auto or one of {', '.join(FORMATS)}")
    weight = check_number(f"{context}: weight", item.get("weight", 1.0),
                          maximum=MAX_CORPUS_WEIGHT)
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
                              f"{', '.join(LABEL_COVERAGES)}, got {shown_value(how)}")
    mapped = set(mapped_labels(label_map)) if label_map is not None else None
    full_coverage = {}
    for label in sorted(labels):
        default = "complete" if mapped is None or label in mapped else "none"
        full_coverage[label] = coverage.get(label, default)
        if mapped is not None and label in mapped and full_coverage[label] == "none":
            raise ConfigError(f"{context}: label_map maps onto {label} but its coverage is "
                              "none")
        if mapped is not None and label not in mapped and full_coverage[label] == "partial":
            # No mention can be this label: it would train as "none", yet every one the
            # model finds in the corpus's dev or test data would be scored as wrong.
            raise ConfigError(f"{context}: its coverage of {label} is partial, but its "
                              f"label_map maps no label onto {label}; say none (it does not "
                              f"annotate {label}) or complete (its text has no {label})")
    if mapped is not None and not mapped:
        raise ConfigError(f"{context}: label_map maps no label onto a model label: its sentences "
                          "would teach nothing")
    if all(how == "none" for how in full_coverage.values()):
        raise ConfigError(f"{context}: its coverage of every label is none: its sentences "
                          "would teach nothing")
    assertion_map_path = item.get("assertion_map")
    if assertion_map_path is not None:
        if not isinstance(assertion_map_path, str):
            raise ConfigError(f"{context}: assertion_map must be the path of a JSON file")
        assertion_map_path = (folder / assertion_map_path).resolve()
    return CorpusSpec(
        name=name, train=resolved,
        dev=None if dev is None else (folder / dev).resolve(), format=data_format,
        weight=weight, label_map=label_map, coverage=full_coverage,
        assertion_map=(None if assertion_map_path is None else
                       read_assertion_map(assertion_map_path, f"{context}: assertion_map")),
        assertion_map_path=assertion_map_path)


@dataclass
class SourceData:
    """A corpus file's entity types before any label map and, for CoNLL and i2b2, the corpus
    read for them, which its label map then turns into what training reads (one read of the
    file; the brat reader maps while reading, before it resolves overlaps)."""

    labels: set[str]
    corpus: Corpus | None


def source_data(path: str | Path, data_format: str = "auto",
                skip_invalid: bool = False) -> SourceData:
    """The entity types a corpus's files use before any label map (brat: every ``T`` type).

    A line its format refuses is an error naming it (``skip_invalid``: its
    sentence is left out, as reading the data for training leaves it out).
    """
    data_format = detect_format(path) if data_format == "auto" else data_format
    if data_format == "brat" and not skip_invalid:
        # Nothing left out: no need to read the text.
        return SourceData(_brat_names(path, _BRAT_TYPE), None)
    corpus = load_corpus(path, data_format, skip_invalid=skip_invalid)
    if corpus.skipped and not any(document.sentences for document in corpus.documents):
        # It has no labels then, and the checks would blame a coverage or a label map.
        unit = "document" if data_format == "brat" else "sentence"
        raise DataFormatError(path, None, f"every {unit} is invalid ({len(corpus.skipped)} "
                                          "skipped): nothing is left to read")
    if data_format == "brat":
        # The types of every T line, also of mentions that overlaps drop, which a label
        # map must still name.
        return SourceData(_brat_names(path, _BRAT_TYPE), None)
    return SourceData(set(corpus.labels), corpus)


def source_labels(path: str | Path, data_format: str = "auto",
                  skip_invalid: bool = False) -> set[str]:
    """:attr:`SourceData.labels` of :func:`source_data`."""
    return source_data(path, data_format, skip_invalid).labels


def _brat_names(path: str | Path, pattern: re.Pattern) -> set[str]:
    """The names ``pattern`` finds at the start of the lines of a brat corpus's ``.ann`` files."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".txt" or not path.with_suffix(".ann").is_file():
            raise DataFormatError(path, None, "not a brat corpus: expected a folder of .txt + "
                                              ".ann files, or a .txt file with its .ann beside it")
        files = [path.with_suffix(".ann")]
    elif path.is_dir():
        files = sorted(path.glob("*.ann"))
    else:
        raise DataFormatError(path, None, "no such file or folder")
    names = set()
    for ann in files:
        for line in ann.read_text(encoding="utf-8-sig", errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                names.add(match[1])
    return names


def check_assertion_map_sources(assertion_map: dict, paths: list, data_format: str = "auto",
                                labels: set[str] | None = None, training: bool = True,
                                name: str = "--assertion-map") -> None:
    """``--assertion-map``: every attribute it names occurs in ``paths``, and problems are kept.

    A misspelt attribute (or an empty map) maps nothing, and every problem
    would silently train, or be scored, as present. ``labels``: the labels
    the data has after its label map; assertions go to ``problem`` only.
    ``training``: as for :func:`check_label_map` (a test file needs one of
    the attributes only: a small split may have no negation). ``name``: the
    map's name in messages (a corpus file's corpus: ``FILE: corpus C: assertion_map``).
    """
    if labels is not None and ASSERTION_LABEL not in labels:
        raise ConfigError(f"{name} gives assertions to {ASSERTION_LABEL}s, but the data "
                          f"has no {ASSERTION_LABEL} label (map one of its types onto "
                          f"{ASSERTION_LABEL} with "
                          f"{'--label-map' if name == '--assertion-map' else 'label_map'})")
    if not assertion_map:
        raise ConfigError(f"{name} maps no attribute")
    found: set[str] = set()
    for path in paths:
        if (detect_format(path) if data_format == "auto" else data_format) == "brat":
            found |= _brat_names(path, _BRAT_ATTRIBUTE)
    _check_map_sources(assertion_map, found, name, "data", "attribute", every=training)


def check_corpus_paths(corpus_set: CorpusSet, dev: bool = True) -> None:
    """Every training path, and with ``dev`` every dev path, exists: checked before any is
    read, and named with its corpus file and corpus."""
    for spec in corpus_set.corpora:
        for path in list(spec.train) + ([spec.dev] if dev and spec.dev is not None else []):
            if not path.exists():
                raise DataFormatError(corpus_set.source, None,
                                      f"corpus {spec.name}: {path}: no such file or folder")


def check_corpus_labels(corpus_set: CorpusSet, dev: bool = True, skip_invalid: bool = False
                        ) -> dict[tuple[str, Path], SourceData]:
    """:func:`check_label_map` for every corpus, on its training files.

    Its label map may also name a label that only its dev file has (a rare
    one), which ``dev`` reads; without ``dev`` (in a cluster only the chief
    reads dev files) such a label is taken on trust. The dev file itself is
    checked as it is read (:func:`check_label_map` with ``training=False``).
    ``skip_invalid``: as for :func:`source_labels`. Returns the files so read, by corpus
    name and path, for reading them as training does (:func:`load_spec_corpus`).
    """
    sources = {}
    for spec in corpus_set.corpora:
        with _naming_corpus(spec):
            if spec.dev is not None and dev:
                sources[spec.name, spec.dev] = source_data(spec.dev, spec.format, skip_invalid)
            for path in spec.train:
                sources[spec.name, path] = source_data(path, spec.format, skip_invalid)
        if spec.dev is None:
            dev_labels = set()
        elif dev:
            dev_labels = sources[spec.name, spec.dev].labels
        else:
            dev_labels = set(spec.label_map or ())
        check_label_map(corpus_set, spec, list(spec.train), spec.format, dev_labels=dev_labels,
                        skip_invalid=skip_invalid, found=set().union(
                            *(sources[spec.name, path].labels for path in spec.train)))
    return sources


def check_label_map(corpus_set: CorpusSet, spec: CorpusSpec, paths: list, data_format: str,
                    training: bool = True, dev_labels: set[str] | None = None,
                    skip_invalid: bool = False, found: set[str] | None = None) -> None:
    """Every source label of ``spec``'s label map occurs in ``paths`` and every label found
    there is in the map (or, without a map, is a model label).

    Reads the files' label names (never their text into a message), so that
    a typo in a mapping fails before training rather than silently dropping
    a label. ``training``: ``paths`` include training files, which must
    mention every label the map names, or that the corpus annotates without
    a map; a dev or test file alone may lack a rare one (but not all of them).
    ``dev_labels``: the labels of the corpus's dev file, which its map may name
    too (a dev file that has a label its training files lack must map it).
    ``skip_invalid``: as for :func:`source_labels`. ``found``: the labels of ``paths``
    when they were read already (not read again).
    """
    if found is None:
        found = set()
        for path in paths:
            with _naming_corpus(spec):
                found |= source_labels(path, data_format, skip_invalid)
    context = f"{corpus_set.source}: corpus {spec.name}"
    if spec.assertion_map is not None:
        check_assertion_map_sources(spec.assertion_map, paths, data_format,
                                    set(spec.scored_labels()), training,
                                    f"{context}: assertion_map")
    if spec.label_map is not None:
        _check_map_sources(spec.label_map, found | (dev_labels or set()),
                           f"{context}: label_map", "corpus", every=training)
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
        # Without a map each label maps onto itself, and "none" would leave its
        # mentions open to every label as if the corpus did not annotate it.
        unannotated = sorted(label for label in found if spec.coverage.get(label) == "none")
        if unannotated:
            raise ConfigError(f"{context}: its files have {unannotated[0]} mentions, but its "
                              f"coverage of {unannotated[0]} is none; leave coverage out or "
                              "say complete or partial (or drop it with label_map)")
        # Without a map every label defaults to complete: a label the files never
        # use would teach the model that it never occurs.
        absent = sorted(label for label, how in spec.coverage.items()
                        if training and how != "none" and label not in found)
        if absent:
            raise ConfigError(f"{context}: its files have no {absent[0]} mention, but its "
                              f"coverage of {absent[0]} is {spec.coverage[absent[0]]}; set "
                              f"coverage {absent[0]} = \"none\" if the corpus does not "
                              "annotate it")


def mapped_labels(label_map: dict[str, str | None]) -> list[str]:
    """The labels ``label_map`` maps onto (not ``None``, which drops a type): all that data
    read with it can be scored on (``evaluate --label-map``, ``card --label-map``)."""
    return sorted({label for label in label_map.values() if label})


def check_label_map_sources(label_map: dict[str, str | None], paths: list,
                            data_format: str = "auto", training: bool = True,
                            skip_invalid: bool = False) -> None:
    """``--label-map``: every source label it names occurs in at least one of ``paths``.

    A misspelt source label would otherwise map nothing, and its mentions
    would silently train, or be scored, as ``O``. ``training``: as for
    :func:`check_label_map` (a test file needs one of them only). ``skip_invalid``:
    as for :func:`source_labels`.
    """
    found: set[str] = set()
    for path in paths:
        found |= source_labels(path, data_format, skip_invalid)
    _check_map_sources(label_map, found, "--label-map", "data", every=training)


def _check_map_sources(mapping: dict, found: set[str], context: str, what: str,
                       kind: str = "label", every: bool = True) -> None:
    """Every name of ``mapping`` is in ``found`` (``every``), or at least one is."""
    missing = sorted(set(mapping) - found)
    if missing and (every or len(missing) == len(mapping)):
        raise ConfigError(f"{context} names {kind} {missing[0]}, which the {what} does not "
                          f"have (it has {', '.join(sorted(found)) or f'no {kind}s'})")


def load_spec_corpus(spec: CorpusSpec, path: Path, skip_invalid: bool = False,
                     source: SourceData | None = None) -> Corpus:
    """One of ``spec``'s files read in its format, with its label map applied.

    A format error names the corpus too: its label map and format, not only
    the file, decide what a line means. ``source``: the file as
    :func:`source_data` read it (its corpus is then mapped, not read again).
    """
    if source is not None and source.corpus is not None:
        if spec.label_map is None:
            return source.corpus
        return apply_label_map(source.corpus, spec.label_map)
    with _naming_corpus(spec):
        return load_corpus(path, spec.format, label_map=spec.label_map,
                           skip_invalid=skip_invalid, assertion_map=spec.assertion_map)


@contextlib.contextmanager
def _naming_corpus(spec: CorpusSpec) -> Iterator[None]:
    """A format error in the block names ``spec``'s corpus after its file and line."""
    try:
        yield
    except DataFormatError as error:
        raise DataFormatError(error.path, error.line,
                              f"{error.problem} (corpus {spec.name})") from None
