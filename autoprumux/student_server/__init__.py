"""Burst-adaptive serving of Academus student ensembles and multiplexed models.

A loopback HTTP endpoint (`StudentServer`) classifies texts through a dynamic batcher
(`DynamicBatcher`); a policy (`AdaptivePolicy`, or `FixedPolicy` for comparison) picks what
serves each batch from a table of operating points (predicted throughput and accuracy loss of
each prefix of k students and of each loaded model, e.g. a multiplexed configuration of the
same task; ordered and held to a budget on the validation loss, the dev loss reported beside it),
stepping down the table when the queue's delay exceeds the latency objective
(fewer students, then more inputs per pass) and back up when the load falls. Every answer says
which configuration served it. The load generator that replays bursts against it is a benchmark
tool (`benchmarks/_loadgen.py`).
"""

from autoprumux.student_server._batcher import DynamicBatcher, Prediction, ServingError, Text
from autoprumux.student_server._config import ServingConfig, is_loopback
from autoprumux.student_server._http import StudentServer, parse_predict_request
from autoprumux.student_server._policy import (
    PREDICTED,
    AdaptivePolicy,
    FixedPolicy,
    Observation,
    OperatingPoint,
    PointChange,
    PointKey,
    PointLosses,
    PolicyConfig,
    ServingPolicy,
    chosen_line,
    operating_points,
    point_name,
    table_chosen_on,
    within_budget,
)
from autoprumux.student_server._profile import (
    measured_losses,
    meta_accuracy_losses,
    model_accuracy_losses,
    profile_operating_points,
    student_accuracy_losses,
)

__all__ = [
    "AdaptivePolicy",
    "DynamicBatcher",
    "FixedPolicy",
    "Observation",
    "OperatingPoint",
    "PREDICTED",
    "PointChange",
    "PointKey",
    "PointLosses",
    "PolicyConfig",
    "Prediction",
    "ServingConfig",
    "ServingError",
    "ServingPolicy",
    "StudentServer",
    "Text",
    "chosen_line",
    "is_loopback",
    "operating_points",
    "parse_predict_request",
    "point_name",
    "measured_losses",
    "meta_accuracy_losses",
    "model_accuracy_losses",
    "profile_operating_points",
    "student_accuracy_losses",
    "table_chosen_on",
    "within_budget",
]
