"""Which int8 scheme gives a label that depends only on its text, and what each one costs.

A trained model (the baseline, or a pruned candidate of the recipe) is converted four ways:

- `dynamic (per batch)`: PyTorch's dynamic quantization, one input scale per batch (what the
  project used before: a text's label moved with its batch neighbours);
- `static (calibrated)`: the project's int8, one input scale per layer fixed from 512 training
  texts (`autoprumux.models.calibrate_int8`), oneDNN's int8 kernel;
- `dynamic (per row)`: one input scale per token row, int8 x int8 -> int32 by `torch._int_mm`;
- `int8 weights only`: int8 storage, weights dequantized at each call, fp32 compute.

Each is scored on the dev set batched four ways (64 in dev order, as the model card scores it;
1; 16; 64 shuffled), reporting the accuracy of each, its spread and how many labels differ
from the first; then all are timed side by side with the fp32 model and the baseline
(interleaved rounds, median, 64 x 128 tokens): `speedup` is over the baseline.

    python benchmarks/int8_schemes.py --preset quick --sparsity 0 0.2
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable

import torch
from _results import RECIPE_HELP, machine, recipe_overrides, write_json
from torch import nn

from autoprumux import Candidate, PruMuxPipeline, Recipe
from autoprumux.evaluation import ThroughputConfig, task_metrics, time_interleaved
from autoprumux.models._precision import _quantizable, weight_qparams
from autoprumux.training import predict

BATCHINGS = (
    ("64, dev order", 64, False),
    ("1", 1, False),
    ("16", 16, False),
    ("64, shuffled", 64, True),
)


class PerRowInt8Linear(nn.Module):
    """Symmetric int8 input with one scale per row, int8 weights per output row."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        self.w_scale = weight_qparams(w)
        self.w_t = (
            torch.clamp(torch.round(w / self.w_scale[:, None]), -127, 127)
            .to(torch.int8)
            .t()
            .contiguous()
        )
        self.bias = None if lin.bias is None else lin.bias.detach().clone()
        self.out_features = lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        s = x2.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127.0
        q = torch.round(x2 / s).to(torch.int8)
        rows = q.shape[0]
        if rows <= 16:  # torch._int_mm needs more than 16 rows on the CPU: pad with zeros
            q = torch.cat([q, q.new_zeros(17 - rows, q.shape[1])])
        y = torch._int_mm(q, self.w_t)[:rows].float() * (s * self.w_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


class WeightOnlyInt8Linear(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        self.w_scale = weight_qparams(w)
        self.w_int8 = torch.clamp(torch.round(w / self.w_scale[:, None]), -128, 127).to(torch.int8)
        self.bias = None if lin.bias is None else lin.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.w_int8.float() * self.w_scale[:, None], self.bias)


def replaced(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    out = copy.deepcopy(model).eval()
    for name in _quantizable(out):
        parent, _, child = name.rpartition(".")
        owner = out.get_submodule(parent) if parent else out
        setattr(owner, child, make(out.get_submodule(name)))
    return out


def dynamic_per_batch(model: nn.Module) -> nn.Module:
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model).eval(), dict.fromkeys(_quantizable(model), qconfig), dtype=torch.qint8
    )


def batchings(pipe: PruMuxPipeline, model: nn.Module) -> dict[str, dict]:
    """Scored on one thread: a batch of one on two threads beside other jobs spends its time
    waiting for the second thread, and the labels do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _batchings(pipe, model)
    finally:
        torch.set_num_threads(threads)


def _batchings(pipe: PruMuxPipeline, model: nn.Module) -> dict[str, dict]:
    items, gold = pipe.dev_items, [x.label for x in pipe.dev_items]
    out: dict[str, dict] = {}
    first = None
    for name, batch, shuffled in BATCHINGS:
        order = (
            torch.randperm(len(items), generator=torch.Generator().manual_seed(0))
            if shuffled
            else torch.arange(len(items))
        )
        with torch.inference_mode():
            logits = predict(model, [items[i] for i in order.tolist()], batch_size=batch)
        restored = torch.empty_like(logits)
        restored[order] = logits
        labels = restored.argmax(-1)
        first = labels if first is None else first
        m = task_metrics(pipe.task.metric, restored, gold, pos_label=pipe.task.positive)
        out[name] = {"metric": m["metric"], "labels_changed": int((labels != first).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--preset", default=None, help="recipe preset (quick, fast, accurate)")
    ap.add_argument("--recipe", nargs="*", default=[], help=RECIPE_HELP)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/int8_schemes_sst2_cpu.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    fields = recipe_overrides(args.recipe)
    recipe = Recipe.preset(args.preset, **fields) if args.preset else Recipe(**fields)
    pipe = PruMuxPipeline(task=args.task, recipe=recipe)
    tp = ThroughputConfig(batch_size=64, seq_len=128, repeats=args.repeats)
    batch = pipe.throughput_batch(tp)
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    rows = []
    for s in args.sparsity:
        fp32 = pipe.trained(Candidate(sparsity=s))
        models = {
            "fp32": fp32,
            "dynamic (per batch)": dynamic_per_batch(fp32),
            "static (calibrated)": pipe.converted(fp32, "int8"),
            "dynamic (per row)": replaced(fp32, PerRowInt8Linear),
            "int8 weights only": replaced(fp32, WeightOnlyInt8Linear),
        }
        scores = {k: batchings(pipe, m) for k, m in models.items()}
        timed = {**models, "baseline": pipe.baseline()} if s else models
        times = time_interleaved(
            {k: ((lambda m=m: m(*inputs)), tp.batch_size) for k, m in timed.items()}, cfg=tp
        )
        base_speed = times["baseline" if s else "fp32"].examples_per_second
        base = pipe.baseline_metrics()["metric"]
        for k in models:
            metrics = [v["metric"] for v in scores[k].values()]
            row = {
                "sparsity": s,
                "scheme": k,
                "batchings": scores[k],
                "spread": max(metrics) - min(metrics),
                "loss_dev_order": base - scores[k]["64, dev order"]["metric"],
                "speedup": times[k].examples_per_second / base_speed,
                "speedup_over_fp32": times[k].examples_per_second
                / times["fp32"].examples_per_second,
            }
            rows.append(row)
            changed = max(v["labels_changed"] for v in scores[k].values())
            print(
                f"s={s:g} {k:<20} "
                + " ".join(f"{m:6.2f}" for m in metrics)
                + f"  spread {row['spread']:.2f}  changed <= {changed}  {row['speedup']:.2f}x",
                flush=True,
            )
    write_json(
        args.out,
        {
            "command": "python benchmarks/int8_schemes.py "
            + (f"--preset {args.preset} " if args.preset else "")
            + (f"--recipe {' '.join(args.recipe)} " if args.recipe else "")
            + f"--sparsity {' '.join(f'{s:g}' for s in args.sparsity)}",
            "machine": machine(),
            "baseline_metric": pipe.baseline_metrics()["metric"],
            "metric": pipe.task.metric,
            "batchings": [b[0] for b in BATCHINGS],
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
