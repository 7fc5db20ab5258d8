"""Peak memory of ``clinical-ner serve`` when eight clients arrive at once on a cold server.

    python -m benchmarks.serving_memory --export benchmarks/work/bc5cdr/export \\
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
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_util import MODEL_NAME, ServerProcess, read_data
from clinical_ner.formats import load_corpus
from clinical_ner.serving.client import ServingClient

CLIENTS = 8
ROUNDS = 6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, type=Path,
                        help="a model base path from clinical-ner export (holds 1/, ...)")
    parser.add_argument("--data", required=True, type=Path, help="a corpus file or folder")
    parser.add_argument("--max-concurrent-calls", type=int, default=None, metavar="N",
                        help="passed to clinical-ner serve (default: the server's default)")
    args = parser.parse_args(argv)

    corpus = read_data(parser, "--data", lambda: load_corpus(args.data))
    documents = [" ".join(sentence.tokens) for document in corpus.documents
                 for sentence in document.sentences if sentence.tokens]
    tokens = sum(len(document.split()) for document in documents)
    extra_args = ([] if args.max_concurrent_calls is None
                  else ["--max-concurrent-calls", str(args.max_concurrent_calls)])
    server = ServerProcess(args.export, Path(os.devnull), extra_args)
    clients = []
    try:
        server.wait_ready()
        after_load = server.memory_mb("VmHWM")
        clients = [ServingClient(server.target, MODEL_NAME, batch_size=32, timeout=120.0,
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
                    after_cold_burst = server.memory_mb("VmHWM")
        at_end = server.memory_mb("VmHWM")
    finally:
        for client in clients:
            client.close()
        server.stop()
    print(f"{len(documents)} documents, {tokens} tokens, {CLIENTS} clients; "
          f"--max-concurrent-calls {args.max_concurrent_calls or 'default'}")
    print(f"server peak RSS: {after_load:.0f} MB after loading, {after_cold_burst:.0f} MB after "
          f"the cold burst, {at_end:.0f} MB after {ROUNDS - 1} more rounds")
    print(f"warm throughput: {tokens / statistics.median(seconds[1:]):,.0f} tokens/s "
          f"(median of {ROUNDS - 1} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
