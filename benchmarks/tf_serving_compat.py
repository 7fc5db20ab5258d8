"""Which TF Serving images can serve our export: load it in older TensorFlow versions.

    python -m benchmarks.tf_serving_compat --model runs/sample
    python -m benchmarks.tf_serving_compat --export models/clinical_ner/1 --versions 2.15.1

A TF Serving image embeds one TensorFlow version, and fleets lag behind. For
each ``--versions`` entry this installs ``tensorflow-cpu==VERSION`` into a side
virtual environment (``--venvs``, kept for the next run; about a minute per
version the first time), loads the export there the way TF Serving's C++
loader does (a TF1 session, the ``serve`` tag, ``SignatureDef`` tensor names),
runs ``serving_default`` on five notes and ``predict_tokens`` on their first
tokens, and compares the decoded entities and tags with the same load in this
environment's TensorFlow. ``--model`` exports the model with today's code
first (into a temporary folder); ``--export`` takes a version directory.

Prints a Markdown table and writes ``benchmarks/results/tf_serving_compat.json``
(``--output``); no note text is printed or written. Exit status 0 when every
version loads and answers identically (confidences within 1e-5), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_util import (
    CONFIDENCE_TOLERANCE, REPO_ROOT, command_line, machine_facts, output_file, same_entities,
)
from clinical_ner.export import signatures
from clinical_ner.serving.rest_client import outputs_as_arrays

DEFAULT_VERSIONS = ("2.15.1", "2.18.1")
DEFAULT_VENVS = REPO_ROOT / "benchmarks" / "work" / "tf-compat"
NOTES = REPO_ROOT / "samples" / "maccrobat-i2b2" / "dev" / "txt"
TOKENS_PER_ROW = 40

# Runs in the side environment, which has TensorFlow only: load as TF Serving
# does and print every output as JSON (strings as text).
LOADER = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
request = json.load(sys.stdin)
tf1 = tf.compat.v1

def run(session, meta_graph, name, feed):
    signature = meta_graph.signature_def[name]
    feeds = {signature.inputs[key].name: np.array(value, dtype=object)
             for key, value in feed.items()}
    fetches = {key: info.name for key, info in signature.outputs.items()}
    outputs = session.run(fetches, feeds)
    return {key: (np.char.decode(value.astype(bytes), "utf-8").tolist()
                  if value.dtype == object else value.tolist())
            for key, value in outputs.items()}

started = time.perf_counter()
with tf1.Session(graph=tf.Graph()) as session:
    meta_graph = tf1.saved_model.loader.load(session, ["serve"], request["export"])
    loaded = time.perf_counter() - started
    answer = {
        "tensorflow": tf.__version__,
        "load_seconds": round(loaded, 2),
        "text": run(session, meta_graph, "serving_default", {"text": request["texts"]}),
        "tokens": run(session, meta_graph, "predict_tokens", {"tokens": request["tokens"]}),
    }
print(json.dumps(answer))
"""


def ensure_venv(root: Path, version: str) -> Path:
    """The python of a side environment with ``tensorflow-cpu==version`` (installed once)."""
    venv = root / f"tf-{version}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import tensorflow as tf; print(tf.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True,
                                          env=_quiet_env()).stdout.strip() == version:
        return python
    print(f"installing tensorflow-cpu=={version} into {venv} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"tensorflow-cpu=={version}"],
                   check=True)
    return python


def _quiet_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")


def load_and_run(python: Path, export: Path, texts: list[str], tokens: list[list[str]]) -> dict:
    request = json.dumps({"export": str(export), "texts": texts, "tokens": tokens})
    completed = subprocess.run([str(python), "-c", LOADER], input=request, capture_output=True,
                               text=True, env=_quiet_env(), timeout=900)
    if completed.returncode != 0:
        # The last line names the exception; TensorFlow messages can quote
        # inputs, so only its type is kept.
        last = (completed.stderr.strip().splitlines() or ["unknown error"])[-1]
        return {"error": last.split(":", 1)[0]}
    return json.loads(completed.stdout)


