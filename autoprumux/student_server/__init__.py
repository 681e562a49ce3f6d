"""Burst-adaptive serving of Academus student ensembles.

A loopback HTTP endpoint (`StudentServer`) classifies texts through a dynamic batcher
(`DynamicBatcher`); a policy (`AdaptivePolicy`, or `FixedPolicy` for comparison) picks how many
students run from a table of operating points (predicted throughput and accuracy loss per k),
lowering k when the queue's delay exceeds the latency objective and restoring it when the load
falls. `run_load` replays a bounded steady/burst schedule against a loopback server.
"""

from autoprumux.student_server._batcher import DynamicBatcher, Prediction, ServingError, Text
from autoprumux.student_server._config import ServingConfig
from autoprumux.student_server._http import StudentServer, parse_predict_request
from autoprumux.student_server._loadgen import (
    LoadReport,
    LoadSchedule,
    Phase,
    PhaseReport,
    burst_schedule,
    check_loopback,
    run_load,
)
from autoprumux.student_server._policy import (
    AdaptivePolicy,
    FixedPolicy,
    KChange,
    KPolicy,
    Observation,
    OperatingPoint,
    PolicyConfig,
    operating_points,
)
from autoprumux.student_server._profile import (
    meta_accuracy_losses,
    profile_operating_points,
    student_accuracy_losses,
)

__all__ = [
    "AdaptivePolicy",
    "DynamicBatcher",
    "FixedPolicy",
    "KChange",
    "KPolicy",
    "LoadReport",
    "LoadSchedule",
    "Observation",
    "OperatingPoint",
    "Phase",
    "PhaseReport",
    "PolicyConfig",
    "Prediction",
    "ServingConfig",
    "ServingError",
    "StudentServer",
    "Text",
    "burst_schedule",
    "check_loopback",
    "operating_points",
    "parse_predict_request",
    "meta_accuracy_losses",
    "profile_operating_points",
    "run_load",
    "student_accuracy_losses",
]
