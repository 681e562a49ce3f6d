"""Deploy an exported model: `load(DIR)` gives a predictor that labels texts.

A torch export (`Predictor`) needs only torch and the tokenizer (transformers' AutoTokenizer)
besides `data`, `models` and the device check of `evaluation`; an ONNX export
(`OnnxPredictor`) needs onnxruntime and the `tokenizers` library, an OpenVINO export
(`OpenVinoPredictor`) openvino and `tokenizers`, and neither imports torch.
Neither needs Optuna, MLflow or LightGBM, nor any of the pipeline, search, meta-model or
tracking code. The directory is written by `autoprumux.export` (layout: docs/export.md).

The names are imported on first use (PEP 562), so loading an ONNX export imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprumux._lazy import lazy_exports

_MANIFEST = "autoprumux.deploy._manifest"
_PREDICTIONS = "autoprumux.deploy._predictions"

__getattr__ = lazy_exports(
    __name__,
    {
        "CALIBRATION_FILE": _MANIFEST,
        "CARD_FILE": _MANIFEST,
        "MANIFEST_FILE": _MANIFEST,
        "MODEL_FORMATS": _MANIFEST,
        "ONNX_FILE": _MANIFEST,
        "OPENVINO_FILES": _MANIFEST,
        "ExportManifest": _MANIFEST,
        "ExportSource": _MANIFEST,
        "Measurement": _MANIFEST,
        "read_manifest": _MANIFEST,
        "DEFAULT_BATCH": _PREDICTIONS,
        "Predictions": _PREDICTIONS,
        "load": "autoprumux.deploy._load",
        "OnnxPredictor": "autoprumux.deploy._onnx",
        "OpenVinoPredictor": "autoprumux.deploy._openvino",
        "Predictor": "autoprumux.deploy._predictor",
    },
)

if TYPE_CHECKING:
    from autoprumux.deploy._load import load
    from autoprumux.deploy._manifest import (
        CALIBRATION_FILE,
        CARD_FILE,
        MANIFEST_FILE,
        MODEL_FORMATS,
        ONNX_FILE,
        OPENVINO_FILES,
        ExportManifest,
        ExportSource,
        Measurement,
        read_manifest,
    )
    from autoprumux.deploy._onnx import OnnxPredictor
    from autoprumux.deploy._openvino import OpenVinoPredictor
    from autoprumux.deploy._predictions import DEFAULT_BATCH, Predictions
    from autoprumux.deploy._predictor import Predictor

__all__ = [
    "CALIBRATION_FILE",
    "CARD_FILE",
    "DEFAULT_BATCH",
    "MANIFEST_FILE",
    "MODEL_FORMATS",
    "ONNX_FILE",
    "OPENVINO_FILES",
    "ExportManifest",
    "ExportSource",
    "Measurement",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "Predictions",
    "Predictor",
    "load",
    "read_manifest",
]
