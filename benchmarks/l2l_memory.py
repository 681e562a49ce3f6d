"""Peak device memory and step time against depth: the standard loop vs the L2L executor.

    OMP_NUM_THREADS=2 python benchmarks/l2l_memory.py                      # CPU, MiniLM width
    python benchmarks/l2l_memory.py --device cuda --width 768 --heads 12 --ffn 3072   # BERT-base

Random BERT encoders of one width (default: MiniLM's 384 hidden, 12 heads, 1536 FFN units,
vocabulary 30522) at several depths, an N=1 classifier, batches of `--batch` examples of
`--seq-len` real tokens, dropout 0.1, word embeddings frozen as in the default recipe
(`--train-word-embeddings` to train them), AdamW, global-norm clipping at 1.0. The standard step is
`train_classifier`'s (forward, CE, zero_grad, backward, clip, step); L2L is `L2LExecutor.step` with
`--micro-batches` micro-batches, boundary activations stashed on the device and (a second run) on
the host.

How device memory is measured:

- CPU (the device is the host): L2L reports its own ledger (`L2LExecutor.stats.peak_bytes`): the
  loaded stage's parameter copies and gradients, the stashed boundary activations and gradients,
  the inputs, and the tensors autograd saves while one stage recomputes one micro-batch, counted
  by storage. The standard loop gets the same accounting: parameters + gradients + AdamW's two
  moments (counted from the parameters; all resident at once because `train_classifier` frees the
  previous gradients only after the forward) + the tensors autograd saves during the forward of
  the whole batch, counted by storage with `torch.autograd.graph.saved_tensors_hooks`, parameters
  excluded. Temporaries that autograd does not save are counted in neither.
- CUDA: `torch.cuda.max_memory_allocated` of each trainer alone on the device (built from
  nothing, one warm-up step so the AdamW state exists, then the peak of one more step, minus what
  was allocated before it was built); the L2L ledger is reported beside it.

Step time: one warm-up step each, then `--steps` timed steps of the three trainers interleaved
(standard, L2L device stash, L2L host stash, standard, ...) so that load from other processes
hits them alike; the median per trainer, CUDA-synchronised on a GPU. Prints a markdown table and
writes JSON to benchmarks/results/l2l_memory_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import write_json

from autoprumux.models import Encoder, EncoderConfig, MuxSequenceClassifier
from autoprumux.training import L2LExecutor, TrainConfig
from autoprumux.training._config import make_optimizer

MB = 2**20


def build(depth: int, args: argparse.Namespace) -> MuxSequenceClassifier:
    cfg = EncoderConfig(
        vocab_size=args.vocab,
        hidden_size=args.width,
        head_dim=args.width // args.heads,
        max_position_embeddings=max(512, args.seq_len),
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        hidden_act="gelu",
        heads=(args.heads,) * depth,
        ffn=(args.ffn,) * depth,
    )
    torch.manual_seed(0)
    model = MuxSequenceClassifier(Encoder(cfg), num_labels=2)
    model.encoder.embeddings.word.weight.requires_grad_(args.train_word_embeddings)
    return model


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, length = args.batch, args.seq_len
    ids = torch.randint(5, args.vocab, (b, length), generator=g)
    ids[:, 0] = 101
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(b, length, dtype=torch.long),
        "token_type_ids": torch.zeros(b, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (b,), generator=g),
    }


def saved_activation_bytes(
    model: torch.nn.Module, forward: Callable[[], torch.Tensor]
) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd saves during `forward()` (parameters excluded),
    and what `forward()` returned."""
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return total, out


