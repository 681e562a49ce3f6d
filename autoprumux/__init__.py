"""autoprumux: fast inference for BERT-like models by structured pruning x data multiplexing.

Definitions (baseline, sparsity, N, throughput, accuracy loss) follow the project's DESIGN notes
and the README.
"""

from autoprumux.data import TASKS, load_task
from autoprumux.errors import AutoPruMuxError, ConfigError, DataNotFoundError, ModelNotFoundError
from autoprumux.evaluation import ThroughputConfig, measure_throughput, model_flops
from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model
from autoprumux.pipeline import Evaluation, Measured, PruMuxPipeline, Recipe

__version__ = "0.1.0"

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
    "resolve_model",
]