def decoded(answer: dict, texts: list[str]) -> tuple[list, list]:
    """Entities and tags from a loader answer, through the package's own decoding."""
    return (signatures.entities_from_outputs(texts, outputs_as_arrays(answer["text"])),
            signatures.tags_from_outputs(outputs_as_arrays(answer["tokens"])))


def same_tags(expected: list, actual: list) -> bool:
    return all(want[0] == got[0] and np.allclose(want[1], got[1], atol=CONFIDENCE_TOLERANCE)
               for want, got in zip(expected, actual, strict=True))


def compare(export: Path, versions: list[str], venvs: Path) -> list[dict]:
    texts = [path.read_text(encoding="utf-8") for path in sorted(NOTES.glob("*.txt"))[:5]]
    rows = [text.split()[:TOKENS_PER_ROW] for text in texts]
    tokens = signatures.padded_token_rows(rows)
    reference = load_and_run(Path(sys.executable), export, texts, tokens)
    if "error" in reference:
        raise SystemExit(f"the export does not load in this environment: {reference['error']}")
    entities, tags = decoded(reference, texts)
    results = [{"tensorflow": reference["tensorflow"], "reference": True, "loads": True,
                "entities_equal": True, "tags_equal": True,
                "entities": sum(map(len, entities)), "load_seconds": reference["load_seconds"]}]
    for version in versions:
        started = time.perf_counter()
        python = ensure_venv(venvs, version)
        install_s = time.perf_counter() - started
        answer = load_and_run(python, export, texts, tokens)
        row = {"tensorflow": version, "reference": False, "install_seconds": round(install_s, 1)}
        if "error" in answer:
            row.update(loads=False, error=answer["error"])
        else:
            their_entities, their_tags = decoded(answer, texts)
            row.update(loads=True, entities_equal=same_entities(entities, their_entities),
                       tags_equal=same_tags(tags, their_tags),
                       entities=sum(map(len, their_entities)),
                       load_seconds=answer["load_seconds"])
        results.append(row)
    return results


def table(results: list[dict]) -> str:
    lines = ["| TensorFlow | loads (TF1 session, `serve` tag) | entities on 5 notes | "
             "tags (predict_tokens) | load s |",
             "| --- | --- | --- | --- | --- |"]
    for row in results:
        name = row["tensorflow"] + (" (this environment, reference)" if row["reference"] else "")
        if not row["loads"]:
            lines.append(f"| {name} | no: {row['error']} | - | - | - |")
            continue
        lines.append(
            f"| {name} | yes | {'identical' if row['entities_equal'] else 'DIFFERENT'} "
            f"({row['entities']} entities) | {'identical' if row['tags_equal'] else 'DIFFERENT'} "
            f"| {row['load_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a model directory to export with today's code")
    source.add_argument("--export", type=Path, help="an exported version directory (holds "
                                                    "saved_model.pb)")
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS),
                        help="TensorFlow versions to try (default: %(default)s)")
    parser.add_argument("--venvs", type=Path, default=DEFAULT_VENVS,
                        help="where the side environments live (default: %(default)s)")
    parser.add_argument("--output", type=output_file,
                        default=REPO_ROOT / "benchmarks" / "results" / "tf_serving_compat.json")
    args = parser.parse_args(argv)
    machine = machine_facts()
    with tempfile.TemporaryDirectory(prefix="tf-compat-") as scratch:
        export = args.export
        if args.model is not None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            from clinical_ner.annotators.keras_annotator import KerasAnnotator

            export = Path(KerasAnnotator.load(args.model).export(Path(scratch) / "model", 1))
        results = compare(export.resolve(), args.versions, args.venvs)
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": command_line("benchmarks.tf_serving_compat", argv),
        "machine": machine,
        "results": results,
    }, indent=2) + "\n", encoding="utf-8")
    ok = all(row["loads"] and row["entities_equal"] and row["tags_equal"] for row in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
