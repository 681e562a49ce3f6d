"""The graph formats of an export: ONNX (`export --format onnx`: which configurations it takes,
the packages it needs, writing the fp32 model as `model.onnx` with torch.onnx) and OpenVINO IR
(`--format openvino`: the graph an OpenVINO precision was measured as), and what the export's
self-check adds for them (docs/export.md).

The graph is `models.write_onnx_graph`'s: batch and sequence axes dynamic, so one file takes
any batch of any length up to max_seq_len.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from autoprumux.config import Candidate
from autoprumux.data import Encoded, Example, encode
from autoprumux.deploy import ONNX_FILE
from autoprumux.deploy._manifest import ONNX_INSTALL, OPENVINO_FILES, format_problem
from autoprumux.deploy._tokenizer import JsonTokenizer
from autoprumux.errors import ConfigError
from autoprumux.models import AnyModel, GraphExportError, OpenVinoClassifier, write_onnx_graph

# what exporting needs besides torch: the ONNX format, torch.onnx's exporter (ONNX Script) and
# the runtime the self-check loads the directory with
ONNX_EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# the largest difference of a graph export's logits, reloaded, from the measured model's: ONNX
# Runtime fuses the attention, LayerNorm and GELU kernels, which round differently from torch's
# in fp32; the OpenVINO IR is the measured graph itself, recompiled (an int8 input that rounds
# the other way moves a logit by one quantization step at most)
GRAPH_SELF_CHECK_TOL = {"onnx": 1e-4, "openvino": 1e-3}


def check_onnx_export(config: Candidate) -> None:
    """Refuse, before any work, a configuration ONNX cannot hold (`deploy.format_problem`) or a
    missing package (with the install line)."""
    problem = format_problem(config, "onnx")
    if problem:
        raise ConfigError(f"--format onnx: {config.describe()}: {problem}")
    missing = []
    for name in ONNX_EXPORT_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {ONNX_INSTALL}"
        )


def write_onnx(model: AnyModel, directory: Path, max_seq_len: int) -> Path:
    """`model` (fp32) as `ONNX_FILE` in `directory` (`models.write_onnx_graph`); refused with
    the exporter's reason and the fix where torch.onnx cannot export it."""
    try:
        return write_onnx_graph(model, directory / ONNX_FILE, max_seq_len)
    except GraphExportError as e:
        raise ConfigError(
            f"torch.onnx could not export this model ({e}); export --format torch"
        ) from None


def write_openvino(model: OpenVinoClassifier, directory: Path) -> None:
    """The OpenVINO graph `model` runs, as IR (`OPENVINO_FILES`) in `directory`, its weights as
    they are (fp32, or ov-int8's int8), not compressed to fp16."""
    import openvino

    xml = directory / OPENVINO_FILES[0]
    openvino.save_model(model.graph, str(xml), compress_to_fp16=False)


def check_onnx_tokens(
    tokenizer: JsonTokenizer,
    examples: Sequence[Example],
    items: Sequence[Encoded],
    max_seq_len: int,
) -> None:
    """The ONNX export's tokenizer (`tokenizer.json` without transformers) must give the
    pipeline's tokens (`items`) for `examples`, or the export is refused: its labels would
    differ from the measured model's for reasons no logit tolerance shows."""
    got = encode(examples, tokenizer, max_seq_len)
    for i, (a, b) in enumerate(zip(got, items, strict=True)):
        if (a.input_ids, a.token_type_ids) != (b.input_ids, b.token_type_ids):
            raise ConfigError(
                f"--format onnx: the exported tokenizer.json, run without transformers, "
                f"tokenizes dev example {i} differently from the model's tokenizer; export "
                "--format torch"
            )
