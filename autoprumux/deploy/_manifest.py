"""The manifest of an exported model directory: what a predictor needs beside the weights, and
what made them (written by `autoprumux.export`, read by `autoprumux.deploy.load`).

The weights and the architecture (per-layer heads and FFN units after pruning, the mux
settings, the number of labels) are the model directory of `models._persist`; this file adds the
task's side: label names, single texts or pairs, the tokenisation length, the precision to run
in, and the provenance shown on the model card.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoprumux.config import OPENVINO_PRECISIONS, Candidate
from autoprumux.data import metric_label
from autoprumux.deploy._files import FileRecord, read_json
from autoprumux.errors import ConfigError

MANIFEST_FILE = "autoprumux_export.json"
# /2 added `files` (the size and sha256 of every other file); a /1 manifest cannot be verified
MANIFEST_FORMAT = "autoprumux.export/2"
CARD_FILE = "README.md"
# the input range of each int8 layer, measured on training texts at export (models.Int8Calibration)
CALIBRATION_FILE = "int8_calibration.json"
# the fp32 model as an ONNX graph, the model of a `model_format` "onnx" export
ONNX_FILE = "model.onnx"
# the model as OpenVINO IR (its graph, and its weights: int8 ones for ov-int8), the model of a
# `model_format` "openvino" export
OPENVINO_FILES = ("model.xml", "model.bin")
# what runs the exported model: "torch" (safetensors weights + the autoprumux config, converted
# to the manifest's precision when loaded), "onnx" (`ONNX_FILE`, run by ONNX Runtime, no torch)
# or "openvino" (`OPENVINO_FILES`, run by OpenVINO, no torch)
MODEL_FORMATS = ("torch", "onnx", "openvino")
# what `pip install` adds for the "onnx" format (export and load alike)
ONNX_INSTALL = "pip install 'autoprumux[onnx]'"


def default_format(config: Candidate) -> str:
    """The format `config` was measured in: "openvino" for an OpenVINO precision, else torch."""
    return "openvino" if config.precision in OPENVINO_PRECISIONS else "torch"


def format_problem(config: Candidate, model_format: str) -> str | None:
    """Why `config` cannot be exported in `model_format`, with the fix (None: it can).

    An OpenVINO precision (ov-fp32, ov-int8) was measured as OpenVINO's graph and is exported as
    that (IR), nothing else; the other precisions are not OpenVINO's. ONNX holds the fp32 model
    of one input per row: int8 runs torch's oneDNN quantized kernels, which have no ONNX form,
    and a multiplexed model pads its rows to a multiple of N inside its forward pass, a branch
    on the batch size that an export with a dynamic batch cannot keep."""
    ov = config.precision in OPENVINO_PRECISIONS
    if ov != (model_format == "openvino"):
        return (
            f"precision {config.precision} was measured in OpenVINO and exports as OpenVINO IR: "
            "export --format openvino"
            if ov
            else f"--format openvino holds the precisions {list(OPENVINO_PRECISIONS)}, not "
            f"{config.precision}; export with --precision ov-fp32 or ov-int8, or --format torch"
        )
    if model_format != "onnx":
        return None
    if config.precision != "fp32":
        return (
            f"precision {config.precision} does not export to ONNX (only the fp32 model does: "
            "int8 runs torch's oneDNN kernels, the CUDA precisions torch's GPU kernels); export "
            "--format torch, or --precision fp32"
        )
    if config.mux > 1:
        return (
            f"a multiplexed model (N={config.mux}) does not export to ONNX (it pads the batch to "
            "a multiple of N inside its forward pass); export --format torch, or --mux 1"
        )
    return None


@dataclass(frozen=True)
class Measurement:
    """The model beside its baseline, measured when it was exported (dev metric in points,
    throughput in examples per second, side by side in one process)."""

    metric_name: str
    metric: float
    baseline_metric: float
    accuracy: float
    baseline_accuracy: float
    throughput: float
    baseline_throughput: float
    sparsity: float  # counted from the physically smaller model
    dev_examples: int
    throughput_batch: int
    throughput_seq_len: int
    device: str
    pos_label: str | None = None  # the class f1 scored as positive (None: no f1 of two classes)
    # one line: whether the trained baseline converged and its steps (None: given, or unknown)
    baseline_training: str | None = None
    # the metrics on the validation split (held out of train), the loss a search chose on (None:
    # no validation split, or exported before exports recorded them)
    validation_metric: float | None = None
    baseline_validation_metric: float | None = None
    validation_examples: int = 0
    # the held-out split(s) those were scored on: "validation", or "validation+stopping" for a
    # model that trained nothing of its own (chosen on both)
    validation_split: str = "validation"
    validation_loss_se: float | None = None  # its paired standard error (None: not recorded)
    # how the model's training stages stopped, in the order they trained (`evaluation.StageRun.
    # brief`: stage, name, stopped, converged, steps, cap, ...; empty: none, or not recorded)
    stage_training: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metric_label(self) -> str:
        """The metric as the model card names it: "f1 (positive class 'fraud')", else its name."""
        return metric_label(self.metric_name, self.pos_label)

    @property
    def accuracy_loss(self) -> float:
        """On dev: what to expect."""
        return self.baseline_metric - self.metric

    @property
    def validation_loss(self) -> float | None:
        """On the validation split: what a search chose on (None: not measured)."""
        b, c = self.baseline_validation_metric, self.validation_metric
        return None if b is None or c is None else b - c

    @property
    def speedup(self) -> float:
        return self.throughput / self.baseline_throughput


@dataclass(frozen=True)
class ExportSource:
    """Where the exported configuration came from: given explicitly, a study's trial, or the
    study's recommendation within a budget (with what the study measured for it)."""

    kind: str = "explicit"  # "explicit" | "trial" | "budget"
    study: str | None = None
    trial: int | None = None
    budget: float | None = None
    recorded: dict[str, float] | None = None  # the study's measurement (means over repeats)


