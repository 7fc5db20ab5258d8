"""Serving defaults: the one place the client, the server and the benchmarks read them from.

The ports are TensorFlow Serving's (gRPC 8500, REST 8501), so commands and
clients written for it work unchanged against ``clinical-ner serve``.
"""
from __future__ import annotations

MODEL_NAME = "clinical_ner"
HOST = "127.0.0.1"
GRPC_PORT = 8500
REST_PORT = 8501
TARGET = f"localhost:{GRPC_PORT}"

# Requests handled at once (gRPC's thread pool; REST requests in progress).
MAX_WORKERS = 8
# REST connections open at once, a thread each (503 beyond): Apache's threaded default,
# and well under the usual limit of 1024 open files.
MAX_CONNECTIONS = 256
POLL_INTERVAL_S = 1.0
# Matches max_batch_size in serving/batching_parameters.txt, so that what
# works here also works against TensorFlow Serving with batching.
MAX_DOCUMENTS = 64
MAX_DOCUMENT_CHARS = 100_000
# The client's batch size, and the most documents the server merges into one
# model call: smaller requests are merged up to it, full ones run as they are,
# so merging never makes a call larger, or its memory higher, than a full
# request's.
BATCH_DOCUMENTS = 32
# gRPC's receive (and the client's send) limit; the REST server's body limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: The largest such limit gRPC takes (a C int).
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
GRACE_S = 10.0
#: The longest ``--grace``: a day (a longer one is a mistake, not a drain).
MAX_GRACE_S = 24 * 3600.0

# Client: per attempt, per request with its retries, and retries at most.
TIMEOUT_S = 10.0
DEADLINE_S = 30.0
#: The longest timeout or deadline: a day (a longer one is a mistake).
MAX_WAIT_S = 24 * 3600.0
MAX_RETRIES = 10
# The longest wait for a TLS server's handshake when a client asks whether there is one.
TLS_PROBE_S = 5.0
