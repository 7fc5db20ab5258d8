"""The spaCy pipeline component ``clinical_ner``: our entities in ``doc.ents``.

Installed with the ``[spacy]`` extra, which registers the factory through
the ``spacy_factories`` entry point, so nothing needs importing by hand::

    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_ner")                        # the bundled model
    nlp.add_pipe("clinical_ner", config={"model": "runs/sample"})
    nlp.add_pipe("clinical_ner", config={"endpoint": "host:8500"})  # TF Serving

The component annotates ``doc.text`` and maps each entity's character
offsets onto the Doc's tokens as ``Doc.char_span(alignment_mode="expand")``
does: an entity boundary inside one of the Doc's tokens widens the span to the
whole token (what our i2b2 writer does with whitespace tokens). Entities
already on the Doc stay, and ours are added where they overlap none of them;
with ``overwrite_ents`` ours stay, and the earlier ones are kept where they
overlap none of ours. Two of ours that overlap after widening (both inside
one spaCy token) keep the longer, then the first (``spacy.util.filter_spans``).

The settings are checked when the component is built: a ``model`` that is no
model on disk nor a bundled name, an ``endpoint`` that is not ``host:port``, an
unreadable ``tls`` file, each with one line naming the setting. The model
itself is loaded at the first document, in the process that annotates: with
``nlp.pipe(..., n_process=2)`` each child loads its own after the fork, and a
model loaded in the parent is never used in a child.

``nlp.to_disk`` writes ``clinical_ner.json`` into the component's folder and,
for a model directory or LiteRT export, a copy of it (``model/``), so that
the saved pipeline stands alone; a bundled model is saved by name and an
endpoint by its configuration only. ``nlp.to_bytes`` names the model without
copying it (a model on disk by its absolute path), and ``nlp.from_bytes``
points the component at it. See docs/guide/spacy.md.
"""
import json
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from spacy.attrs import ENT_IOB, ENT_TYPE
from spacy import language as spacy_language
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans, load_config, load_model_from_path

from clinical_ner.version import __version__
from clinical_ner.annotators.litert.annotator import read_export
from clinical_ner.annotators.load import check_model_files
from clinical_ner.artifacts import saved_model, write_text_atomically
from clinical_ner.artifacts.litert import is_litert_export
from clinical_ner.artifacts.keras_model import CHECKPOINT_DIR
from clinical_ner.errors import (
    ClinicalNERError,
    ConfigError,
    ModelError,
    check_host_port,
    check_integer,
    os_reason,
)
from clinical_ner.formats.html_page import KNOWN_LABELS, label_colours
from clinical_ner.integrations.spacy_tokenizer import doc_text
from clinical_ner.pretrained import (
    DEFAULT_MODEL,
    bundled_model_path,
    bundled_models,
    bundled_name,
    is_model_reference,
    resolve_model_path,
)
from clinical_ner.serving import defaults
from clinical_ner.serving.tls import read_pem
from clinical_ner.untrusted_json import parse_untrusted_json

FACTORY = "clinical_ner"
CONFIDENCE = "clinical_ner_confidence"
ASSERTION = "clinical_ner_assertion"
ASSERTION_CONFIDENCE = "clinical_ner_assertion_confidence"
# What to_disk writes into the component's folder, and the model copy's folder there.
MANIFEST_FILE = "clinical_ner.json"
MANIFEST_FORMAT = "clinical-ner-spacy"
MANIFEST_VERSION = 1
MODEL_COPY = "model"
# Docs per annotate call when pipe() is called without one (nlp.pipe always passes
# its own): spaCy's Language.batch_size. Short texts need hundreds to a call for
# annotate's length-sorted batches (benchmarks/README.md, spaCy pipelines).
DEFAULT_PIPE_BATCH_SIZE = 1000

# Our three values of an entity live in one doc.user_data entry, keyed like spaCy's
# own extension values by offsets (and label): one dict write per entity instead of
# three extension writes, whose Underscore objects were the largest Python cost of
# setting our entities in a profile (benchmarks/README.md, spaCy pipelines).
# Doc.to_bytes and nlp.pipe(n_process=...) carry user_data, so the values follow the Doc.
USER_DATA_KEY = "clinical_ner"
_EXTENSION_FIELDS = {CONFIDENCE: 0, ASSERTION: 1, ASSERTION_CONFIDENCE: 2}


