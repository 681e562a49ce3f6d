"""Deploy an exported model: `load(DIR)` gives a `Predictor` that labels texts.

Needs only torch and the tokenizer (transformers' AutoTokenizer) besides `data`, `models` and
the device check of `evaluation`:
no Optuna, MLflow or LightGBM, and none of the pipeline, search, meta-model or tracking code.
The directory is written by `autoprumux.export` (layout: docs/export.md).
"""

from autoprumux.deploy._manifest import (
    CALIBRATION_FILE,
    CARD_FILE,
    MANIFEST_FILE,
    ExportManifest,
    ExportSource,
    Measurement,
    read_manifest,
)
from autoprumux.deploy._predictor import DEFAULT_BATCH, Predictions, Predictor, load

__all__ = [
    "CALIBRATION_FILE",
    "CARD_FILE",
    "DEFAULT_BATCH",
    "MANIFEST_FILE",
    "ExportManifest",
    "ExportSource",
    "Measurement",
    "Predictions",
    "Predictor",
    "load",
    "read_manifest",
]
