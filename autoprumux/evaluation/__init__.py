"""Evaluation: dev metrics, throughput and FLOPs."""

from autoprumux.evaluation._accuracy import task_metrics
from autoprumux.evaluation._throughput import (
    ThroughputConfig,
    ThroughputResult,
    fixed_batch,
    measure_throughput,
    model_flops,
    model_runner,
    resolve_device,
    time_callable,
    time_interleaved,
)

__all__ = [
    "ThroughputConfig",
    "ThroughputResult",
    "fixed_batch",
    "measure_throughput",
    "model_flops",
    "model_runner",
    "resolve_device",
    "task_metrics",
    "time_callable",
    "time_interleaved",
]