def _entity_key(span: Span) -> tuple:
    return (USER_DATA_KEY, span.start_char, span.end_char, span.label_)


def _get_extension(field: int, span: Span) -> Any:
    values = span.doc.user_data.get(_entity_key(span))
    return None if values is None else values[field]


def _set_extension(field: int, span: Span, value: Any) -> None:
    values = list(span.doc.user_data.get(_entity_key(span), (None, None, None)))
    values[field] = value
    span.doc.user_data[_entity_key(span)] = tuple(values)


# Partials of module functions, not closures: nlp.pipe(n_process=...) pickles every
# extension's getter and setter for its children under the "spawn" start method.
for _name, _field in _EXTENSION_FIELDS.items():
    if not Span.has_extension(_name):
        Span.set_extension(_name, getter=partial(_get_extension, _field),
                           setter=partial(_set_extension, _field))


def displacy_colors() -> Dict[str, str]:
    """Our labels' colours, as in ``clinical-ner predict --output-format html``.

    Registered as spaCy's ``spacy_displacy_colors`` entry point too, so that
    ``displacy.render(doc, style="ent")`` uses them without options.
    """
    return label_colours(KNOWN_LABELS)


def clinical_ner_displacy_options(labels: Iterable[str] = KNOWN_LABELS) -> Dict[str, Any]:
    """``displacy.render(doc, style="ent", options=...)`` with our colours for ``labels``."""
    return {"colors": label_colours(list(labels))}


