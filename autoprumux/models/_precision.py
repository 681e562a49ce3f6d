"""Numeric precision of a model at inference: the last step of a configuration.

A model is trained in fp32; `to_precision` returns a converted copy for inference (the source is
left as it is). On the CPU, int8 is PyTorch's dynamic quantization of the `nn.Linear` layers
(weights int8 per tensor, activations quantized per batch on the fly; embeddings, LayerNorm and
the attention product stay fp32); on CUDA, tf32 (fp32 storage, TF32 tensor-core matmuls), bf16
and fp16 (weights and activations in that type). Which precisions a device offers is
`config.DEVICE_PRECISIONS`, checked where a configuration meets its device.

Dynamic int8 needs no calibration data and no training. Why this backend (PyTorch's dynamic
quantization, against torchao and ONNX Runtime): docs/precision.md.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _TF32(nn.Module):
    """Runs the wrapped model with TF32 matmuls allowed (restored after each call), and passes
    every other attribute through, so it measures and scores like the model itself."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kw: Any) -> Any:
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return self.model(*args, **kw)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def to_precision(model: M, precision: str) -> M:
    """A copy of `model` (in eval mode) converted to `precision` ("fp32" returns `model`)."""
    if precision == "fp32":
        return model
    converted = copy.deepcopy(model).eval()
    if precision == "int8":
        with warnings.catch_warnings():
            # torch.ao's eager quantization is deprecated in favour of torchao, which has no
            # faster eager CPU path for this model (see the module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            qconfig = torch.ao.quantization.default_dynamic_qconfig  # int8 weights per tensor
            return torch.ao.quantization.quantize_dynamic(
                converted, dict.fromkeys(_quantizable(converted), qconfig), dtype=torch.qint8
            )
    if precision in HALF:
        return converted.to(HALF[precision])
    if precision == "tf32":
        return _TF32(converted)  # type: ignore[return-value]
    raise ValueError(f"unknown precision {precision!r}")  # config.PRECISIONS is checked first


def _quantizable(model: nn.Module) -> list[str]:
    """Names of the `Linear` layers to quantize: all but those inside a module that reads its
    weights directly (`keeps_fp32_weights`)."""
    keep = [n for n, m in model.named_modules() if getattr(m, "keeps_fp32_weights", False)]
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and not any(n.startswith(k + ".") for k in keep)
    ]


def count_parameters(module: nn.Module) -> int:
    """Parameters of `module`, counting the weights and biases a dynamically quantized `Linear`
    keeps packed (not as parameters), so a converted model counts as its source does."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            bias = m.bias()
            n += m.weight().numel() + (bias.numel() if bias is not None else 0)
    return n
