"""autoprumux: fast inference for BERT-like models by structured pruning x data multiplexing.

Definitions (baseline, sparsity, N, throughput, accuracy loss) follow the project's DESIGN notes
and the README.
"""

from typing import Any

from autoprumux.data import TASKS, load_task
from autoprumux.errors import AutoPruMuxError, ConfigError, DataNotFoundError, ModelNotFoundError
from autoprumux.evaluation import ThroughputConfig, measure_throughput, model_flops
from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model
from autoprumux.pipeline import Evaluation, Measured, PruMuxPipeline, Recipe

__version__ = "0.1.0"


def recommend(budget: float = 2.0, task: str | None = None, **kw: Any) -> Any:
    """The fastest configuration predicted to stay within `budget` accuracy-loss points
    (see `autoprumux.search.recommend`; imported lazily, it needs LightGBM and Optuna)."""
    from autoprumux.search import recommend as _recommend

    return _recommend(budget, task, **kw)


__all__ = [
    "TASKS",
    "AutoPruMuxError",
    "ConfigError",
    "DataNotFoundError",
    "Evaluation",
    "Measured",
    "ModelNotFoundError",
    "MuxConfig",
    "MuxSequenceClassifier",
    "PruMuxPipeline",
    "Recipe",
    "ThroughputConfig",
    "load_task",
    "measure_throughput",
    "model_flops",
    "recommend",
    "resolve_model",
]