class ClinicalNERComponent:
    """Fills ``doc.ents`` with the entities of a clinical-ner model or TF Serving endpoint.

    ``model`` is anything ``ClinicalNER.load`` takes (a model directory, a
    LiteRT export, a bundled model's name); ``endpoint`` (``host:port``),
    when set, sends the texts to TF Serving's gRPC API instead, as
    ``model_name``, over TLS verified with the PEM CA certificates at ``tls``
    when given. ``batch_size`` is the number of texts per model call
    (``None``: the model's ``annotate_batch_size``, or the client's default).
    """

    def __init__(self, name: str, model: str, endpoint: Optional[str], model_name: str,
                 tls: Optional[str], overwrite_ents: bool, batch_size: Optional[int]) -> None:
        if batch_size is not None:
            check_integer(f"{name}: batch_size", batch_size)
        if not model_name:
            raise ConfigError(f"{name}: model_name must not be empty; give the served "
                              "model's name")
        loading_saved = endpoint is None and _loading_saved_pipeline()
        if endpoint is None:
            if tls is not None:
                raise ConfigError(f"{name}: tls is set but endpoint is not; tls verifies the "
                                  "endpoint's server, so set endpoint too or leave tls null")
            if model_name != defaults.MODEL_NAME:
                raise ConfigError(f"{name}: model_name is set but endpoint is not; model_name "
                                  "names the endpoint's served model, so set endpoint too or "
                                  "leave model_name out (model gives the model)")
            if not loading_saved:
                _check_model(name, model)
                model = _held_model(model)
        else:
            _check_endpoint(name, endpoint)
        # Read now, so that a missing or broken file is reported when the pipeline is built.
        self._root_certificates = (None if tls is None else
                                   read_pem(tls, f"{name}: tls", "the CA certificates"))
        self.name = name
        self.model = model
        self.endpoint = endpoint
        self.model_name = model_name
        self.tls = tls
        self.overwrite_ents = overwrite_ents
        self.batch_size = batch_size
        # Building a saved pipeline, from_disk puts its saved model in place of this one,
        # config.cfg's or spacy.load's override of it, which from_disk tells apart.
        self._configured_model = model if loading_saved else None
        # The annotator and the process that loaded it (see _annotator).
        self._loaded: Any = None
        self._loaded_in: Optional[int] = None

    # -- annotating -----------------------------------------------------------

    def __call__(self, doc: Doc) -> Doc:
        return self._set_entities(doc, self._annotate([doc_text(doc)])[0])

    def pipe(self, docs: Iterable[Doc], batch_size: int = DEFAULT_PIPE_BATCH_SIZE
             ) -> Iterator[Doc]:
        """The docs annotated in batches, one ``annotate`` call per batch.

        A batch holds ``batch_size`` docs, but long notes are cut into
        batches of one model call's worth: where fewer texts than one call
        takes (the component's ``batch_size``, else the model's
        ``annotate_batch_size``) reach one call's characters
        (``annotate_max_batch_characters``), the batch ends there, since
        ``annotate`` would split it there anyway and the next batch's
        tokenizing can start beside it. Short notes keep whole batches, in
        which ``annotate`` sorts them by length (less padding); an endpoint
        keeps whole batches too. The model annotates a batch in a
        second thread while this one reads the next batch from ``docs``,
        which is where spaCy's tokenizer (and any component before ours)
        runs: the model's own work releases Python's GIL, so the two
        overlap. One batch at most is ahead.
        """
        call_limits = self._call_limits()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name) as pool:
            previous = None
            for batch in _batches(docs, batch_size, call_limits):
                annotating = pool.submit(self._annotate, [text for _, text in batch])
                if previous is not None:
                    yield from self._finish(*previous)
                previous = ([doc for doc, _ in batch], annotating)
            if previous is not None:
                yield from self._finish(*previous)

    def _finish(self, batch: List[Doc], annotating: "Future[List[list]]") -> Iterator[Doc]:
        for doc, entities in zip(batch, annotating.result()):
            yield self._set_entities(doc, entities)

    def _annotate(self, texts: List[str]) -> List[list]:
        annotator = self._annotator()
        if self.endpoint is not None:
            return annotator.annotate(texts)
        return annotator.annotate(texts, batch_size=self.batch_size)

    def _annotator(self) -> Any:
        """The model or client, loaded at first use in this process.

        ``nlp.pipe(n_process=2)`` forks: a child loads its own model. A model
        the parent had loaded cannot follow: TensorFlow's thread pools and
        gRPC's channels do not survive a fork (TensorFlow hangs), so a child
        that finds one says what to do instead; a LiteRT export is reloaded.
        """
        if self._loaded is not None and self._loaded_in != os.getpid():
            if not self._reloads_after_fork():
                raise ClinicalNERError(
                    f"{self.name}: the model was loaded before nlp.pipe(n_process=...) forked "
                    "this process, and TensorFlow and gRPC cannot run in a forked copy; pass "
                    "no text through the pipeline before nlp.pipe with n_process > 1, call "
                    "multiprocessing.set_start_method('spawn') first, or use a LiteRT export")
            self._loaded = None
        if self._loaded is None:
            self._loaded = self._load()
            self._loaded_in = os.getpid()
        return self._loaded

    def _call_limits(self) -> Optional[Tuple[int, int]]:
        """Texts and characters of one model call (``None`` for an endpoint)."""
        if self.endpoint is not None:
            return None
        config = self._annotator().config
        return (self.batch_size or config.annotate_batch_size,
                config.annotate_max_batch_characters)

    def _reloads_after_fork(self) -> bool:
        return self.endpoint is None and is_litert_export(resolve_model_path(self.model))

    def _load(self) -> Any:
        if self.endpoint is not None:
            from clinical_ner.serving.client import ServingClient

            options: Dict[str, Any] = {}
            if self.batch_size is not None:
                options["batch_size"] = self.batch_size
            if self._root_certificates is not None:
                options["root_certificates"] = self._root_certificates
            return ServingClient(self.endpoint, self.model_name, **options)
        from clinical_ner.annotators.load import ClinicalNER

        if _in_spacy_child_process() and self._reloads_after_fork():
            from clinical_ner.annotators.litert.annotator import LiteRTAnnotator

            # A LiteRT export takes one worker per core by default: with n_process
            # children on those cores, each child takes one, as batch engines set.
            return LiteRTAnnotator.load(resolve_model_path(self.model), workers=1)
        return ClinicalNER.load(self.model)

    def _set_entities(self, doc: Doc, entities: Sequence[Any]) -> Doc:
        ours = list(zip(self._spans(doc, entities), entities))
        # Any overlap shows as a span starting before the end of the one before
        # it (or before its start, out of order): the common case skips the sort.
        if any(later.start < earlier.end for (earlier, _), (later, _) in zip(ours, ours[1:])):
            kept = {id(span) for span in filter_spans([span for span, _ in ours])}
            ours = [(span, entity) for span, entity in ours if id(span) in kept]
        # Reading doc.ents walks every token; a Doc nothing has labelled skips it.
        existing: List[Span] = []
        blocked: List[Span] = []
        ids_on_tokens = False
        if doc.has_annotation("ENT_IOB"):
            existing = list(doc.ents)
            blocked = _blocked_spans(doc)
            ids_on_tokens = doc.has_annotation("ENT_ID")
        if blocked:
            # Tokens an earlier component blocked take no entity, as in spaCy's own
            # NER, whatever overwrite_ents says: they are no entity to overwrite.
            unblocked = {id(span) for span in _not_overlapping([s for s, _ in ours], blocked)}
            ours = [(span, entity) for span, entity in ours if id(span) in unblocked]
        if existing and not self.overwrite_ents:
            added = {id(span) for span in _not_overlapping([s for s, _ in ours], existing)}
            ours = [(span, entity) for span, entity in ours if id(span) in added]
        our_spans = [span for span, _ in ours]
        if ids_on_tokens:
            # spaCy's set_ents keeps a token's ent_id where the new span has none (for
            # spaCy 2's sake): ours would carry the id of an entity they replace, or of
            # one an earlier component removed.
            for span in our_spans:
                for token in span:
                    token.ent_id = 0
        if not existing:
            doc.set_ents(our_spans, blocked=blocked)
        elif self.overwrite_ents:
            doc.set_ents(sorted(our_spans + _not_overlapping(existing, our_spans)),
                         blocked=blocked)
        else:
            doc.set_ents(sorted(existing + our_spans), blocked=blocked)
        user_data = doc.user_data
        for span, entity in ours:
            user_data[_entity_key(span)] = (entity.confidence, entity.assertion,
                                            entity.assertion_confidence)
        return doc

    def _spans(self, doc: Doc, entities: Sequence[Any]) -> List[Span]:
        """Each entity's span of the Doc's tokens: ``doc.char_span(..., "expand")``.

        spaCy's ``char_span`` finds both boundaries by a binary search in
        C (benchmarks/README.md, spaCy pipelines, says why this replaced our
        own search over the tokens' offsets).
        """
        spans = []
        for entity in entities:
            span = doc.char_span(entity.start, entity.end, entity.label,
                                 alignment_mode="expand")
            if span is None:
                # Only possible if the Doc's text is not the text annotated.
                raise ValueError(f"{self.name}: entity at characters {entity.start}:"
                                 f"{entity.end} lies outside the Doc's tokens")
            spans.append(span)
        return spans

    # -- saving ---------------------------------------------------------------

    def to_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write ``clinical_ner.json`` and, for a model on disk, a copy of it, into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest = self._source_without_files()
        if manifest is None:
            # Path() would print gs://bucket as gs:/bucket: name the model as given.
            if not saved_model.is_local(self.model):
                raise ModelError(f"{self.model}: a remote model, which the {self.name} "
                                 "component cannot copy into a saved pipeline; copy it to a "
                                 "local folder and give the component that folder")
            source = resolve_model_path(self.model)
            if not is_model_reference(source):
                raise ModelError(f"{self.model}: not a clinical-ner model directory or LiteRT "
                                 f"export, so the {self.name} component cannot save it")
            if path.resolve().is_relative_to(source.resolve()):
                # The copy would hold itself: shutil copied folders into folders until
                # the path grew too long ("cannot copy the model there (Error)").
                raise ModelError(f"{path}: inside the model {self.model}, which the "
                                 f"{self.name} component copies into the saved pipeline; "
                                 "save the pipeline to a folder outside the model")
            target = path / MODEL_COPY
            # Saving a loaded pipeline over its own folder keeps its copy as it is.
            if source.resolve() != target.resolve():
                _replace_copy(source, target)
            manifest = {"source": "copy", "directory": MODEL_COPY}
        _write_settings(path / MANIFEST_FILE, json.dumps(_stamped(manifest), indent=2) + "\n")
        if manifest["source"] != "copy":
            # An earlier save's copy, which the manifest just written no longer names:
            # removed after it, so that a failure here leaves the new settings whole.
            shutil.rmtree(path / MODEL_COPY, ignore_errors=True)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = tuple()
                  ) -> "ClinicalNERComponent":
        """Point the component at what ``to_disk`` saved; a one-line error if it is missing."""
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except (OSError, ValueError) as error:
            raise ModelError(f"{manifest_path}: cannot read the {self.name} component's "
                             f"settings ({type(error).__name__}); save the pipeline again "
                             "with nlp.to_disk") from None
        manifest = self._checked_manifest(text, manifest_path, ("copy", "bundled", "endpoint"),
                                          "save the pipeline again with nlp.to_disk")
        self._refuse_model_override(path)
        if manifest["source"] == "copy":
            self.model = str(self._saved_copy(path, manifest.get("directory")))
        elif manifest["source"] == "bundled":
            self.model = self._bundled_model(manifest, manifest_path)
        self._loaded = None
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The model by reference, for ``from_bytes`` on this machine (``nlp.to_bytes``).

        No copy, unlike ``to_disk``: a model on disk is named by its absolute
        path, where ``from_bytes`` must find it; a bundled model by its name;
        an endpoint by nothing more (spaCy's config holds it).
        """
        manifest = self._source_without_files()
        if manifest is None:
            # Held by its absolute path since the component was built (or a URL, as given).
            manifest = {"source": "path", "path": self.model}
        return json.dumps(_stamped(manifest)).encode("utf-8")

    def _source_without_files(self) -> Optional[Dict[str, Any]]:
        """The saved settings' model source for an endpoint or a bundled model, else ``None``."""
        if self.endpoint is not None:
            return {"source": "endpoint"}
        # By name, or by its path as from_disk sets it.
        bundled = bundled_name(self.model)
        return None if bundled is None else {"source": "bundled", "name": bundled}

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = tuple()
                   ) -> "ClinicalNERComponent":
        """Point the component at the model ``to_bytes`` named; a one-line error if it is gone."""
        where = f"nlp.from_bytes: the {self.name} component's bytes"
        remedy = "serialize the pipeline again with nlp.to_bytes"
        manifest = self._checked_manifest(data, where, ("path", "bundled", "endpoint"), remedy)
        if manifest["source"] == "path":
            model = manifest.get("path")
            if not isinstance(model, str) or not model:
                raise ModelError(f"{where}: no model path; {remedy}")
            if saved_model.is_local(model):
                try:
                    check_model_files(model)
                except ModelError as error:
                    raise ModelError(f"{where}: model {error}") from None
            self.model = _held_model(model)
        elif manifest["source"] == "bundled":
            self.model = self._bundled_model(manifest, where)
        self._loaded = None
        return self

    def _checked_manifest(self, text: Any, where: Any, sources: Tuple[str, ...], remedy: str
                          ) -> Dict[str, Any]:
        """The settings ``to_disk`` or ``to_bytes`` wrote, checked against this version and config.

        ``where`` names them in errors, ``sources`` are the model sources
        they may give, and ``remedy`` says how to write them again.
        """
        try:
            manifest = parse_untrusted_json(text)
            source = manifest["source"]
            written_as = (manifest.get("format"), manifest.get("version"))
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError(f"{where}: cannot read the {self.name} component's settings "
                             f"({type(error).__name__}); {remedy}") from None
        if written_as != (MANIFEST_FORMAT, MANIFEST_VERSION):
            raise ModelError(f"{where}: not the {self.name} component's settings as "
                             f"clinical-ner {__version__} writes them (format "
                             f"{MANIFEST_FORMAT!r}, version {MANIFEST_VERSION}); {remedy}")
        if source not in sources:
            raise ModelError(f"{where}: unknown model source {source!r}; {remedy}")
        # config.cfg holds the endpoint; the manifest alone must not switch it on or off.
        if (source == "endpoint") != (self.endpoint is not None):
            configured = "no endpoint" if self.endpoint is None else "an endpoint"
            raise ModelError(f"{where}: the model source {source!r} does not match "
                             f"config.cfg, which gives the {self.name} component {configured}; "
                             f"{remedy}")
        return manifest

    def _bundled_model(self, manifest: Dict[str, Any], where: Any) -> str:
        """The path of the bundled model the settings name, which this version must ship.

        The bundled model itself: a folder of that name in the working
        directory, which would win for a name the user types, must not stand in for it.
        """
        name = manifest.get("name")
        if name not in bundled_models():
            raise ModelError(f"{where}: the pipeline uses the bundled model {name!r}, which "
                             f"clinical-ner {__version__} does not ship (bundled: "
                             f"{', '.join(bundled_models()) or 'none'}); install the "
                             "clinical-ner version that saved it")
        return str(bundled_model_path(name))

    def _refuse_model_override(self, path: Path) -> None:
        """A ``model`` given to ``spacy.load`` (``config={...}``), refused: it would go unused.

        The saved pipeline annotates with the model saved with it; its
        config.cfg, beside the component's folder, still holds the ``model``
        it was built with, which is what the component got unless overridden.
        """
        if self._configured_model is None:
            return
        try:
            saved = load_config(path.parent / "config.cfg", interpolate=True
                                )["components"][self.name]["model"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # not a pipeline folder as nlp.to_disk writes it: nothing to compare
        if saved != self._configured_model:
            raise ConfigError(f"{self.name}: model {self._configured_model!r} given when loading "
                              f"the saved pipeline {path.parent}, which annotates with the model "
                              "saved with it; leave it out, or replace the component: "
                              f"nlp.replace_pipe({self.name!r}, {FACTORY!r}, "
                              "config={'model': ...})")

    def _saved_copy(self, path: Path, directory: Any) -> Path:
        """The model copy ``directory`` of the component's folder ``path``, checked.

        Absolute, so that a later os.chdir cannot lose it or swap in another
        model; inside ``path``, so that an edited manifest cannot point the
        stand-alone pipeline at any model on the machine.
        """
        manifest_path = path / MANIFEST_FILE
        folder = path.resolve()
        try:
            model = (folder / directory).resolve() if isinstance(directory, str) else None
        except (OSError, ValueError):  # a NUL byte, a link loop
            model = None
        if model is None or model == folder or not model.is_relative_to(folder):
            raise ModelError(f"{manifest_path}: the model copy's directory must be a folder "
                             f"inside {path}, as nlp.to_disk writes it; save the pipeline "
                             "again with nlp.to_disk")
        if not is_model_reference(model):
            raise ModelError(f"{model}: the saved pipeline's clinical-ner model is missing "
                             "or incomplete; copy the model directory there again, or save "
                             "the pipeline again with nlp.to_disk")
        # Every file there, and a LiteRT export's checksums (a network cut short passed the
        # files' check), so that the first doc cannot fail on one.
        if check_model_files(model) == "litert":
            read_export(model)
        return model

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled into spawned workers: they load their own model.
        state = dict(self.__dict__)
        state.update(_loaded=None, _loaded_in=None)
        return state


def _replace_copy(source: Path, target: Path) -> None:
    """``target`` becomes a copy of the model ``source``, or stays as it was.

    The copy is made beside it and renamed into place, so that a failed copy
    (a full disk) leaves no half-copied model that the folder's manifest,
    from an earlier save, would point at.
    """
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    previous = target.with_name(f"{target.name}.previous-{os.getpid()}")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(CHECKPOINT_DIR))
        if target.exists():
            target.rename(previous)
        partial.rename(target)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if previous.exists() and not target.exists():
            previous.rename(target)
        reason = os_reason(error)
        raise ModelError(f"{target}: cannot copy the model there ({reason}); the saved "
                         "pipeline is as it was") from None
    shutil.rmtree(previous, ignore_errors=True)


