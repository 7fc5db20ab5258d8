"""gRPC and REST serving: the server, its TF Serving API, and the clients.

Every module here imports ``grpc``, so this package turns gRPC's fork support
off before any of them does, unless the environment already sets
``GRPC_ENABLE_FORK_SUPPORT``. Unset, grpcio 1.80 and later crash now and then
a child that ``subprocess.Popen(..., preexec_fn=...)`` forks while gRPC
channels are busy, before the child's ``exec`` (grpc/grpc#43055); PySpark
starts its JVM that way. 2 to 6 per cent of such starts failed here while
RPCs were in flight, none with the setting (tests/test_grpc_fork.py).
grpcio reads the variable when ``grpc`` is first imported, so it takes
effect only where that happens here or later. gRPC's own guide to fork
support (doc/fork_support.md) makes it opt-in; what it is for, gRPC objects
made before a ``fork()`` and used after it, we never do (a forked child makes
its own client).
"""
import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
