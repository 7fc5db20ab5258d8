"""Peak memory of ``clinical-ner serve`` when eight clients arrive at once on a cold server.

    python benchmarks/serving_memory.py --export benchmarks/work/bc5cdr/export \\
        --data ../shared/data/bc5cdr/dev.conll --max-concurrent-calls 2

Starts the development server on a free loopback port, waits until the model is AVAILABLE,
then sends every sentence of ``--data`` (one document each) from eight threads at once, each
with its own client (batches of 32), six rounds in all. Prints the server's peak resident
memory (VmHWM) after loading, after the first (cold) round and at the end, and the median
throughput of the five warm rounds. ``benchmarks/run.py`` measures a warm server (concurrency
1 first); this shows the worst case, a burst on a fresh server. Environment variables (e.g.
``MALLOC_ARENA_MAX``) pass to the server. Writes nothing.
"""
from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "benchmarks"))

from bench_util import free_port, proc_status_kb, subprocess_env  # noqa: E402
from clinical_ner.formats import load_corpus  # noqa: E402
from clinical_ner.serving.client import ClinicalNerClient, ServingError  # noqa: E402

MODEL_NAME = "clinical_ner"
CLIENTS = 8
ROUNDS = 6


def wait_until_available(target: str, server: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    with ClinicalNerClient(target, MODEL_NAME, timeout=2.0, deadline=2.0, max_retries=0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode} before serving")
            try:
                if any(status.state == "AVAILABLE" for status in client.status()):
                    return
            except ServingError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"the server was not ready after {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, type=Path,
                        help="a model base path from clinical-ner export (holds 1/, ...)")
    parser.add_argument("--data", required=True, type=Path, help="a corpus file or folder")
    parser.add_argument("--max-concurrent-calls", type=int, default=None, metavar="N",
                        help="passed to clinical-ner serve (default: the server's default)")
    args = parser.parse_args(argv)

    documents = [" ".join(sentence.tokens) for document in load_corpus(args.data).documents
                 for sentence in document.sentences if sentence.tokens]
    tokens = sum(len(document.split()) for document in documents)
    port = free_port()
    command = [sys.executable, "-m", "clinical_ner.cli", "serve", str(args.export),
               "--port", str(port), "--model-name", MODEL_NAME]
    if args.max_concurrent_calls is not None:
        command += ["--max-concurrent-calls", str(args.max_concurrent_calls)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=REPOSITORY, env=subprocess_env())

    def peak_mb() -> float:
        return proc_status_kb(server.pid, "VmHWM") / 1024

    target = f"127.0.0.1:{port}"
    clients = []
    try:
        wait_until_available(target, server)
        after_load = peak_mb()
        clients = [ClinicalNerClient(target, MODEL_NAME, batch_size=32, timeout=120.0,
                                     deadline=300.0) for _ in range(CLIENTS)]
        shards = [documents[index::CLIENTS] for index in range(CLIENTS)]
        seconds = []
        with ThreadPoolExecutor(CLIENTS) as pool:
            for round_number in range(ROUNDS):
                started = time.perf_counter()
                for future in [pool.submit(client.annotate, shard)
                               for client, shard in zip(clients, shards)]:
                    future.result()
                seconds.append(time.perf_counter() - started)
                if round_number == 0:
                    after_cold_burst = peak_mb()
        at_end = peak_mb()
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"{len(documents)} documents, {tokens} tokens, {CLIENTS} clients; "
          f"--max-concurrent-calls {args.max_concurrent_calls or 'default'}")
    print(f"server peak RSS: {after_load:.0f} MB after loading, {after_cold_burst:.0f} MB after "
          f"the cold burst, {at_end:.0f} MB after {ROUNDS - 1} more rounds")
    print(f"warm throughput: {tokens / statistics.median(seconds[1:]):,.0f} tokens/s "
          f"(median of {ROUNDS - 1} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
