"""Training examples per second: autoprumux's fine-tuning loop against a plain `transformers`
loop, at the same batch and the same batches, and the loop's speed levers side by side.

    python benchmarks/training_speed.py                      # SST-2, the packaged MiniLM
    python benchmarks/training_speed.py --task mrpc --steps 10 --rounds 3

Every arm trains a fresh copy of the same model on SST-2's training items (all of them, cut to
the recipe's `max_seq_len` as the pipeline cuts them) with AdamW, the same learning rate,
warm-up, weight decay and clipping:

- `transformers`: `AutoModelForSequenceClassification` on the packaged checkpoint, a textbook
  loop (forward with labels, backward, clip, step) over the loop's own random batches;
- `autoprumux`: `train_classifier`, the loop every baseline and candidate trains with
  (random batches, each padded to its longest item);
- `autoprumux+grouped`: batches drawn from length-sorted pools (`batching="grouped"`);
- `autoprumux+bf16`: bf16 autocast on the CPU (`autocast="bf16"`), random batches;
- `autoprumux+grouped+bf16`: both.

Arms run in interleaved rounds (`--rounds`, each `--steps` timed steps after one untimed step),
so a slower or busier stretch of the machine falls on every arm; the figure is the median
round's examples per second. It also reports the mean padded length per batch, which is what
grouping cuts. JSON: benchmarks/results/training_speed_<task>_cpu.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _results import machine, write_json

from autoprumux import PruMuxPipeline, Recipe
from autoprumux.data import infinite_batches
from autoprumux.training import TrainConfig, train_classifier

ARMS = (
    "transformers",
    "autoprumux",
    "autoprumux+grouped",
    "autoprumux+bf16",
    "autoprumux+grouped+bf16",
)


def transformers_arm(pipe: PruMuxPipeline, cfg: TrainConfig) -> Callable[[int], float]:
    """A plain transformers loop over the same random batches; returns run(steps) -> seconds."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(pipe.base.path), num_labels=pipe.task.num_labels
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    it = infinite_batches(pipe.train_items, cfg.batch_size, seed=cfg.seed)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            b = next(it)
            out = model(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                token_type_ids=b["token_type_ids"],
                labels=b["labels"],
            )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        return time.perf_counter() - t0

    return run


def autoprumux_arm(pipe: PruMuxPipeline, cfg: TrainConfig) -> Callable[[int], float]:
    """`train_classifier` on a fresh baseline model; each call continues from a new copy (the
    loop builds its own optimizer), so every round times the same work."""
    base = pipe.fresh_model(1)

    def run(steps: int) -> float:
        model = copy.deepcopy(base)
        stats = train_classifier(model, pipe.train_items, dataclasses.replace(cfg, steps=steps))
        return stats["seconds"]

    return run


def mean_padded_length(pipe: PruMuxPipeline, cfg: TrainConfig, batches: int = 200) -> float:
    it = infinite_batches(pipe.train_items, cfg.batch_size, seed=cfg.seed, batching=cfg.batching)
    return statistics.fmean(next(it)["input_ids"].shape[1] for _ in range(batches))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument(
        "--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data" / "glue")
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    pipe = PruMuxPipeline(
        task=args.task, recipe=Recipe(batch_size=args.batch_size), data_dir=args.data_dir
    )
    # the former loop: random batches, fp32 (the recipe's defaults are the levers under test)
    base_cfg = dataclasses.replace(
        TrainConfig.from_recipe(pipe.recipe, args.steps), batching="random", autocast="fp32"
    )
    configs = {
        "autoprumux": base_cfg,
        "autoprumux+grouped": dataclasses.replace(base_cfg, batching="grouped"),
        "autoprumux+bf16": dataclasses.replace(base_cfg, autocast="bf16"),
        "autoprumux+grouped+bf16": dataclasses.replace(
            base_cfg, batching="grouped", autocast="bf16"
        ),
    }
    runs = {
        arm: transformers_arm(pipe, base_cfg)
        if arm == "transformers"
        else autoprumux_arm(pipe, configs[arm])
        for arm in args.arms
    }
    for run in runs.values():  # one untimed step each: lazy allocations, oneDNN primitives
        run(1)
    seconds: dict[str, list[float]] = {arm: [] for arm in runs}
    for r in range(args.rounds):
        for arm, run in runs.items():
            seconds[arm].append(run(args.steps))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(
                f"{a} {args.steps * args.batch_size / s[-1]:.1f} ex/s" for a, s in seconds.items()
            ),
            flush=True,
        )
    rows = {}
    for arm, secs in seconds.items():
        per_round = [args.steps * args.batch_size / s for s in secs]
        cfg = configs.get(arm, base_cfg)
        rows[arm] = {
            "examples_per_s": statistics.median(per_round),
            "examples_per_s_rounds": per_round,
            "mean_padded_length": mean_padded_length(pipe, cfg),
        }
    ref = rows.get("transformers", rows.get("autoprumux"))["examples_per_s"]
    for arm, row in rows.items():
        row["vs_transformers"] = row["examples_per_s"] / ref
        print(
            f"{arm:26s} {row['examples_per_s']:7.1f} ex/s  {row['vs_transformers']:.2f}x  "
            f"mean padded length {row['mean_padded_length']:.1f}"
        )
    doc = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "command": "python benchmarks/training_speed.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(v)}"
            for k, v in vars(args).items()
            if k not in ("out", "data_dir")
        ),
        "task": args.task,
        "max_seq_len": pipe.max_seq_len,
        "train_items": len(pipe.train_items),
        "batch_size": args.batch_size,
        "arms": rows,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    out = args.out or Path(__file__).parent / "results" / f"training_speed_{args.task}_cpu.json"
    print(f"wrote {write_json(out, doc)}")


if __name__ == "__main__":
    main()
