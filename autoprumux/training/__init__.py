"""Training: the standard loop (fine-tune, distil, retrieval), the L2L layer-to-layer executor
and the mux warm-up."""

from autoprumux.training._config import AnnealOnPlateau, TrainConfig, resolve_autocast
from autoprumux.training._l2l import L2LExecutor
from autoprumux.training._l2l_memory import DeviceLedger, L2LStats
from autoprumux.training._late import frozen_targets, shared_layer_names, train_late_frozen
from autoprumux.training._loop import predict, train_classifier
from autoprumux.training._losses import hidden_distill_loss, kd_loss, retrieval_loss
from autoprumux.training._path import level_steps, path_levels, prune_path
from autoprumux.training._prune import prune_in_stages
from autoprumux.training._stopping import (
    PlateauStop,
    StoppingRule,
    describe_convergence,
    train_until_plateau,
)
from autoprumux.training._students import (
    StudentTrainConfig,
    distill_students,
    ensemble_outputs,
    prefix_mse,
)
from autoprumux.training._teacher import TeacherLayers, write_teacher_layers
from autoprumux.training._warmup import evaluate_retrieval, retrieval_warmup

__all__ = [
    "AnnealOnPlateau",
    "DeviceLedger",
    "L2LExecutor",
    "L2LStats",
    "PlateauStop",
    "StoppingRule",
    "StudentTrainConfig",
    "TeacherLayers",
    "TrainConfig",
    "describe_convergence",
    "distill_students",
    "ensemble_outputs",
    "evaluate_retrieval",
    "frozen_targets",
    "hidden_distill_loss",
    "kd_loss",
    "level_steps",
    "path_levels",
    "prefix_mse",
    "prune_in_stages",
    "prune_path",
    "resolve_autocast",
    "predict",
    "retrieval_loss",
    "retrieval_warmup",
    "shared_layer_names",
    "train_classifier",
    "train_late_frozen",
    "train_until_plateau",
    "write_teacher_layers",
]
