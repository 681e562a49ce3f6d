"""Models: the compact prunable encoder, data multiplexing and structured pruning."""

from autoprumux.models._encoder import Encoder, EncoderConfig, EncoderLayer, attention_bias
from autoprumux.models._graph import GraphExportError, write_onnx_graph
from autoprumux.models._loading import DEFAULT_MODEL, BaseModel, packaged_model_dir, resolve_model
from autoprumux.models._mux import (
    MUX_VARIANTS,
    ConcatCombiner,
    GaussianHadamardMux,
    Multiplexer,
    MuxConfig,
    MuxSequenceClassifier,
    OrthogonalMux,
    warm_start_from,
)
from autoprumux.models._openvino import OpenVinoClassifier, to_openvino
from autoprumux.models._precision import (
    Int8Calibration,
    RunsSource,
    StaticInt8Linear,
    calibrate_int8,
    calibration_batches,
    count_parameters,
    fake_int8,
    to_precision,
)
from autoprumux.models._pruning import (
    IMPORTANCE_SCORING,
    LAYER_TIME,
    Importance,
    LayerTime,
    PruningPlan,
    apply_plan,
    compute_importance,
    counted_sparsity,
    search_plan,
)
from autoprumux.models._students import Student, StudentConfig, StudentEnsemble

AnyModel = MuxSequenceClassifier | StudentEnsemble
"""What the pipeline measures: a (pruned, multiplexed) classifier or a student ensemble."""

__all__ = [
    "IMPORTANCE_SCORING",
    "LAYER_TIME",
    "LayerTime",
    "attention_bias",
    "calibrate_int8",
    "calibration_batches",
    "count_parameters",
    "fake_int8",
    "to_openvino",
    "to_precision",
    "write_onnx_graph",
    "warm_start_from",
    "AnyModel",
    "DEFAULT_MODEL",
    "MUX_VARIANTS",
    "BaseModel",
    "Encoder",
    "EncoderConfig",
    "EncoderLayer",
    "ConcatCombiner",
    "GaussianHadamardMux",
    "GraphExportError",
    "Importance",
    "Int8Calibration",
    "Multiplexer",
    "MuxConfig",
    "MuxSequenceClassifier",
    "OpenVinoClassifier",
    "OrthogonalMux",
    "PruningPlan",
    "RunsSource",
    "StaticInt8Linear",
    "Student",
    "StudentConfig",
    "StudentEnsemble",
    "apply_plan",
    "compute_importance",
    "counted_sparsity",
    "packaged_model_dir",
    "resolve_model",
    "search_plan",
]