def _stamped(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """``manifest`` with the format, version and clinical-ner version that wrote it."""
    manifest.update(format=MANIFEST_FORMAT, version=MANIFEST_VERSION,
                    clinical_ner_version=__version__)
    return manifest


def _write_settings(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, or its earlier content and a one-line error."""
    try:
        write_text_atomically(path, text)
    except OSError as error:
        reason = os_reason(error)
        raise ModelError(f"{path}: cannot write the component's settings ({reason})") from None


def _loading_saved_pipeline() -> bool:
    """Whether ``spacy.load`` is building the component from a saved pipeline's config.cfg.

    There ``model`` is the value the pipeline was saved with, which may name a
    folder that is gone (the pipeline moved to another machine, the point of
    its copy); from_disk, which spacy.load calls next, points the component at
    the copy or the bundled model and checks it. spaCy tells a factory nothing
    of this but its caller.
    """
    return _called_from(load_model_from_path)


def _in_spacy_child_process() -> bool:
    """Whether this is a child process of ``nlp.pipe(n_process=...)`` annotating.

    spaCy runs the pipes there in ``_apply_pipes``, under fork or spawn alike,
    and tells a component nothing else of it. A private function (spaCy 3.7
    and 3.8): a spaCy without it gets the default workers, not an ImportError.
    """
    worker_loop = getattr(spacy_language, "_apply_pipes", None)
    return worker_loop is not None and _called_from(worker_loop)


def _called_from(function: Any) -> bool:
    """Whether ``function`` is running in this thread, anywhere above our caller."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


def _check_model(name: str, model: str) -> None:
    """A ``model`` that ``ClinicalNER.load`` cannot take, refused now: files only, no TensorFlow.

    The model itself loads at the first document, in the process that
    annotates (n_process children load their own); a remote SavedModel URL is
    left to that load.
    """
    if not model:
        raise ConfigError(f"{name}: model must not be empty; give a model directory, a LiteRT "
                          f"export or a bundled model's name ({', '.join(bundled_models())})")
    if saved_model.is_local(model):
        try:
            check_model_files(model)
        except ModelError as error:
            raise ModelError(f"{name}: model {error}") from None


def _held_model(model: str) -> str:
    """The checked ``model`` by its absolute path (a bundled name: the bundled model's).

    The model loads at the first document: a relative path or bundled name
    looked up then could find another model (or none) after an ``os.chdir``
    than the one checked when the pipeline was built. A remote URL stays as given.
    """
    if not saved_model.is_local(model):
        return model
    return str(resolve_model_path(model).absolute())


def _check_endpoint(name: str, endpoint: str) -> None:
    """An ``endpoint`` gRPC would misread or only fail on after its retries, refused now."""
    if not endpoint:
        raise ConfigError(f"{name}: endpoint must not be empty; give host:port, or leave it "
                          "null to use model")
    # Here, not only in ServingClient: the client is made at the first document.
    check_host_port(f"{name}: endpoint", endpoint)


def _batches(docs: Iterable[Doc], size: int, call_limits: Optional[Tuple[int, int]]
             ) -> Iterator[List[Tuple[Doc, str]]]:
    """``docs`` and their texts in lists of ``size``, some cut earlier (see ``pipe``)."""
    batch: List[Tuple[Doc, str]] = []
    characters = 0
    for doc in docs:
        text = doc_text(doc)
        if batch and (len(batch) == size or (
                call_limits is not None and len(batch) < call_limits[0]
                and characters + len(text) > call_limits[1])):
            yield batch
            batch, characters = [], 0
        batch.append((doc, text))
        characters += len(text)
    if batch:
        yield batch


def _blocked_spans(doc: Doc) -> List[Span]:
    """The runs of tokens an earlier component marked blocked (``set_ents(blocked=...)``).

    spaCy marks a blocked token as the beginning of an entity without a label.
    """
    iob_and_type = doc.to_array([ENT_IOB, ENT_TYPE])
    is_blocked = [iob == 3 and not label for iob, label in iob_and_type.tolist()]
    spans, start = [], None
    for index, blocked in enumerate(is_blocked + [False]):
        if blocked and start is None:
            start = index
        elif not blocked and start is not None:
            spans.append(doc[start:index])
            start = None
    return spans


def _not_overlapping(spans: List[Span], others: List[Span]) -> List[Span]:
    taken = {i for other in others for i in range(other.start, other.end)}
    return [span for span in spans if not taken.intersection(range(span.start, span.end))]


@Language.factory(
    FACTORY,
    default_config={
        "model": DEFAULT_MODEL,
        "endpoint": None,
        "model_name": defaults.MODEL_NAME,
        "tls": None,
        "overwrite_ents": False,
        "batch_size": None,
    },
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
)
def make_clinical_ner(nlp: Language, name: str, model: str, endpoint: Optional[str],
                      model_name: str, tls: Optional[str], overwrite_ents: bool,
                      batch_size: Optional[int]) -> ClinicalNERComponent:
    """spaCy's factory for ``nlp.add_pipe("clinical_ner", config={...})`` (keys as above)."""
    return ClinicalNERComponent(name, model, endpoint, model_name, tls, overwrite_ents,
                                batch_size)
