#!/usr/bin/env python
"""Load test: many concurrent gRPC or REST clients against the development server.

Exports the model as a SavedModel, starts ``clinical-ner serve`` on 127.0.0.1 in a
separate process (:class:`benchmarks.bench_util.ServerProcess`), and runs ``--clients``
threads, each with its own client (``--protocol grpc``:
:class:`clinical_ner.serving.client.ServingClient`; ``rest``:
:class:`clinical_ner.serving.rest_client.RestClient` on the server's TF Serving REST port,
one keep-alive connection each), until ``--requests`` requests (one document each) are
answered or ``--time-limit`` seconds pass. Every answer is compared with what the
in-process :meth:`Annotator.annotate` gives for the same document (entities equal on
offsets, text and label; confidence within 1e-5).

Reported: errors (failed requests) and mismatches (must both be 0), p50/p90/p99/max
latency (``bench_util.percentile``: linear interpolation), throughput, and the server's
resident memory sampled over the run (the largest RSS in the first and in the last
quarter of the run, which should be flat), with the machine facts of
``benchmarks/bench_util.py`` (load average at start and end: the figures are only as good
as the machine is idle). The JSON goes to ``benchmarks/results/load_test.json``
(``load_test_rest.json`` for REST; ``--output``). No document text is ever printed or
written: mismatches are reported by document index only.

    python -m benchmarks.load_test --model runs/maccrobat --clients 32 --requests 10000
    python -m benchmarks.load_test --model runs/maccrobat --protocol rest

``--texts FILE`` takes documents from a UTF-8 file, one per line (``.jsonl``: one
``{"text": ...}`` object per line); by default they are the lines and the whole
documents of ``samples/maccrobat-i2b2/dev`` plus a few edge cases (empty, emoji,
combining marks, CRLF, right-to-left). Exit status: 0 if every request was answered
correctly in time, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench_util import (
    CONFIDENCE_TOLERANCE,
    MODEL_NAME,
    REPO_ROOT,
    command_line,
    machine_facts,
    output_file,
    percentile,
    proc_status_kb,
    ServerProcess,
)
from clinical_ner.serving import defaults

RESULTS = REPO_ROOT / "benchmarks" / "results"
SAMPLE_DEV = REPO_ROOT / "samples" / "maccrobat-i2b2" / "dev" / "txt"

EDGE_CASES = [
    "",
    "   \n\t ",
    "Fever \U0001f600 and chest pain \U0001f9d1\u200d\u2695\ufe0f; CT \U0001d538 clear.",
    "Fe\u0301ver and che\u0308st pa\u0300in; started aspirin.",
    "Chest pain.\r\nCT showed a nodule.\rStarted aspirin.\u2028Fever resolved.",
    "\u0627\u0644\u0645\u0631\u064a\u0636 fever \u05d7\u05d5\u05dd \u202eniripsa\u202c CT.",
]


def load_texts(path: str | None) -> list[str]:
    if path is None:
        texts = list(EDGE_CASES)
        for file in sorted(SAMPLE_DEV.glob("*.txt")):
            document = file.read_text(encoding="utf-8")
            texts.append(document)
            texts.extend(line for line in document.splitlines() if line.strip())
        return texts
    # One line naming the file (and line), not a traceback; never the note's text.
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SystemExit(f"--texts {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise SystemExit(f"--texts {path}: not UTF-8 text") from None
    if not path.endswith(".jsonl"):
        return [line for line in text.splitlines() if line.strip()]
    texts = []
    # At LF only: a record's text may hold U+2028 and the like, which splitlines() cuts at.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"--texts {path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SystemExit(f'--texts {path}:{number}: not an object with a "text" string')
        texts.append(record["text"])
    return texts


def entity_tuples(entities) -> list[tuple[int, int, str, str]]:
    return [(e.start, e.end, e.text, e.label) for e in entities]


def same_entities(expected, actual) -> bool:
    if entity_tuples(expected) != entity_tuples(actual):
        return False
    return all(abs(a.confidence - b.confidence) <= CONFIDENCE_TOLERANCE
               for a, b in zip(expected, actual))


def rss_bytes(pid: int) -> int | None:
    kb = proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            value = rss_bytes(self.pid)
            if value is not None:
                self.samples.append((time.perf_counter(), value))
            self.done.wait(self.interval)


class _GrpcAnnotator:
    """One document per request over gRPC."""

    def __init__(self, server: ServerProcess, timeout: float) -> None:
        from clinical_ner.serving.client import ServingClient

        self._client = ServingClient(server.target, MODEL_NAME, timeout=timeout,
                                         deadline=timeout * 2)

    def annotate(self, text: str):
        return self._client.annotate(text)

    def close(self) -> None:
        self._client.close()


class _RestAnnotator:
    """One document per request over REST (columnar format), on a keep-alive connection."""

    def __init__(self, server: ServerProcess, timeout: float) -> None:
        from clinical_ner.serving.rest_client import RestClient

        self._client = RestClient("127.0.0.1", server.rest_port, MODEL_NAME, timeout=timeout)

    def annotate(self, text: str):
        return self._client.annotate([text])[0]

    def close(self) -> None:
        self._client.close()


ANNOTATORS = {"grpc": _GrpcAnnotator, "rest": _RestAnnotator}


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    texts = load_texts(args.texts)
    if not texts:
        raise SystemExit("no documents to send")
    print(f"model {args.model}: {len(texts)} documents "
          f"({sum(map(len, texts)):,} characters)", file=sys.stderr)
    ner = KerasAnnotator.load(args.model)
    started = time.perf_counter()
    expected = [ner.annotate(text) for text in texts]
    reference_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="load-test-") as export_root:
        base = Path(export_root) / MODEL_NAME
        ner.export(base, 1)
        server = ServerProcess(base, Path(export_root) / "server.log",
                               ["--max-workers", str(args.server_workers), "--log-level",
                                "WARNING"], rest=args.protocol == "rest")
        try:
            server.wait_ready()
            result = drive(args, server, texts, expected, ANNOTATORS[args.protocol])
        finally:
            exit_code = server.stop()
    result["server_exit_code"] = exit_code
    result["reference_seconds"] = round(reference_s, 3)
    return result


def drive(args, server: ServerProcess, texts, expected, annotator_class) -> dict:
    # Warm-up: every document once (also the first comparison).
    warm = annotator_class(server, timeout=120)
    warm_started = time.perf_counter()
    warm_mismatches = [index for index, text in enumerate(texts)
                       if not same_entities(expected[index], warm.annotate(text))]
    warm_s = time.perf_counter() - warm_started
    warm.close()
    rss_after_warmup = rss_bytes(server.pid)

    lock = threading.Lock()
    counter = iter(range(args.requests))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    mismatched: dict[int, int] = {}
    deadline = time.perf_counter() + args.time_limit
    stop = threading.Event()

    def client_loop(number: int) -> None:
        client = annotator_class(server, timeout=args.request_timeout)
        try:
            while not stop.is_set():
                if time.perf_counter() > deadline:
                    stop.set()
                    return
                with lock:
                    request = next(counter, None)
                if request is None:
                    return
                index = (request * 7919 + number) % len(texts)
                sent = time.perf_counter()
                try:
                    entities = client.annotate(texts[index])
                except Exception as error:  # every failure counts; no text in the name
                    with lock:
                        key = type(error).__name__
                        errors[key] = errors.get(key, 0) + 1
                    continue
                elapsed = time.perf_counter() - sent
                ok = same_entities(expected[index], entities)
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        mismatched[index] = mismatched.get(index, 0) + 1
        finally:
            client.close()

    sampler = RssSampler(server.pid, args.rss_interval)
    sampler.start()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(args.clients)]
    load_started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load_s = time.perf_counter() - load_started
    sampler.done.set()
    sampler.join()

    answered = len(latencies)
    failed = sum(errors.values())
    samples = sampler.samples
    quarter = load_s / 4

    def max_rss(first: float, last: float) -> int | None:
        values = [value for when, value in samples
                  if load_started + first <= when <= load_started + last]
        return max(values) if values else None

    mib = 2**20
    rss = {
        "after_warmup_mib": round(rss_after_warmup / mib, 1) if rss_after_warmup else None,
        "first_quarter_max_mib": None,
        "last_quarter_max_mib": None,
        "overall_max_mib": round(max(v for _, v in samples) / mib, 1) if samples else None,
        "samples": len(samples),
    }
    first_max, last_max = max_rss(0, quarter), max_rss(3 * quarter, load_s)
    if first_max is not None:
        rss["first_quarter_max_mib"] = round(first_max / mib, 1)
    if last_max is not None:
        rss["last_quarter_max_mib"] = round(last_max / mib, 1)
    if first_max and last_max:
        rss["growth_last_vs_first_quarter_mib"] = round((last_max - first_max) / mib, 1)

    to_ms = 1000.0
    return {
        "target": f"127.0.0.1 (clinical-ner serve, separate process), {args.protocol}",
        "protocol": args.protocol,
        "clients": args.clients,
        "server_workers": args.server_workers,
        "requests_planned": args.requests,
        "requests_answered": answered,
        "requests_failed": failed,
        "errors_by_type": errors,
        "mismatches": sum(mismatched.values()),
        "mismatched_documents": sorted(mismatched),
        "completed_in_time": answered + failed == args.requests,
        "time_limit_s": args.time_limit,
        "documents": len(texts),
        "warmup": {"seconds": round(warm_s, 3), "mismatched_documents": warm_mismatches},
        "seconds": round(load_s, 3),
        "throughput_rps": round(answered / load_s, 1) if load_s else None,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * to_ms, 2) if latencies else None,
            "p90": round(percentile(latencies, 90) * to_ms, 2) if latencies else None,
            "p99": round(percentile(latencies, 99) * to_ms, 2) if latencies else None,
            "max": round(max(latencies) * to_ms, 2) if latencies else None,
            "mean": round(statistics.fmean(latencies) * to_ms, 2) if latencies else None,
        },
        "server_rss": rss,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (clinical-ner train)")
    parser.add_argument("--protocol", choices=sorted(ANNOTATORS), default="grpc",
                        help="gRPC, or TF Serving's REST API (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests in total (one document each)")
    parser.add_argument("--texts", help="documents: one per line, or .jsonl with a text field")
    parser.add_argument("--time-limit", type=float, default=900.0, metavar="SECONDS",
                        help="stop sending after this long (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--server-workers", type=int, default=defaults.MAX_WORKERS,
                        help="the server's max_workers (default: %(default)s)")
    parser.add_argument("--rss-interval", type=float, default=0.25, metavar="SECONDS")
    parser.add_argument("--output", type=output_file, help="JSON results file (default: "
                        "benchmarks/results/load_test.json, load_test_rest.json for REST)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.time_limit <= 0:
        parser.error("--clients, --requests and --time-limit must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_facts()
    result = run(args)
    result["command"] = command_line("benchmarks.load_test", argv)
    result["machine"] = machine
    machine["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    output = Path(args.output or RESULTS / (
        "load_test.json" if args.protocol == "grpc" else f"load_test_{args.protocol}.json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    latency = result["latency_ms"]
    rss = result["server_rss"]
    print(
        f"{result['requests_answered']}/{result['requests_planned']} requests answered by "
        f"{result['clients']} clients in {result['seconds']:.1f} s "
        f"({result['throughput_rps']} req/s); errors {result['requests_failed']}, "
        f"mismatches {result['mismatches']} (warm-up mismatches "
        f"{len(result['warmup']['mismatched_documents'])})\n"
        f"latency ms: p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  "
        f"max {latency['max']}\n"
        f"server RSS MiB: after warm-up {rss['after_warmup_mib']}, max in first quarter "
        f"{rss['first_quarter_max_mib']}, in last quarter {rss['last_quarter_max_mib']} "
        f"(overall max {rss['overall_max_mib']})\n"
        f"results: {output}")
    ok = (result["requests_failed"] == 0 and result["mismatches"] == 0
          and not result["warmup"]["mismatched_documents"] and result["completed_in_time"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
