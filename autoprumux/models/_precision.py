"""Numeric precision of a model at inference: the last step of a configuration.

A model is trained in fp32; `to_precision` returns a converted copy for inference (the source is
left as it is). On the CPU, int8 is PyTorch's dynamic quantization of the `nn.Linear` layers
(weights int8 per output channel, activations quantized per batch on the fly; embeddings, LayerNorm and
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
            # int8 weights per output channel: per tensor, one outlier row would set the step of
            # every row (what each costs: docs/precision.md)
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
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


# ---- int8-aware training --------------------------------------------------------------------
# What `quantize_dynamic` (fbgemm, x86) computes: weights symmetric qint8 per output channel,
# inputs quint8 per tensor from each batch's own range, reduced to 7 bits (0..127) by fbgemm
WEIGHT_QMAX = 127
INPUT_QMAX = 127


class _FakeInt8Weight(nn.Module):
    """A parametrization: the weight rounded as int8 conversion will round it, with a
    straight-through gradient (`fake_quantize_per_channel_affine`, one scale per output row)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = w.detach().abs().amax(dim=1).float() / ((2 * WEIGHT_QMAX + 1) / 2)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(
            w, scale, zero, 0, -WEIGHT_QMAX - 1, WEIGHT_QMAX
        )


def _fake_int8_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    (x,) = args
    low = min(float(x.detach().min()), 0.0)
    high = max(float(x.detach().max()), 0.0)
    scale = (high - low) / INPUT_QMAX or 1.0
    zero_point = min(INPUT_QMAX, max(0, round(-low / scale)))
    return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, INPUT_QMAX),)


class fake_int8:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Within the block, `model`'s quantizable `Linear` layers compute as dynamic int8 conversion
    will (rounded weights and inputs), with straight-through gradients to the fp32 weights: a
    model trained this way loses less accuracy when `to_precision(model, "int8")` converts it.
    On exit the layers are plain again, holding the trained fp32 weights."""

    def __init__(self, model: nn.Module):
        self.layers = [model.get_submodule(n) for n in _quantizable(model)]
        self.hooks: list[Any] = []

    def __enter__(self) -> fake_int8:
        from torch.nn.utils import parametrize

        for lin in self.layers:
            parametrize.register_parametrization(lin, "weight", _FakeInt8Weight())
            self.hooks.append(lin.register_forward_pre_hook(_fake_int8_input))
        return self

    def __exit__(self, *exc: object) -> None:
        from torch.nn.utils import parametrize

        for hook in self.hooks:
            hook.remove()
        for lin in self.layers:
            if parametrize.is_parametrized(lin, "weight"):
                parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        self.hooks = []
