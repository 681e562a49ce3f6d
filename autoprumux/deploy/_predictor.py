"""Load an exported model of the torch format and predict labels for texts: torch and the
tokenizer only (an ONNX export: `deploy._onnx`; how inputs are grouped: `deploy._predictions`).

Tokenisation and batching are the pipeline's own (`data.encode`, `data.collate`), so the
predictions equal the pipeline's for the same grouping of inputs (tests/test_export.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from autoprumux.config import check_precision
from autoprumux.data import collate, encode
from autoprumux.deploy._files import local_file, read_json, verify_files
from autoprumux.deploy._manifest import CALIBRATION_FILE, CARD_FILE, ExportManifest
from autoprumux.deploy._predictions import DEFAULT_BATCH, Predictions, PredictorBase, Text
from autoprumux.deploy._weights import load_model
from autoprumux.errors import ConfigError
from autoprumux.evaluation import resolve_device
from autoprumux.models import Int8Calibration, to_precision
from autoprumux.models._persist import CONFIG_FILE, WEIGHTS_FILE


class Predictor(PredictorBase):
    """An exported model, its tokenizer and its manifest, ready to label texts."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        manifest: ExportManifest,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = DEFAULT_BATCH,
    ):
        super().__init__(manifest, batch_size=batch_size)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[Text], *, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Logits (len(texts), classes) in float32 on the CPU; `progress(k)` after each batch
        of k inputs."""
        out = []
        for chunk in self.chunks(texts):
            b = collate(encode(chunk, self.tokenizer, self.manifest.max_seq_len))
            logits = self.model(
                b["input_ids"].to(self.device),
                b["attention_mask"].to(self.device),
                b["token_type_ids"].to(self.device),
            )
            out.append(logits.float().cpu())
            if progress is not None:
                progress(len(chunk))
        if not out:
            return torch.zeros((0, len(self.label_names)))
        return torch.cat(out)

    def predict(
        self, texts: Sequence[Text], *, progress: Callable[[int], None] | None = None
    ) -> Predictions:
        """Labels and class probabilities of `texts`: strings, or (text, text_pair) tuples for
        a pair task (see `deploy._predictions` on how N > 1 groups them)."""
        logits = self.logits(texts, progress=progress)
        probs = torch.softmax(logits, dim=-1)
        return Predictions(self.label_names, logits.argmax(-1).tolist(), probs.tolist())


def load_torch(
    d: Path,
    manifest: ExportManifest,
    *,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Predictor:
    """The predictor of the torch-format export in `d` (`deploy.load`, which read `manifest`).
    The model runs in the precision it was exported with (its fp32 weights converted here), or
    `precision` when given (e.g. "fp32" to run an int8 export unconverted, or on a device
    without int8).

    The directory is verified first (docs/export.md): every file the manifest lists must be
    inside it with the size and sha256 export recorded, the config must describe the model the
    manifest and the weights' header describe, and the tokenizer is read from a private copy
    of the listed files only. A folder that fails is a ConfigError naming the file."""
    dev = resolve_device(device)  # "cuda" where there is none: refused here, not in .to()
    want = precision or manifest.precision
    try:
        check_precision(want, device)
    except ConfigError as e:
        raise ConfigError(
            f"{e} (the model was exported for {manifest.precision}; pass "
            "precision='fp32' to run it unconverted)"
        ) from None
    verify_files(d, manifest.files, (WEIGHTS_FILE, CONFIG_FILE))
    model = load_model(d, manifest)
    tokenizer = _load_tokenizer(d, manifest)
    calibration = _read_calibration(d, manifest) if want == "int8" else None
    try:
        converted = to_precision(model, want, calibration=calibration)
    except ValueError as e:  # a calibration made for other weights
        raise ConfigError(f"{str(d / CALIBRATION_FILE)!r}: {e}; export the model again") from None
    return Predictor(converted, tokenizer, manifest, device=dev, batch_size=batch_size)


# the listed files that are not the tokenizer's
NOT_TOKENIZER = {CONFIG_FILE, WEIGHTS_FILE, CALIBRATION_FILE, CARD_FILE}
# files in which transformers looks for `auto_map`, the code it would import from the folder
AUTO_MAP_FILES = ("tokenizer_config.json", "config.json")


def _load_tokenizer(directory: Path, manifest: ExportManifest) -> Any:
    """The tokenizer, read from a private copy of the tokenizer files the manifest lists (and
    `load` verified): a file added to the folder, or a link in it, is never read. Remote code
    (`auto_map`) is refused: an export never needs it."""
    from transformers import AutoTokenizer

    names = sorted(set(manifest.files) - NOT_TOKENIZER)
    for name in AUTO_MAP_FILES:
        cfg = read_json(directory, name) if name in names else None
        if isinstance(cfg, dict) and "auto_map" in cfg:
            raise ConfigError(
                f"{str(directory / name)!r} asks for code from the model folder (auto_map); "
                "autoprumux never runs code from an export: export the model again"
            )
    with tempfile.TemporaryDirectory(prefix="autoprumux-tokenizer-") as tmp:
        for name in names:
            shutil.copyfile(local_file(directory, name), Path(tmp) / name)
        try:
            return AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
        except Exception as e:  # noqa: BLE001 - transformers raises many types for bad files
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(
                f"the tokenizer files of {str(directory)!r} do not load ({type(e).__name__}: "
                f"{first}); export the model again"
            ) from None


def _read_calibration(directory: Path, manifest: ExportManifest) -> Int8Calibration:
    """The int8 input ranges the export measured (`CALIBRATION_FILE`, verified with the
    other files)."""
    if CALIBRATION_FILE not in manifest.files:
        raise ConfigError(
            f"{str(directory)!r} holds no {CALIBRATION_FILE}, which int8 needs; export the model "
            "again, or load it with precision='fp32'"
        )
    data = read_json(directory, CALIBRATION_FILE)
    try:
        return Int8Calibration.from_dict(data)
    except ValueError as e:
        raise ConfigError(
            f"{str(directory / CALIBRATION_FILE)!r} is not a valid int8 calibration: {e}; "
            "export again"
        ) from None
