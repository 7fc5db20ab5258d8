"""Running the development server in the foreground until SIGTERM or SIGINT (``clinical-ner serve``)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from clinical_ner.errors import check_seconds
from clinical_ner.serving.served_model import served_base_path
from clinical_ner.serving import defaults
from clinical_ner.serving.server import ModelServer

logger = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve_until_stopped(model_base_path: str | os.PathLike, model_name: str = defaults.MODEL_NAME,
                        *, grace_s: float = defaults.GRACE_S, exit_past_grace: bool = False,
                        **server_options) -> int:
    """Serve until SIGTERM or SIGINT, then let in-flight requests run ``grace_s`` seconds; 0.

    ``server_options`` are :class:`~clinical_ner.serving.server.ModelServer`'s keyword
    arguments. A model directory or bundled model name is exported to a temporary base
    path first (:func:`clinical_ner.serving.served_model.served_base_path`), deleted when
    the server stops. Logging is the caller's. Call it from the main thread (it installs
    signal handlers, and puts the previous ones back when it returns).

    ``exit_past_grace`` (a command line's process): when model calls are still running
    after the grace period, end the process with status 0 at once, logs flushed, instead
    of returning: Python's exit would wait for their threads for as long as the model
    takes (for ever if a call hangs), however short the grace period.
    """
    # Checked before serving: gRPC takes NaN or a negative grace for none, and
    # would cut the in-flight requests at the stop without a word.
    check_seconds("--grace", grace_s, maximum=defaults.MAX_GRACE_S, allow_zero=True)
    with served_base_path(model_base_path) as base_path:
        server = ModelServer(base_path, model_name, **server_options)
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            logger.info("Received %s: finishing in-flight requests", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
        try:
            server.start()
            # A timed wait lets the main thread run the signal handler promptly.
            while not stop.wait(0.5):
                pass
        finally:
            server.stop(grace_s)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if exit_past_grace and server.running_grpc_calls():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