def plain_name(name: object) -> bool:
    """A file name directly inside the export directory (export writes no subfolders): no path
    separator, not "." or "..", so a manifest cannot point a reader outside the folder."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
    )


@dataclass(frozen=True)
class ExportManifest:
    """One exported model (see the module docstring). The weights are stored in fp32 whatever
    `precision` says: the predictor converts them when it loads (`models.to_precision`), so one
    directory runs on any machine and an int8 model's conversion is the one that was measured."""

    task: str
    label_names: tuple[str, ...]
    pair: bool  # inputs are (text, text_pair)
    max_seq_len: int  # tokens per input (pairs together), longer ones are truncated
    config: Candidate  # sparsity, N, mux variant, precision (or students K and depth)
    base_model: str  # the base model's id (name + content hash)
    measurement: Measurement
    machine: dict[str, str]  # where it was measured: CPU, GPU, torch and transformers versions
    created: str  # ISO 8601, UTC
    command: str  # what made it
    source: ExportSource = field(default_factory=ExportSource)
    # every other file export wrote, by name; empty until the directory is complete (`load`
    # refuses a manifest without it)
    files: dict[str, FileRecord] = field(default_factory=dict)
    # what runs the model (`MODEL_FORMATS`); a manifest written before ONNX exports reads "torch"
    model_format: str = "torch"
    format: str = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        check_format(self.format)
        if self.model_format not in MODEL_FORMATS:
            raise ConfigError(
                f"export manifest: model_format {self.model_format!r} is not one of "
                f"{list(MODEL_FORMATS)}; export the model again with this autoprumux"
            )
        problem = format_problem(self.config, self.model_format)
        if problem:
            raise ConfigError(
                f"export manifest: model_format {self.model_format!r} does not fit its "
                f"configuration ({problem}); export the model again"
            )
        if not self.label_names or not all(isinstance(x, str) for x in self.label_names):
            raise ConfigError("export manifest: label_names must be a non-empty list of strings")
        seq = self.max_seq_len
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ConfigError(
                f"export manifest: max_seq_len {seq!r} is not a positive int; export the model "
                "again"
            )
        if not isinstance(self.pair, bool):
            raise ConfigError(f"export manifest: pair {self.pair!r} is not true or false")
        bad = [repr(n) for n in self.files if not plain_name(n) or n == MANIFEST_FILE]
        if bad or not all(isinstance(r, FileRecord) for r in self.files.values()):
            what = bad[0] if bad else "a malformed entry"
            raise ConfigError(
                f"export manifest: files lists {what}, not a file export writes; export the "
                "model again"
            )

    @property
    def n(self) -> int:
        return self.config.mux

    @property
    def precision(self) -> str:
        return self.config.precision

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label_names"] = list(self.label_names)
        d["config"] = self.config.to_dict()
        d["measurement"] = {
            **asdict(self.measurement),
            "accuracy_loss": self.measurement.accuracy_loss,
            "validation_loss": self.measurement.validation_loss,
            "speedup": self.measurement.speedup,
        }
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ExportManifest:
        if not isinstance(d, dict):
            raise ConfigError(f"export manifest must be an object, got {type(d).__name__}")
        check_format(d.get("format"))
        try:
            if not isinstance(d["label_names"], list):
                raise TypeError(f"label_names is a {type(d['label_names']).__name__}, not a list")
            meas = {k: v for k, v in d["measurement"].items() if k not in DERIVED}
            return cls(
                **{
                    **d,
                    "label_names": tuple(d["label_names"]),
                    "config": Candidate.from_dict(d["config"]),
                    "measurement": Measurement(**meas),
                    "source": ExportSource(**d.get("source", {})),
                    "files": {k: FileRecord(**v) for k, v in d.get("files", {}).items()},
                }
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"export manifest is malformed ({type(e).__name__}: {e}); export the model again"
            ) from None

    def write(self, directory: str | Path) -> Path:
        p = Path(directory) / MANIFEST_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return p


