"""Load an exported model and predict labels for texts: torch and the tokenizer only.

A multiplexed model (N > 1) is used like any other: the predictor takes the inputs in order, N
at a time, and a last incomplete group gets dummy rows (the model adds them, see
`MuxSequenceClassifier.layout`). Inputs that share a group are mixed in one forward pass, so an
input's probabilities depend slightly on its group mates: the same list in the same order
always gives the same answers, and the dev metric on the model card is the mean over several
seeded orders.

Tokenisation and batching are the pipeline's own (`data.encode`, `data.collate`), so the
predictions equal the pipeline's for the same grouping of inputs (tests/test_export.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoprumux.config import check_precision
from autoprumux.data import Example, collate, encode
from autoprumux.deploy._files import local_file, read_json, verify_files
from autoprumux.deploy._manifest import (
    CALIBRATION_FILE,
    CARD_FILE,
    ExportManifest,
    read_manifest,
)
from autoprumux.deploy._weights import load_model
from autoprumux.errors import ConfigError
from autoprumux.evaluation import resolve_device
from autoprumux.models import Int8Calibration, to_precision
from autoprumux.models._persist import CONFIG_FILE, WEIGHTS_FILE

# the pipeline's own dev batch (training.predict); any multiple of N gives the same groups
DEFAULT_BATCH = 64
Text = str | tuple[str, str]


@dataclass(frozen=True)
class Predictions:
    """Per input: the predicted class and the probability of every class (in `label_names`
    order)."""

    label_names: tuple[str, ...]
    label_ids: list[int]  # the argmax of the logits (as the pipeline's metrics take it)
    probabilities: list[list[float]]

    @property
    def labels(self) -> list[str]:
        return [self.label_names[i] for i in self.label_ids]

    def __len__(self) -> int:
        return len(self.probabilities)

    def columns(self, prefix: str = "") -> dict[str, list[Any]]:
        """The predictions as table columns (batch scoring and the served model): `label`, its
        `probability`, and `probability_<name>` per class, each name after `prefix`."""
        ids = self.label_ids
        cols: dict[str, list[Any]] = {
            f"{prefix}label": [self.label_names[i] for i in ids],
            f"{prefix}probability": [p[i] for i, p in zip(ids, self.probabilities, strict=True)],
        }
        for j, name in enumerate(self.label_names):
            cols[f"{prefix}probability_{name}"] = [p[j] for p in self.probabilities]
        return cols

    def records(self) -> list[dict[str, Any]]:
        """One dict per input: label, its probability and every class's probability."""
        return [
            {
                "label": self.label_names[i],
                "probability": p[i],
                "probabilities": dict(zip(self.label_names, p, strict=True)),
            }
            for i, p in zip(self.label_ids, self.probabilities, strict=True)
        ]


class Predictor:
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
        n = manifest.n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size ({batch_size!r}) must be a positive integer, e.g. 64")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.device = torch.device(device)
        # whole groups of N per batch, so inputs i*N .. i*N+N-1 always share a forward pass
        self.batch_size = max(n, batch_size // n * n)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.manifest.label_names

    @property
    def n(self) -> int:
        return self.manifest.n

    @property
    def pair(self) -> bool:
        return self.manifest.pair

    def _examples(self, texts: Sequence[Text]) -> list[Example]:
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise ConfigError(
                f"predict takes a list of texts, got {type(texts).__name__}; wrap a single "
                "text in a list: predict([text])"
            )
        out = []
        for i, t in enumerate(texts):
            if self.pair:
                if (
                    not isinstance(t, tuple | list)
                    or len(t) != 2
                    or not all(isinstance(x, str) for x in t)
                ):
                    raise ConfigError(
                        f"input {i}: task {self.manifest.task} classifies pairs; give "
                        f"(text, text_pair) tuples of two strings, got {_short(t)}"
                    )
                out.append(Example(t[0], t[1], 0))
            else:
                if not isinstance(t, str):
                    raise ConfigError(
                        f"input {i}: task {self.manifest.task} classifies single texts; give "
                        f"strings, got {_short(t)}"
                    )
                out.append(Example(t, None, 0))
        return out

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[Text], *, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Logits (len(texts), classes) in float32 on the CPU; `progress(k)` after each batch
        of k inputs."""
        examples = self._examples(texts)
        out = []
        for s in range(0, len(examples), self.batch_size):
            chunk = examples[s : s + self.batch_size]
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
        a pair task (see the module docstring on how N > 1 groups them)."""
        logits = self.logits(texts, progress=progress)
        probs = torch.softmax(logits, dim=-1)
        return Predictions(self.label_names, logits.argmax(-1).tolist(), probs.tolist())


def load(
    directory: str | Path,
    *,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Predictor:
    """The predictor of a directory written by `autoprumux export`. The model runs in the
    precision it was exported with (its fp32 weights converted here), or `precision` when
    given (e.g. "fp32" to run an int8 export unconverted, or on a device without int8).

    The directory is verified first (docs/export.md): every file the manifest lists must be
    inside it with the size and sha256 export recorded, the config must describe the model the
    manifest and the weights' header describe, and the tokenizer is read from a private copy
    of the listed files only. A folder that fails is a ConfigError naming the file."""
    d = Path(directory)
    manifest = read_manifest(d)
    dev = resolve_device(device)  # "cuda" where there is none: refused here, not in .to()
    want = precision or manifest.precision
    try:
        check_precision(want, device)
    except ConfigError as e:
        raise ConfigError(
            f"{e} (the model was exported for {manifest.precision}; pass "
            "precision='fp32' to run it unconverted)"
        ) from None
    verify_files(d, manifest.files)
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


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."
