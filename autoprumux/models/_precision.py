"""Numeric precision of a model at inference: the last step of a configuration.

A model is trained in fp32; `to_precision` returns a converted copy for inference (the source is
left as it is). On the CPU, int8 is static int8 of the `nn.Linear` layers: weights int8 per
output channel, and each layer's input rounded to 8 bits with one scale fixed beforehand from a
calibration set (`calibrate_int8`), so a text's label depends only on the text, never on the
other texts of its batch; embeddings, LayerNorm and the attention product stay fp32. On CUDA,
tf32 (fp32 storage, TF32 tensor-core matmuls), bf16 and fp16 (weights and activations in that
type). Which precisions a device offers is `config.DEVICE_PRECISIONS`, checked where a
configuration meets its device.

Why static scales rather than per-batch (dynamic) or per-row ones, and why oneDNN's kernel:
docs/precision.md.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from autoprumux._cpu import has_int8_dot
from autoprumux.data import Encoded, collate

M = TypeVar("M", bound=nn.Module)

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}

# calibration: a fixed, seeded sample of the training texts
CALIBRATION_EXAMPLES = 512
CALIBRATION_BATCH = 32

# int8 weights: symmetric, one step per output row (largest magnitude / 127.5), as the int8
# conversion and the int8-aware recovery both round them
WEIGHT_QMIN, WEIGHT_QMAX = -128, 127


class RunsSource(nn.Module):
    """A converted model that runs its fp32 source (`model`) some other way and passes every
    other attribute through to it, so it is scored and measured like the source: its shape,
    labels and configuration describe the converted model too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


class _TF32(RunsSource):
    """Runs the wrapped model with TF32 matmuls allowed (restored after each call)."""

    def forward(self, *args: Any, **kw: Any) -> Any:
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return self.model(*args, **kw)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---- calibration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Calibration:
    """The range (low, high) of each quantized `Linear` layer's input over a calibration set,
    by the layer's name in the model, and the layers inference never runs (a warm-up head:
    left in fp32). It fixes each layer's input scale, so it travels with an exported int8
    model (`to_dict` / `from_dict`)."""

    ranges: Mapping[str, tuple[float, float]]
    examples: int
    unused: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "ranges": {k: [lo, hi] for k, (lo, hi) in sorted(self.ranges.items())},
            "unused": list(self.unused),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Int8Calibration:
        """The calibration `to_dict` wrote; ValueError naming what is wrong for anything else."""
        if not isinstance(d, dict) or not isinstance(d.get("ranges"), dict):
            raise ValueError("an int8 calibration must be an object with 'ranges'")
        examples = d.get("examples")
        if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
            raise ValueError(
                f"int8 calibration 'examples' must be a positive integer: {examples!r}"
            )
        ranges: dict[str, tuple[float, float]] = {}
        for name, r in d["ranges"].items():
            ok = (
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in r)
                and all(math.isfinite(v) for v in r)
                and r[0] <= r[1]
            )
            if not ok:
                raise ValueError(f"int8 calibration range of {name!r} must be [low, high]: {r!r}")
            ranges[str(name)] = (float(r[0]), float(r[1]))
        unused = d.get("unused", [])
        if not isinstance(unused, list) or not all(isinstance(n, str) for n in unused):
            raise ValueError(f"int8 calibration 'unused' must be a list of layer names: {unused!r}")
        return cls(ranges=ranges, examples=examples, unused=tuple(unused))


