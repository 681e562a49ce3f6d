"""Evaluation: dev metrics, throughput and FLOPs."""

from autoprumux.evaluation._accuracy import accuracy, f1_binary, matthews_corrcoef, task_metrics
from autoprumux.evaluation._throughput import (
    ThroughputConfig,
    ThroughputResult,
    fixed_batch,
    measure_throughput,
    model_flops,
    resolve_device,
    time_callable,
)

__all__ = [
    "ThroughputConfig",
    "ThroughputResult",
    "accuracy",
    "f1_binary",
    "fixed_batch",
    "matthews_corrcoef",
    "measure_throughput",
    "model_flops",
    "resolve_device",
    "task_metrics",
    "time_callable",
]
