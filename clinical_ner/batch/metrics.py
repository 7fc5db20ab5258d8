"""The Beam metrics of a batch annotation: counts only, never note text."""
from __future__ import annotations

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricResults, MetricsFilter

NAMESPACE = "clinical_ner"
NOTES = "notes"          # notes annotated
TOKENS = "tokens"        # their tokens (the model's tokenizer)
ENTITIES = "entities"    # entities found
ERRORS = "errors"        # notes set aside (errors-*.jsonl)
# Per runtime, the worker models that annotated at least one batch (each
# counts once): which runtime the workers ran, and how many loaded a model.
WORKERS_LITERT = "workers_litert"
WORKERS_TENSORFLOW = "workers_tensorflow"
NAMES = (NOTES, TOKENS, ENTITIES, ERRORS, WORKERS_LITERT, WORKERS_TENSORFLOW)


def counter(name: str):
    """The counter ``clinical_ner/<name>``, to increment inside a DoFn or ModelHandler."""
    return Metrics.counter(NAMESPACE, name)


def totals(results: MetricResults) -> dict[str, int]:
    """Every counter of :data:`NAMES` (0 when never incremented), summed over steps.

    Committed values (successful bundles only, so a retried bundle counts
    once) where the runner reports them, else attempted values.
    """
    found = dict.fromkeys(NAMES, 0)
    for result in results.query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        if result.key.metric.name in found:
            value = result.committed if result.committed is not None else result.attempted
            found[result.key.metric.name] += value or 0
    return found