class Standard:
    """`train_classifier`'s step on the device, with the memory accounting described above."""

    def __init__(self, model: MuxSequenceClassifier, cfg: TrainConfig, device: torch.device):
        self.model = model.to(device).train()
        self.cfg, self.device = cfg, device
        self.opt, self.sched = make_optimizer(self.model, cfg)
        self.activations = 0

    def step(self, batch: dict[str, torch.Tensor], *, count: bool = False) -> None:
        b = {k: v.to(self.device) for k, v in batch.items()}

        def forward() -> torch.Tensor:
            logits = self.model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            return F.cross_entropy(logits, b["labels"])

        if count:
            self.activations, loss = saved_activation_bytes(self.model, forward)
        else:
            loss = forward()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()

    def counted_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        trainable = sum(
            p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad
        )
        return params + 3 * trainable + self.activations  # + grads + two AdamW moments


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_footprint(make: Callable[[], Standard | L2LExecutor], batch, device) -> int:
    """Peak device bytes of one trainer alone: built from nothing, one warm-up step (so the
    optimizer state exists), then the peak of one more step, minus what was allocated before it
    was built. Measured one trainer at a time: in one process `max_memory_allocated` also counts
    whatever another trainer keeps resident (the standard loop's parameters, gradients and AdamW
    moments), which is how a first version of this benchmark charged them to L2L."""
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    trainer = make()
    trainer.step(batch)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    trainer.step(batch)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    if isinstance(trainer, L2LExecutor):
        trainer.close()
    del trainer
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def run_depth(depth: int, args: argparse.Namespace, device: torch.device) -> dict:
    batch = make_batch(args)
    base = build(depth, args)
    n_params = sum(p.numel() for p in base.parameters())
    cfg = TrainConfig(
        steps=1000,
        batch_size=args.batch,
        trainer="l2l",
        micro_batches=args.micro_batches,
        l2l_clip=args.l2l_clip,
    )
    cuda = device.type == "cuda"
    row: dict = {"depth": depth, "params_m": n_params / 1e6}

    def relay(stash: str) -> Callable[[], L2LExecutor]:
        return lambda: L2LExecutor(copy.deepcopy(base), replace(cfg, stash=stash), device=device)

    makers: dict[str, Callable[[], Standard | L2LExecutor]] = {
        "standard": lambda: Standard(copy.deepcopy(base), cfg, device),
        "device": relay("device"),
        "host": relay("host"),
    }
    if cuda:  # memory first, each trainer alone on the device
        row["cuda_max_allocated_mb"] = {
            name: cuda_footprint(make, batch, device) / MB for name, make in makers.items()
        }
    std = makers["standard"]()
    assert isinstance(std, Standard)
    relays = {stash: makers[stash]() for stash in ("device", "host")}
    # warm-up: optimizer state allocated; the standard step is the one that counts activations
    std.step(batch, count=True)
    for ex in relays.values():
        ex.step(batch)
    times: dict[str, list[float]] = {"standard": [], "device": [], "host": []}
    for _ in range(args.steps):
        for name in ("standard", "device", "host"):
            sync(device)
            t0 = time.perf_counter()
            if name == "standard":
                std.step(batch)
            else:
                relays[name].step(batch)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    row["standard_mb"] = std.counted_bytes() / MB
    row["standard_activations_mb"] = std.activations / MB
    for stash, ex in relays.items():
        assert isinstance(ex, L2LExecutor)
        row[f"l2l_{stash}_mb"] = ex.stats.peak_bytes / MB
        row[f"l2l_{stash}_by_kind_mb"] = {k: v / MB for k, v in ex.stats.peak_by_kind.items()}
        ex.close()
    for name, ts in times.items():
        row[f"{name}_s"] = statistics.median(ts)
    row["time_ratio_device"] = row["device_s"] / row["standard_s"]
    row["time_ratio_host"] = row["host_s"] / row["standard_s"]
    return row


def table(rows: list[dict], cuda: bool) -> str:
    mem = "cuda max allocated" if cuda else "counted"
    head = (
        f"| depth | params (M) | standard MB ({mem}) | L2L device stash MB | L2L host stash MB "
        "| L2L/std memory (host stash) | standard s/step | L2L s/step (device / host stash) "
        "| L2L/std time (device / host) |"
    )
    out = [head, "|" + "---|" * 9]
    for r in rows:
        if cuda:
            c = r["cuda_max_allocated_mb"]
            std_mb, dev_mb, host_mb = c["standard"], c["device"], c["host"]
        else:
            std_mb, dev_mb, host_mb = r["standard_mb"], r["l2l_device_mb"], r["l2l_host_mb"]
        out.append(
            f"| {r['depth']} | {r['params_m']:.1f} | {std_mb:.0f} | {dev_mb:.0f} | {host_mb:.0f} "
            f"| {host_mb / std_mb:.2f} | {r['standard_s']:.2f} | {r['device_s']:.2f} / "
            f"{r['host_s']:.2f} | {r['time_ratio_device']:.2f} / {r['time_ratio_host']:.2f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 6, 12, 24])
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument(
        "--steps", type=int, default=2, help="timed steps per trainer (after 1 warm-up)"
    )
    ap.add_argument("--l2l-clip", default="global", choices=["global", "stage"])
    ap.add_argument("--train-word-embeddings", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is available")
    rows = []
    for depth in args.depths:
        t0 = time.perf_counter()
        rows.append(run_depth(depth, args, device))
        print(f"depth {depth}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(rows, device.type == "cuda"))
    out = Path(args.out or f"benchmarks/results/l2l_memory_{device.type}.json")
    meta = {
        "args": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    write_json(out, {"meta": meta, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
