"""autoprumux: fast inference for BERT-like models by structured pruning x data multiplexing.

Definitions (baseline, sparsity, N, throughput, accuracy loss) are in the README. The names below
are imported on first use (PEP 562), so `import autoprumux.search` to read a search space, or the
CLI's `--help`, does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoprumux._lazy import lazy_exports
from autoprumux.config import Candidate, Recipe, check_budget
from autoprumux.errors import AutoPruMuxError, ConfigError, DataNotFoundError, ModelNotFoundError

__version__ = "0.2.0"

__getattr__ = lazy_exports(
    __name__,
    {
        "TASKS": "autoprumux.data",
        "load_task": "autoprumux.data",
        "ThroughputConfig": "autoprumux.config",
        "measure_throughput": "autoprumux.evaluation",
        "model_flops": "autoprumux.evaluation",
        "MuxConfig": "autoprumux.models",
        "MuxSequenceClassifier": "autoprumux.models",
        "resolve_model": "autoprumux.models",
        "Evaluation": "autoprumux.evaluation",
        "Measured": "autoprumux.evaluation",
        "PruMuxPipeline": "autoprumux.pipeline",
        "load": "autoprumux.deploy",
        "Predictor": "autoprumux.deploy",
    },
)

if TYPE_CHECKING:
    from autoprumux.data import TASKS, load_task
    from autoprumux.deploy import Predictor, load
    from autoprumux.evaluation import (
        Evaluation,
        Measured,
        ThroughputConfig,
        measure_throughput,
        model_flops,
    )
    from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model
    from autoprumux.pipeline import PruMuxPipeline


def recommend(budget: float = 2.0, task: str | None = None, **kw: Any) -> Any:
    """The fastest configuration measured to stay within `budget` accuracy-loss points (see
    `autoprumux.meta.recommend`)."""
    from autoprumux.meta import recommend as _recommend

    return _recommend(budget, task, **kw)


__all__ = [
    "TASKS",
    "AutoPruMuxError",
    "Candidate",
    "ConfigError",
    "DataNotFoundError",
    "Evaluation",
    "Measured",
    "ModelNotFoundError",
    "MuxConfig",
    "MuxSequenceClassifier",
    "Predictor",
    "PruMuxPipeline",
    "Recipe",
    "ThroughputConfig",
    "check_budget",
    "load",
    "load_task",
    "measure_throughput",
    "model_flops",
    "recommend",
    "resolve_model",
]
