"""A model as an ONNX graph (torch.onnx's exporter: torch.export, then ONNX Script), what the
ONNX export writes and what OpenVINO reads to run a model (`models._openvino`).

The batch and sequence axes are dynamic, so one graph takes any batch of any length up to the
given maximum. A pruned model exports as it is: each layer's own heads and FFN units are its
matrices' shapes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from autoprumux.config import GRAPH_INPUTS, GRAPH_OUTPUT


class GraphExportError(RuntimeError):
    """torch.onnx could not export the model; the message is the exporter's first line."""


def write_onnx_graph(model: nn.Module, path: Path, max_seq_len: int) -> Path:
    """`model` (fp32) as one ONNX file at `path`: inputs `GRAPH_INPUTS` (int64, batch x
    sequence, both dynamic, sequence up to `max_seq_len`), output `GRAPH_OUTPUT`. A copy is
    exported, so the model is left as it was."""
    module = copy.deepcopy(model).float().cpu().eval()
    # example shapes of at least 2: torch.export specializes an axis it sees as 0 or 1
    ids = torch.ones((2, min(8, max_seq_len)), dtype=torch.long)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=max_seq_len)}
    try:
        with _exporter_quiet():
            torch.onnx.export(
                module,
                (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                str(path),
                dynamo=True,
                input_names=list(GRAPH_INPUTS),
                output_names=[GRAPH_OUTPUT],
                dynamic_shapes=(axes, axes, axes),
                external_data=False,  # one file, listed and verified like every other
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - torch.export and ONNX Script raise many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise GraphExportError(f"{type(e).__name__}: {first}") from None
    return path


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """torch.onnx's exporter warns of what it skips (torchvision's operators, renamed axes):
    nothing a user of the model can act on."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
