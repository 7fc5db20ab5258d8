"""Request counts and recent latencies, for the summary the server logs when it stops."""
from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class RequestStats:
    """Request counts per method and status code, and recent latencies per method.

    >>> stats = RequestStats()
    >>> stats.record("Predict", "OK", 0.002)
    >>> stats.summary()
    'Predict: OK 1; latency p50 2.0 ms, max 2.0 ms'
    """

    # Latency percentiles cover the most recent requests, in bounded memory.
    _RECENT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.latency_s: dict[str, deque[float]] = {}

    def record(self, method: str, code: str, seconds: float) -> None:
        with self._lock:
            self.counts[method, code] += 1
            self.latency_s.setdefault(method, deque(maxlen=self._RECENT)).append(seconds)

    def summary(self) -> str:
        with self._lock:
            if not self.counts:
                return "no requests"
            parts = []
            for method, latencies in sorted(self.latency_s.items()):
                codes = ", ".join(
                    f"{code} {count}"
                    for (name, code), count in sorted(self.counts.items())
                    if name == method
                )
                parts.append(
                    f"{method}: {codes}; latency p50 {np.median(latencies) * 1e3:.1f} ms, "
                    f"max {max(latencies) * 1e3:.1f} ms"
                )
            return "; ".join(parts)