def calibration_batches(
    items: Sequence[Encoded], *, examples: int = CALIBRATION_EXAMPLES, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A seeded sample of `examples` items (all of them when fewer), sorted by length so that
    little padding enters the ranges, as (input_ids, attention_mask, token_type_ids) batches."""
    picked = random.Random(seed).sample(range(len(items)), min(examples, len(items)))
    chosen = sorted((items[i] for i in picked), key=lambda x: len(x.input_ids))
    out = []
    for s in range(0, len(chosen), CALIBRATION_BATCH):
        b = collate(chosen[s : s + CALIBRATION_BATCH])
        out.append((b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    return out


@torch.no_grad()
def calibrate_int8(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]
) -> Int8Calibration:
    """Run `model` (fp32, as it will be converted) over `batches` (each the positional inputs
    of one call, e.g. input_ids, attention_mask, token_type_ids) and record the lowest and
    highest input of each layer that int8 conversion quantizes."""
    names = _quantizable(model)
    seen: dict[str, list[float]] = {}
    device = next(model.parameters()).device

    def observe(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            lo, hi = float(x.min()), float(x.max())
            r = seen.setdefault(name, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)

        return hook

    hooks = [model.get_submodule(n).register_forward_pre_hook(observe(n)) for n in names]
    was_training = model.training
    model.eval()
    rows = 0
    try:
        for batch in batches:
            model(*(t.to(device) for t in batch))
            rows += int(batch[0].shape[0])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if rows == 0:
        raise ValueError("int8 calibration needs at least one batch of inputs")
    unused = tuple(n for n in names if n not in seen)
    return Int8Calibration({n: (lo, hi) for n, (lo, hi) in seen.items()}, rows, unused)


@functools.cache
def activation_qmax() -> int:
    """The largest uint8 code of a layer's input: 255 where the CPU multiplies int8 with
    VNNI/AMX; 127 (7 bits) elsewhere, where AVX2's u8 x s8 pair sums saturate int16 at 8 bits."""
    return 255 if has_int8_dot() else 127


def input_qparams(low: float, high: float, qmax: int) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 range 0..qmax covering [low, high] and 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / qmax or 1.0
    return scale, min(qmax, max(0, round(-low / scale)))


def weight_qparams(w: torch.Tensor) -> torch.Tensor:
    """Per output row, the step of symmetric int8 weights (largest magnitude / 127.5)."""
    scale = w.detach().abs().amax(dim=1).float() / ((WEIGHT_QMAX - WEIGHT_QMIN) / 2)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


class StaticInt8Linear(nn.Module):
    """`Linear` in int8: weights int8 per output row; the input rounded to uint8 with the fixed
    (calibrated) scale and zero point; int32 accumulation in oneDNN's kernel, fp32 out."""

    w_scale: torch.Tensor
    w_int8: torch.Tensor
    w_zero: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, low: float, high: float, qmax: int):
        super().__init__()
        w = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.qmax = qmax
        self.scale, self.zero_point = input_qparams(low, high, qmax)
        self.register_buffer("w_scale", weight_qparams(w))
        q = torch.clamp(torch.round(w / self.w_scale[:, None]), WEIGHT_QMIN, WEIGHT_QMAX)
        self.register_buffer("w_int8", q.to(torch.int8))
        self.register_buffer("w_zero", torch.zeros(self.out_features, dtype=torch.long))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        # oneDNN's packed layout is opaque (no storage to copy or save): kept outside the
        # buffers, and rebuilt from w_int8 when missing
        self._packed: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> StaticInt8Linear:
        packed, self._packed = self._packed, None
        try:
            new = copy.copy(self)
            new.__dict__ = copy.deepcopy(self.__dict__, memo)
        finally:
            self._packed = packed
        return new

    def _kernel_weight(self) -> torch.Tensor | None:
        if self._packed is None and _onednn_int8():
            self._packed = torch.ops.onednn.qlinear_prepack(self.w_int8, None)
        return self._packed

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The uint8 codes of `x` (rows x features) at the layer's fixed scale."""
        if self.qmax == 255:  # one fused, vectorised pass: six times faster than four ops
            with warnings.catch_warnings():
                # the quantized dtypes are deprecated for new code; the op is still the
                # fastest uint8 rounding torch has
                warnings.simplefilter("ignore", UserWarning)
                q = torch.quantize_per_tensor(x, self.scale, self.zero_point, torch.quint8)
            return q.int_repr()
        codes = torch.round(x * (1.0 / self.scale)).add_(self.zero_point)
        return codes.clamp_(0, self.qmax).to(torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q = self.quantize_input(x.reshape(-1, shape[-1]).float())
        packed = self._kernel_weight()
        if packed is not None:
            y = torch.ops.onednn.qlinear_pointwise(
                q, self.scale, self.zero_point, packed, self.w_scale, self.w_zero, self.bias,
                1.0, 0, torch.float32, "none", [], "",
            )  # fmt: skip
        else:  # no oneDNN: the same integers, multiplied in fp32 (exact up to fp32 rounding)
            xf = (q.float() - self.zero_point) * self.scale
            y = nn.functional.linear(xf, self.w_int8.float() * self.w_scale[:, None], self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"input scale={self.scale:.4g}, zero point={self.zero_point}, qmax={self.qmax}"
        )


def _onednn_int8() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.onednn, "qlinear_pointwise"
    )


