"""Issue 22 benchmark: which distillation levers make each added Academus student add accuracy.

    python benchmarks/student_levers.py --task sst2 --students 4 --depth 2 \
        --levers default kl spread kl+spread kl+data

Takes the pipeline's fine-tuned baseline (built or cached) as the teacher and, for each lever,
distils K students of `depth` layers, then scores every prefix k = 1..K on dev. A lever is a
'+'-joined set of changes to the recipe's distillation:
  default   the original schedule: MSE on the residual, every student from the lowest layers
            (whatever the recipe's own student_loss and student_init say)
  kl        boosting and stacking on KL at --temperature around the current sum instead of MSE
  spread    students start from teacher layers spread over its depth (`student_first_layers`)
  data      distil over --data-examples training texts (labelled by the teacher; the labels
            are not read) instead of the recipe's max_train_examples
  steps     --steps-factor times the boosting and stacking steps
  later     students 2..K boost at --later-lr-factor times the students' rate (they start from
            a zero classifier)
  mean      the students' pooler reads the mean of the real tokens' states, not [CLS]
  corpus    the distillation set adds --corpus-examples warm-up corpus sentences (the recipe's
            student_unlabeled)
  focus     stacking puts --stacking-focus of its loss on the full sum of the K students (the
            recipe's student_stacking_focus), the rest on the mean over the prefixes
Each lever's row is written to the JSON as soon as it is measured, so a killed run keeps the
finished ones (and a rerun with the same --out skips them). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _results import machine, write_json

from autoprumux.models import StudentConfig
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.pipeline._corpus import corpus_items
from autoprumux.student_server import student_accuracy_losses
from autoprumux.training import StudentTrainConfig, distill_students

LEVERS = ("default", "kl", "spread", "data", "steps", "later", "mean", "corpus", "focus")


def lever_parts(name: str) -> list[str]:
    parts = name.split("+")
    bad = [p for p in parts if p not in LEVERS]
    if bad:
        raise SystemExit(f"unknown lever {bad[0]!r} in {name!r}; levers: {', '.join(LEVERS)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--levers", nargs="+", default=["default", "kl", "spread"])
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--data-examples", type=int, default=32000)
    ap.add_argument("--corpus-examples", type=int, default=32000)
    ap.add_argument("--steps-factor", type=int, default=3)
    ap.add_argument("--later-lr-factor", type=float, default=10.0)
    ap.add_argument("--stacking-focus", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    for name in args.levers:
        lever_parts(name)

    out = Path(
        args.out
        or f"benchmarks/results/student_levers_{args.task}_k{args.students}d{args.depth}.json"
    )
    doc = json.loads(out.read_text()) if out.exists() else {"rows": []}
    done = {row["lever"] for row in doc["rows"]}

    pipe = PruMuxPipeline(task=args.task, device=args.device, cache_dir=args.cache_dir)
    teacher = pipe.baseline()
    base_metric = pipe.baseline_metrics()["metric"]
    r = pipe.recipe
    big_items = None
    for name in args.levers:
        if name in done:
            print(f"{name}: already in {out}", file=sys.stderr)
            continue
        parts = lever_parts(name)
        tcfg = dataclasses.replace(StudentTrainConfig.from_recipe(r), loss="mse", init="bottom")
        items = pipe.train_items
        if "kl" in parts:
            tcfg = dataclasses.replace(tcfg, loss="kl", temperature=args.temperature)
        if "spread" in parts:
            tcfg = dataclasses.replace(tcfg, init="spread")
        if "steps" in parts:
            tcfg = dataclasses.replace(
                tcfg,
                steps_per_student=tcfg.steps_per_student * args.steps_factor,
                stacking_steps=tcfg.stacking_steps * args.steps_factor,
            )
        if "focus" in parts:
            tcfg = dataclasses.replace(tcfg, stacking_focus=args.stacking_focus)
        if "later" in parts:
            tcfg = dataclasses.replace(tcfg, later_lr=tcfg.lr * args.later_lr_factor)
        if "data" in parts:
            if big_items is None:
                big = PruMuxPipeline(
                    task=args.task,
                    device=args.device,
                    cache_dir=args.cache_dir,
                    recipe=dataclasses.replace(r, max_train_examples=args.data_examples),
                )
                big_items = big.train_items
            items = big_items
        if "corpus" in parts:
            items = [*items, *corpus_items(pipe, args.corpus_examples)[0]]
        pooling = "mean" if "mean" in parts else "cls"
        t0 = time.perf_counter()
        ens, stats = distill_students(
            teacher,
            items,
            StudentConfig(k=args.students, depth=args.depth, pooling=pooling),
            tcfg,
            device=args.device,
            heldout=pipe.dev_items[:256],
        )
        seconds = time.perf_counter() - t0
        losses = student_accuracy_losses(pipe, ens)
        row = {
            "lever": name,
            "metric_per_k": [
                base_metric - losses[k].accuracy_loss for k in range(1, args.students + 1)
            ],
            "loss_per_k": [losses[k].accuracy_loss for k in range(1, args.students + 1)],
            "distillation_examples": len(items),
            "steps_per_student": tcfg.steps_per_student,
            "stacking_steps": tcfg.stacking_steps,
            "loss": tcfg.loss,
            "temperature": tcfg.temperature,
            "init": tcfg.init,
            "pooling": pooling,
            "later_lr": tcfg.later_lr,
            "stacking_focus": tcfg.stacking_focus,
            "residual_mse": stats["residual_mse"],
            "heldout_residual_mse": stats["heldout_residual_mse"],
            "prefix_mse": stats["prefix_mse"],
            "seconds": seconds,
            # rows may come from different runs: each keeps its own teacher's score and machine
            "baseline_metric": base_metric,
            "machine": machine(args.device),
        }
        print(json.dumps({k: row[k] for k in ("lever", "metric_per_k", "seconds")}), flush=True)
        doc = {
            "task": args.task,
            "metric": pipe.task.metric,
            "students": args.students,
            "depth": args.depth,
            "baseline_metric": base_metric,
            "device": args.device,
            "machine": machine(args.device),
            "recipe": dataclasses.asdict(r),
            "rows": [*doc["rows"], row],
        }
        write_json(out, doc)

    ks = range(1, args.students + 1)
    print(f"| lever | examples | steps/student | {' | '.join(f'k={k}' for k in ks)} | seconds |")
    print(f"|---|---|---|{'---|' * len(ks)}---|")
    for row in doc["rows"]:
        per_k = " | ".join(f"{m:.2f}" for m in row["metric_per_k"])
        print(
            f"| {row['lever']} | {row['distillation_examples']} | {row['steps_per_student']} | "
            f"{per_k} | {row['seconds']:.0f} |"
        )
    print(f"\n(baseline {doc.get('baseline_metric', base_metric):.2f}; {machine(args.device)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