# written for readers of the JSON, recomputed on load
DERIVED = ("accuracy_loss", "validation_loss", "speedup")


def check_format(fmt: object) -> None:
    if fmt == MANIFEST_FORMAT:
        return
    if fmt == "autoprumux.export/1":
        raise ConfigError(
            f"the export manifest is format {fmt!r}, written by an older autoprumux without "
            "file digests, so the directory cannot be verified; export the model again with "
            "this autoprumux"
        )
    raise ConfigError(
        f"export manifest format {fmt!r} is not {MANIFEST_FORMAT!r}; export the model again "
        "with this autoprumux"
    )


def read_manifest(directory: str | Path) -> ExportManifest:
    """The manifest of an exported model directory (ConfigError naming the directory if it is
    not one). Its own values are checked here; the files it lists by `load`."""
    d = Path(directory)
    p = d / MANIFEST_FILE
    if not p.is_file() and not p.is_symlink():
        what = "does not exist" if not d.exists() else f"holds no {MANIFEST_FILE}"
        raise ConfigError(
            f"{str(d)!r} {what}: not an exported autoprumux model; make one with "
            "`autoprumux export --out DIR ...`"
        )
    return ExportManifest.from_dict(read_json(d, MANIFEST_FILE))


def record_files(directory: str | Path) -> dict[str, FileRecord]:
    """The size and sha256 of every file in `directory` (the manifest aside), for the
    manifest's `files`: export writes plain files only, so a subfolder is an error."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if p.name == MANIFEST_FILE:
            continue
        if p.is_symlink() or not p.is_file():
            raise RuntimeError(f"export wrote {p.name!r}, which is not a plain file")
        with open(p, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            out[p.name] = FileRecord(os.fstat(f.fileno()).st_size, digest)
    return out