def to_precision(model: M, precision: str, *, calibration: Int8Calibration | None = None) -> M:
    """A copy of `model` (in eval mode) converted to `precision` ("fp32" returns `model`).
    int8 needs the `calibration` of this model (`calibrate_int8`)."""
    if precision == "fp32":
        return model
    if precision == "int8" and calibration is None:
        raise ValueError("int8 needs the model's calibration: calibrate_int8(model, batches)")
    converted = copy.deepcopy(model).eval()
    if precision == "int8":
        assert calibration is not None
        names = [n for n in _quantizable(converted) if n not in calibration.unused]
        missing = [n for n in names if n not in calibration.ranges]
        if missing:
            raise ValueError(
                f"the int8 calibration has no range for layers {missing[:3]}: it was made for "
                "another model; calibrate this one"
            )
        qmax = activation_qmax()
        for name in names:
            parent, _, child = name.rpartition(".")
            owner = converted.get_submodule(parent) if parent else converted
            lin = converted.get_submodule(name)
            assert isinstance(lin, nn.Linear)
            setattr(owner, child, StaticInt8Linear(lin, *calibration.ranges[name], qmax))
        return converted
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
    """Parameters of `module`, counting the weights and biases an int8 `Linear` keeps as
    buffers, so a converted model counts as its source does."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, StaticInt8Linear):
            n += m.w_int8.numel() + (m.bias.numel() if m.bias is not None else 0)
    return n


# ---- int8-aware training --------------------------------------------------------------------
class _FakeInt8Weight(nn.Module):
    """A parametrization: the weight rounded as int8 conversion will round it, with a
    straight-through gradient (`fake_quantize_per_channel_affine`, one scale per output row)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(
            w, weight_qparams(w), zero, 0, WEIGHT_QMIN, WEIGHT_QMAX
        )


class fake_int8:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Within the block, `model`'s quantizable `Linear` layers compute as int8 conversion with
    `calibration` will (rounded weights, and inputs rounded with the calibrated scales), with
    straight-through gradients to the fp32 weights: a model trained this way loses less
    accuracy when `to_precision(model, "int8", calibration=...)` converts it. On exit the layers
    are plain again, holding the trained fp32 weights."""

    def __init__(self, model: nn.Module, calibration: Int8Calibration):
        names = [n for n in _quantizable(model) if n not in calibration.unused]
        self.layers = [(model.get_submodule(n), calibration.ranges[n]) for n in names]
        self.qmax = activation_qmax()
        self.hooks: list[Any] = []

    def __enter__(self) -> fake_int8:
        from torch.nn.utils import parametrize

        for lin, (low, high) in self.layers:
            parametrize.register_parametrization(lin, "weight", _FakeInt8Weight())
            scale, zero = input_qparams(low, high, self.qmax)

            def round_input(
                module: nn.Module, args: tuple[torch.Tensor, ...], s: float = scale, z: int = zero
            ) -> tuple[torch.Tensor]:
                return (torch.fake_quantize_per_tensor_affine(args[0], s, z, 0, self.qmax),)

            self.hooks.append(lin.register_forward_pre_hook(round_input))
        return self

    def __exit__(self, *exc: object) -> None:
        from torch.nn.utils import parametrize

        for hook in self.hooks:
            hook.remove()
        for lin, _ in self.layers:
            if parametrize.is_parametrized(lin, "weight"):
                parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        self.hooks = []
