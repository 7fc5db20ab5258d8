"""Keep TensorFlow's C++ and absl start-up lines off stderr.

TensorFlow prints its first lines (``port.cc``, ``cudart_stub.cc``, ...)
from C++ before absl logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
cannot hide them; only the import itself can be silenced, at the file
descriptor. Later C++ lines (``failed call to cuInit``, ``NodeDef mentions
attribute ...``) obey ``TF_CPP_MIN_LOG_LEVEL``. Nothing here imports
TensorFlow: commands that never need it (the LiteRT runtime, ``client``'s
argument errors) stay fast.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import warnings
from types import ModuleType
from typing import Iterator

#: Environment a quiet command sets before TensorFlow is imported (a value
#: the user set wins).
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}

# File descriptor 2 is the process's: two threads redirecting it at once (LiteRT exports
# loaded in threads) put it back out of order, the second to the first's deleted buffer,
# and every later line on stderr was lost. Reentrant: a redirect within one nests.
_STDERR_REDIRECT = threading.RLock()


def _new_redirect_lock_in_forked_child() -> None:
    # A fork while another thread redirects copies the lock held, by a thread the child lacks.
    global _STDERR_REDIRECT
    _STDERR_REDIRECT = threading.RLock()


os.register_at_fork(after_in_child=_new_redirect_lock_in_forked_child)


@contextlib.contextmanager
def stderr_to_buffer() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file; replay it only on an error.

    One thread at a time; what other threads write to stderr meanwhile goes
    to the buffer too.
    """
    with _STDERR_REDIRECT, tempfile.TemporaryFile() as buffer:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(buffer.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            buffer.seek(0)
            os.write(2, buffer.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with stderr_to_buffer():
            self._loader.exec_module(module)
        logging.getLogger("absl").setLevel(logging.ERROR)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the first ``import tensorflow`` of the process in :func:`stderr_to_buffer`."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up output for the rest of this process."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Keras and TensorFlow warn about their own internals (deprecations, the
    # input pipeline running out of data at an epoch's end), not about the
    # user's input.
    for module in ("tensorflow", "keras", "absl"):
        warnings.filterwarnings("ignore", module=module)
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
