"""Throughput as the README defines it, and an analytic FLOP count for the ideal speedup.

throughput = examples / second at a fixed batch of examples and a fixed padded sequence length,
after warm-up passes, median over repeated timed passes, CUDA-synchronised on a GPU. A mux model
with a batch not divisible by N pads dummy rows internally; only real rows are counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoprumux.config import SPLIT_COMBINERS, ThroughputConfig
from autoprumux.errors import ConfigError
from autoprumux.models import AnyModel, StudentEnsemble


@dataclass(frozen=True)
class ThroughputResult:
    examples_per_second: float
    median_batch_seconds: float
    batch_seconds: tuple[float, ...]
    batch_size: int
    seq_len: int
    device: str

    @property
    def latency_ms(self) -> float:
        return 1000 * self.median_batch_seconds


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device {device!r} is not 'cpu' or 'cuda'; pick one of them")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available here; use --device cpu"
        )
    return torch.device(device)


def fixed_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    cfg: ThroughputConfig,
) -> dict[str, torch.Tensor]:
    """Cut/pad real inputs to exactly (batch_size, seq_len); rows are cycled if too few."""
    if input_ids.shape[0] == 0:
        raise ConfigError("throughput needs at least one input example")
    reps = -(-cfg.batch_size // input_ids.shape[0])

    def fit(t: torch.Tensor) -> torch.Tensor:
        t = t.repeat(reps, 1)[: cfg.batch_size, : cfg.seq_len]
        if t.shape[1] < cfg.seq_len:
            t = torch.cat([t, torch.zeros(t.shape[0], cfg.seq_len - t.shape[1], dtype=t.dtype)], 1)
        return t

    return {
        "input_ids": fit(input_ids),
        "attention_mask": fit(attention_mask),
        "token_type_ids": fit(token_type_ids),
    }


def time_callable(
    fn: Callable[[], object], *, examples: int, cfg: ThroughputConfig
) -> ThroughputResult:
    """Throughput of one callable (`time_interleaved` with a single entry)."""
    return time_interleaved({"fn": (fn, examples)}, cfg=cfg)["fn"]


def time_interleaved(
    fns: dict[str, tuple[Callable[[], object], int]], *, cfg: ThroughputConfig
) -> dict[str, ThroughputResult]:
    """Time several callables side by side: each round runs every callable once, in turn, so
    slow drifts of the machine (frequency, other load) hit all of them alike. `fns` maps a name
    to (callable, examples per call). Median over `cfg.repeats` rounds."""
    dev = resolve_device(cfg.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            for fn, _n in fns.values():
                fn()
        sync()
        names = list(fns)
        for r in range(cfg.repeats):
            # rotate the order each round so no callable always runs right after the same one
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn = fns[name][0]
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, (_fn, n) in fns.items():
        med = statistics.median(times[name])
        out[name] = ThroughputResult(
            n / med, med, tuple(times[name]), cfg.batch_size, cfg.seq_len, str(dev)
        )
    return out


def model_runner(
    model: AnyModel, batch: dict[str, torch.Tensor], device: str, *, cuda_graphs: bool = False
) -> tuple[Callable[[], object], int]:
    """(callable, real examples) for timing `model` on `batch`; with `cuda_graphs`, the
    callable replays one captured CUDA graph of the forward pass (see `cuda_graph_of`)."""
    dev = resolve_device(device)
    model.to(dev).eval()
    b = {
        k: v.to(dev)
        for k, v in batch.items()
        if k in ("input_ids", "attention_mask", "token_type_ids")
    }

    def forward() -> object:
        return model(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    if cuda_graphs:
        if dev.type != "cuda":
            raise ConfigError(
                f"CUDA graphs need a CUDA device, not {device!r}; use --device cuda or drop "
                "--cuda-graphs"
            )
        return cuda_graph_of(forward), b["input_ids"].shape[0]
    return forward, b["input_ids"].shape[0]


def cuda_graph_of(fn: Callable[[], object], warmup: int = 3) -> Callable[[], object]:
    """`fn` captured once as a CUDA graph; calling the result replays its kernels on the same
    input tensors, without Python or kernel-launch overhead (what a small or heavily pruned
    model on a GPU spends most of its time on). `fn` must be capturable: no host syncs, no
    shapes that depend on the data."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(warmup):  # allocator and autotuning settle outside the capture
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        out = fn()

    def replay() -> object:
        graph.replay()
        return out

    return replay


def measure_throughput(
    model: AnyModel, batch: dict[str, torch.Tensor], cfg: ThroughputConfig
) -> ThroughputResult:
    fn, examples = model_runner(model, batch, cfg.device, cuda_graphs=cfg.cuda_graphs)
    return time_callable(fn, examples=examples, cfg=cfg)


def _layer_flops(cfg, t: int, layers: range | None = None) -> float:
    """FLOPs of the encoder layers (all, or the indices in `layers`) over one sequence of t."""
    h, d = cfg.hidden_size, cfg.head_dim
    per_seq = 0.0
    for i, (heads, ffn, ap, fp) in enumerate(
        zip(cfg.heads, cfg.ffn, cfg.attn_present, cfg.ffn_present, strict=True)
    ):
        if layers is not None and i not in layers:
            continue
        if ap and heads:
            per_seq += 2 * t * h * 3 * heads * d  # qkv
            per_seq += 2 * 2 * t * t * heads * d  # scores + context
            per_seq += 2 * t * heads * d * h  # out proj
        if fp and ffn:
            per_seq += 2 * 2 * t * h * ffn
    return per_seq


def model_flops(model: AnyModel, batch_size: int, seq_len: int) -> float:
    """Multiply-add FLOPs (x2) of one forward pass over `batch_size` examples of `seq_len` tokens.

    Counts the encoder matmuls and attention, the mux/demux and the heads; embeddings lookups,
    LayerNorms and activations are ignored (they are memory-bound and small). Students: each
    active student's layers (shaped like the teacher's lower layers), pooler and classifier.
    """
    if isinstance(model, StudentEnsemble):
        cfg = model.encoder_config
        h = cfg.hidden_size
        per_student = batch_size * _layer_flops(cfg, seq_len, range(model.depth))
        per_student += batch_size * 2 * (h * h + h * model.num_labels)
        return float(model.active_students * per_student)
    cfg = model.encoder.config
    h = cfg.hidden_size
    n = model.n
    rows = -(-batch_size // n)  # mixed sequences per pass
    t = seq_len + (n if n > 1 else 0)
    k = model.instance_layers if n > 1 else 0
    every = range(len(cfg.heads))
    # the first k layers run on each instance (B' = rows * N sequences of seq_len), the rest
    # once per combined row
    total = rows * n * _layer_flops(cfg, seq_len, every[:k]) + rows * _layer_flops(
        cfg, t, every[k:]
    )
    if n > 1:
        # mixing: an element-wise product per instance (Gaussian), an H x H product
        # (orthogonal), an H x H/N projection (concat)
        combiner = model.mux_config.combiner
        per_token = {"orthogonal": 2 * h * h, "gaussian": h}[model.mux_config.variant]
        if combiner in SPLIT_COMBINERS:
            per_token = 2 * h * h // n
        total += rows * n * t * per_token
        # demux: the token half once per read position, the key half once per instance, and
        # (concat_skip) the H x H skip map once per instance and read position
        read = 1 if model.mux_config.pooling == "cls" else seq_len
        total += rows * read * 2 * h * h + batch_size * 2 * h * h
        if combiner == "concat_skip":
            total += rows * n * read * 2 * h * h
    total += batch_size * 2 * (h * h + h * model.num_labels)  # pooler + classifier
    return float(total)
