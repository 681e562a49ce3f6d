"""`autoprumux.load(DIR)`: the predictor of an exported directory, by the runtime its manifest
names (`model_format`): torch (`deploy._predictor`), ONNX Runtime (`deploy._onnx`) or OpenVINO
(`deploy._openvino`), the last two never importing torch. Each runtime is imported only when a directory of its format is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autoprumux.deploy._manifest import read_manifest
from autoprumux.deploy._predictions import DEFAULT_BATCH
from autoprumux.errors import ConfigError

if TYPE_CHECKING:
    from autoprumux.deploy._onnx import OnnxPredictor
    from autoprumux.deploy._predictor import Predictor


def load(
    directory: str | Path,
    *,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int | None = None,
) -> Predictor | OnnxPredictor:
    """The predictor of a directory written by `autoprumux export` (docs/export.md), verified
    before anything of it is used. A torch export runs in the precision it was exported with,
    or `precision` when given (e.g. "fp32" to run an int8 export unconverted), on `device`; an
    ONNX or OpenVINO export runs as exported on the CPU with `threads` threads (default: the
    cores this process may use). A folder that fails is a ConfigError naming the file."""
    d = Path(directory)
    manifest = read_manifest(d)
    if manifest.model_format == "openvino":
        from autoprumux.deploy._openvino import load_openvino

        return load_openvino(
            d, manifest, device=device, precision=precision, batch_size=batch_size, threads=threads
        )
    if manifest.model_format == "onnx":
        from autoprumux.deploy._onnx import load_onnx

        return load_onnx(
            d, manifest, device=device, precision=precision, batch_size=batch_size, threads=threads
        )
    if threads is not None:
        raise ConfigError(
            f"threads ({threads!r}) sets an ONNX or OpenVINO export's threads; {str(d)!r} is a "
            "torch export, which runs on torch's threads (torch.set_num_threads, or "
            "OMP_NUM_THREADS): leave threads unset"
        )
    from autoprumux.deploy._predictor import load_torch

    return load_torch(d, manifest, device=device, precision=precision, batch_size=batch_size)
