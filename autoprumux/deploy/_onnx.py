"""Load an ONNX export (`model_format` "onnx") and predict labels with ONNX Runtime, without
importing torch: the model is `model.onnx`, the tokenizer `tokenizer.json` run by the
`tokenizers` library (`deploy._tokenizer`), tokenisation and padding the pipeline's own
(`data.encode`, `data.pad`), so the labels are the torch model's.

The graph takes int64 `GRAPH_INPUTS` (batch, sequence), both axes dynamic, and answers float32
`GRAPH_OUTPUT` (batch, classes); `export._onnx` writes it. It is read from the verified file's
bytes, so a graph that names external data cannot make ONNX Runtime read another file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from autoprumux.config import GRAPH_INPUTS, GRAPH_OUTPUT
from autoprumux.data import encode, pad
from autoprumux.deploy._files import AGAIN, local_file, verify_files
from autoprumux.deploy._manifest import ONNX_FILE, ONNX_INSTALL, ExportManifest
from autoprumux.deploy._predictions import DEFAULT_BATCH, Predictions, PredictorBase, Text
from autoprumux.deploy._tokenizer import TOKENIZER_FILE, JsonTokenizer, load_json_tokenizer
from autoprumux.errors import ConfigError


def require_onnxruntime() -> ModuleType:
    """The onnxruntime module (a ConfigError with the install line where it is missing)."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"an ONNX export runs with onnxruntime, which is not installed: {ONNX_INSTALL}"
        ) from None
    return onnxruntime


def default_threads() -> int:
    """ONNX Runtime's intra-op threads unless told: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1


class OnnxPredictor(PredictorBase):
    """An ONNX export's session, tokenizer and manifest, ready to label texts: the interface of
    `Predictor`, with logits as a numpy array."""

    def __init__(
        self,
        session: Any,
        tokenizer: JsonTokenizer,
        manifest: ExportManifest,
        *,
        batch_size: int = DEFAULT_BATCH,
    ):
        super().__init__(manifest, batch_size=batch_size)
        self.session = session
        self.tokenizer = tokenizer
        self.input_names = [x.name for x in session.get_inputs()]

    def logits(
        self, texts: Sequence[Text], *, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Logits (len(texts), classes) in float32; `progress(k)` after each batch of k
        inputs."""
        out = []
        for chunk in self.chunks(texts):
            arrays = pad(encode(chunk, self.tokenizer, self.manifest.max_seq_len))
            (logits,) = self.session.run([GRAPH_OUTPUT], {k: arrays[k] for k in self.input_names})
            out.append(np.asarray(logits, dtype=np.float32))
            if progress is not None:
                progress(len(chunk))
        if not out:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        return np.concatenate(out)

    def predict(
        self, texts: Sequence[Text], *, progress: Callable[[int], None] | None = None
    ) -> Predictions:
        """Labels and class probabilities of `texts`: strings, or (text, text_pair) tuples for
        a pair task."""
        logits = self.logits(texts, progress=progress)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
        return Predictions(self.label_names, logits.argmax(axis=-1).tolist(), probs.tolist())


def cpu_session(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime session of `graph` on the CPU with `threads` intra-op threads, as an
    ONNX export is run."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are about buffer reuse
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def load_onnx(
    d: Path,
    manifest: ExportManifest,
    *,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int | None = None,
) -> OnnxPredictor:
    """The predictor of the ONNX export in `d` (`deploy.load`, which read `manifest`): the
    arguments are checked, then the files verified (`verify_files`), then the tokenizer and
    the ONNX Runtime session (on the CPU, `threads` intra-op threads, default
    `default_threads()`) made and the graph's inputs and outputs checked."""
    threads = check_graph_arguments(
        "an ONNX export", manifest, device=device, precision=precision, threads=threads
    )
    require_onnxruntime()
    verify_files(d, manifest.files, (ONNX_FILE, TOKENIZER_FILE))
    tokenizer = load_json_tokenizer(d, manifest)
    try:
        session = cpu_session(local_file(d, ONNX_FILE).read_bytes(), threads)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"{str(d / ONNX_FILE)!r} does not load in ONNX Runtime ({type(e).__name__}: "
            f"{first}); {AGAIN}"
        ) from None
    _check_graph(session, manifest, d / ONNX_FILE)
    return OnnxPredictor(session, tokenizer, manifest, batch_size=batch_size)


def check_graph_arguments(
    what: str,
    manifest: ExportManifest,
    *,
    device: str,
    precision: str | None,
    threads: int | None,
) -> int:
    """`load`'s arguments for an export run without torch (`what`: ONNX or OpenVINO): the CPU,
    no precision but the exported one, and `threads` (default: `default_threads()`)."""
    if device != "cpu":
        raise ConfigError(
            f"device {device!r}: {what} runs on the CPU; load it with device='cpu', or export "
            f"--format torch to run on {device}"
        )
    if precision not in (None, manifest.precision):
        raise ConfigError(
            f"precision {precision!r}: {what} holds the {manifest.precision} model and runs "
            "it as exported; load it without precision, or export --format torch for other "
            "precisions"
        )
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads ({threads!r}) must be a positive integer, e.g. 4")
    return threads


def _check_graph(session: Any, manifest: ExportManifest, path: Path) -> None:
    """The graph takes int64 `GRAPH_INPUTS` (input_ids and attention_mask at least) and answers
    float `GRAPH_OUTPUT` with one column per label the manifest names."""
    inputs = {x.name: x.type for x in session.get_inputs()}
    outputs = {x.name: (x.type, list(x.shape or [])) for x in session.get_outputs()}
    kind, shape = outputs.get(GRAPH_OUTPUT, ("", []))
    problem = None
    if set(inputs) - set(GRAPH_INPUTS) or not {"input_ids", "attention_mask"} <= set(inputs):
        problem = f"it takes {sorted(inputs)}, not {list(GRAPH_INPUTS)}"
    elif any(t != "tensor(int64)" for t in inputs.values()):
        problem = f"its inputs are {inputs}, not int64 tensors"
    elif kind != "tensor(float)" or len(shape) != 2:
        problem = f"its outputs are {outputs}, not a float (batch, classes) {GRAPH_OUTPUT!r}"
    elif isinstance(shape[1], int) and shape[1] != len(manifest.label_names):
        problem = (
            f"it scores {shape[1]} classes but the manifest names {len(manifest.label_names)} "
            f"({list(manifest.label_names)[:10]})"
        )
    if problem:
        raise ConfigError(
            f"{str(path)!r} is not the model the manifest describes: {problem}; {AGAIN}"
        )
