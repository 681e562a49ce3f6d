"""Load an OpenVINO export (`model_format` "openvino": precision ov-fp32 or ov-int8) and predict
labels with OpenVINO, without importing torch: the model is the IR `OPENVINO_FILES` (the graph
the export measured: fp32, or NNCF's static int8), the tokenizer `tokenizer.json` run by the
`tokenizers` library, tokenisation and padding the pipeline's own, so the labels are the
measured model's. The IR is read from the verified files' bytes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from autoprumux.config import GRAPH_INPUTS, GRAPH_OUTPUT, openvino_cpu_settings
from autoprumux.deploy._files import AGAIN, local_file, verify_files
from autoprumux.deploy._manifest import OPENVINO_FILES, ExportManifest
from autoprumux.deploy._onnx import OnnxPredictor, check_graph_arguments
from autoprumux.deploy._predictions import DEFAULT_BATCH
from autoprumux.deploy._tokenizer import TOKENIZER_FILE, load_json_tokenizer
from autoprumux.errors import ConfigError

# loading needs OpenVINO alone (NNCF made the int8 graph at export)
OPENVINO_RUNTIME_INSTALL = "pip install openvino (or 'autoprumux[openvino]')"


def require_openvino() -> ModuleType:
    """The openvino module (a ConfigError with the install line where it is missing)."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(
            f"an OpenVINO export runs with openvino, which is not installed: "
            f"{OPENVINO_RUNTIME_INSTALL}"
        ) from None
    return openvino


class OpenVinoSession:
    """A compiled OpenVINO model behind the two calls `OnnxPredictor` makes of a session
    (`get_inputs`, `run`), so both runtimes label texts with one code path."""

    class _Input:
        def __init__(self, name: str):
            self.name = name

    def __init__(self, compiled: Any):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = [self._Input(p.get_any_name()) for p in compiled.inputs]

    def get_inputs(self) -> list[Any]:
        return self.inputs

    def run(self, _outputs: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array(self.request.infer(feed)[self.compiled.output(0)])]


class OpenVinoPredictor(OnnxPredictor):
    """An OpenVINO export's compiled model, tokenizer and manifest, ready to label texts: the
    interface of `Predictor`, with logits as a numpy array."""


def load_openvino(
    d: Path,
    manifest: ExportManifest,
    *,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int | None = None,
) -> OpenVinoPredictor:
    """The predictor of the OpenVINO export in `d` (`deploy.load`, which read `manifest`): the
    arguments checked, the files verified, then the IR compiled for the CPU (fp32 as the
    precision hint, `threads` inference threads, default: the cores this process may use) and
    its inputs and output checked."""
    threads = check_graph_arguments(
        "an OpenVINO export", manifest, device=device, precision=precision, threads=threads
    )
    ov = require_openvino()
    verify_files(d, manifest.files, (*OPENVINO_FILES, TOKENIZER_FILE))
    tokenizer = load_json_tokenizer(d, manifest)
    xml, weights = (local_file(d, name).read_bytes() for name in OPENVINO_FILES)
    try:
        core = ov.Core()
        graph = core.read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
        compiled = core.compile_model(graph, "CPU", openvino_cpu_settings(threads))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"{str(d / OPENVINO_FILES[0])!r} does not load in OpenVINO ({type(e).__name__}: "
            f"{first}); {AGAIN}"
        ) from None
    _check_graph(compiled, manifest, d / OPENVINO_FILES[0])
    return OpenVinoPredictor(OpenVinoSession(compiled), tokenizer, manifest, batch_size=batch_size)


def _check_graph(compiled: Any, manifest: ExportManifest, path: Path) -> None:
    """The graph takes `GRAPH_INPUTS` (input_ids and attention_mask at least) and answers one
    (batch, classes) output with a column per label the manifest names."""
    inputs = {p.get_any_name() for p in compiled.inputs}
    problem = None
    if inputs - set(GRAPH_INPUTS) or not {"input_ids", "attention_mask"} <= inputs:
        problem = f"it takes {sorted(inputs)}, not {list(GRAPH_INPUTS)}"
    elif len(compiled.outputs) != 1:
        problem = f"it has {len(compiled.outputs)} outputs, not one {GRAPH_OUTPUT!r}"
    else:
        shape = compiled.output(0).get_partial_shape()
        classes = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
        if shape.rank.is_static and shape.rank.get_length() != 2:
            problem = f"its output has shape {shape}, not (batch, classes)"
        elif (
            classes is not None
            and classes.is_static
            and classes.get_length() != len(manifest.label_names)
        ):
            problem = (
                f"it scores {classes.get_length()} classes but the manifest names "
                f"{len(manifest.label_names)} ({list(manifest.label_names)[:10]})"
            )
    if problem:
        raise ConfigError(
            f"{str(path)!r} is not the model the manifest describes: {problem}; {AGAIN}"
        )
