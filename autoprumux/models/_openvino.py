"""Models run by OpenVINO: the precisions "ov-fp32" and "ov-int8" (`config.OPENVINO_PRECISIONS`).

The fp32 model is exported as an ONNX graph (`write_onnx_graph`), read by OpenVINO and, for
ov-int8, quantized by NNCF's post-training static quantization (transformer preset: int8
weights per output channel, activation scales fixed from calibration batches of training texts,
never dev), then compiled for the CPU with fp32 as the precision hint (else a bf16-capable CPU
would run "fp32" in bf16) and as many inference threads as torch uses. `OpenVinoClassifier`
runs the compiled graph behind the torch model's call, so it is scored and timed like any
converted model; `graph` is the OpenVINO model an export saves as IR.

Why OpenVINO and not ONNX Runtime's static int8: BENCHMARKS.md, "Deployment runtimes".
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autoprumux.config import GRAPH_INPUTS, OPENVINO_PRECISIONS, openvino_cpu_settings
from autoprumux.models._graph import write_onnx_graph
from autoprumux.models._mux import MuxSequenceClassifier
from autoprumux.models._precision import RunsSource
from autoprumux.models._students import StudentEnsemble

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class OpenVinoClassifier(RunsSource):
    """A model compiled by OpenVINO behind the torch model's call: (input_ids, attention_mask,
    token_type_ids) -> logits as a CPU tensor; every other attribute is the fp32 source's."""

    model: MuxSequenceClassifier | StudentEnsemble  # the fp32 source

    def __init__(
        self,
        source: MuxSequenceClassifier | StudentEnsemble,
        graph: Any,
        compiled: Any,
        precision: str,
    ):
        super().__init__(source)
        self.graph = graph
        self.precision = precision
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs = [p.get_any_name() for p in compiled.inputs]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        given = dict(zip(GRAPH_INPUTS, (input_ids, attention_mask, token_type_ids), strict=True))
        feed = {k: given[k].detach().cpu().to(torch.long).numpy() for k in self._inputs}
        out = self._request.infer(feed)[self._compiled.output(0)]
        return torch.from_numpy(out.copy())


def to_openvino(
    model: MuxSequenceClassifier | StudentEnsemble,
    precision: str,
    calibration: Sequence[Batch],
    *,
    max_seq_len: int,
) -> OpenVinoClassifier:
    """`model` (fp32) run by OpenVINO in `precision` ("ov-fp32" or "ov-int8", the latter
    calibrated on `calibration`: batches of training texts), on sequences up to `max_seq_len`,
    with torch's thread count. The packages are checked where the precision enters
    (`config.check_precision`)."""
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"{precision!r} is not an OpenVINO precision")  # checked where it enters
    ov = importlib.import_module("openvino")
    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="autoprumux-ov-") as tmp:
        path = write_onnx_graph(model, Path(tmp) / "model.onnx", max_seq_len)
        graph = core.read_model(str(path))
    if OPENVINO_PRECISIONS[precision] == "int8":
        graph = _quantize(graph, calibration)
    compiled = core.compile_model(graph, "CPU", openvino_cpu_settings(torch.get_num_threads()))
    return OpenVinoClassifier(model, graph, compiled, precision)


def _quantize(graph: Any, calibration: Sequence[Batch]) -> Any:
    """NNCF's post-training static int8 of `graph`, its ranges from every calibration batch."""
    nncf = importlib.import_module("nncf")
    if not calibration:
        raise ValueError("ov-int8 needs calibration batches of training texts")
    names = {p.get_any_name() for p in graph.inputs}
    feeds = [
        {k: t.numpy() for k, t in zip(GRAPH_INPUTS, batch, strict=True) if k in names}
        for batch in calibration
    ]
    level = logging.getLogger("nncf").level
    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-layer notes
    try:
        return nncf.quantize(
            graph,
            nncf.Dataset(feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
        )
    finally:
        logging.getLogger("nncf").setLevel(level)
