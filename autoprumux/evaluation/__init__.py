"""Evaluation: dev metrics, throughput and FLOPs."""

from autoprumux.evaluation._accuracy import (
    PairedPredictions,
    paired_dev_metrics,
    paired_metrics,
    paired_predictions,
    prediction_metrics,
    task_metrics,
)
from autoprumux.evaluation._machine import Machine, this_machine
from autoprumux.evaluation._noise import NOISE_STANDARD_ERRORS, DevNoise, dev_noise, paired_loss_se
from autoprumux.evaluation._report import (
    Evaluation,
    Measured,
    describe_model,
    measure_side_by_side,
)
from autoprumux.evaluation._stages import StageRun, stage_runs
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
    "NOISE_STANDARD_ERRORS",
    "DevNoise",
    "Evaluation",
    "Machine",
    "Measured",
    "PairedPredictions",
    "StageRun",
    "describe_model",
    "dev_noise",
    "measure_side_by_side",
    "paired_dev_metrics",
    "paired_loss_se",
    "paired_metrics",
    "paired_predictions",
    "prediction_metrics",
    "ThroughputConfig",
    "ThroughputResult",
    "fixed_batch",
    "measure_throughput",
    "model_flops",
    "model_runner",
    "resolve_device",
    "stage_runs",
    "task_metrics",
    "time_callable",
    "this_machine",
    "time_interleaved",
]
