"""Issue 22 diagnosis: why students 2..K of an Academus ensemble add (almost) nothing.

    python benchmarks/student_diagnosis.py --task sst2 --items 3000 --steps 200

Two measurements on the pipeline's baseline (built or cached) as the teacher:
1. The input a fresh student's head reads: tanh(pooler(CLS)) after the teacher's first
   `--depth` layers, over `--items` training sentences: how much it varies across sentences
   (per-dimension standard deviation, mean over dimensions), beside the teacher's own pooled
   output. A student after the first starts with a zero head, so it only learns what this
   input lets it: a near-constant input teaches a bias.
   The same for the mean of the real tokens' states (what a `mean`-pooling student reads).
2. K boosted students (KL, no stacking) distilled on the same items, per `--variants`: later
   students copied from the teacher's layers (`fresh`, the ensemble's behaviour with [CLS]
   pooling), from the trained previous student (`previous`, whose CLS state already varies),
   or every student pooling the token mean (`mean`). Per student: the spread of its logit
   margin over the items, the residual MSE on the items and on 256 dev sentences, and dev
   accuracy of every prefix. Variants already in `--out` are kept (a rerun adds the others).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from _results import machine, write_json

from autoprumux.data import collate
from autoprumux.models import MuxSequenceClassifier, StudentConfig
from autoprumux.models._encoder import pool_states
from autoprumux.models._students import Student, StudentEnsemble
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.student_server import student_accuracy_losses
from autoprumux.training import StudentTrainConfig, distill_students
from autoprumux.training._students import ensemble_outputs

ADD_STUDENT = StudentEnsemble.add_student
VARIANTS = ("fresh", "previous", "mean")


def _from_previous(
    ens: StudentEnsemble, teacher: MuxSequenceClassifier, depth: int, first_layer: int = 0
) -> Student:
    """`add_student` for the `previous` variant: the new student takes the last trained
    student's weights, then a zero head (as `add_student` gives it)."""
    previous = ens.students[-1]
    s = ADD_STUDENT(ens, teacher, depth, first_layer)
    s.load_state_dict(previous.state_dict())
    with torch.no_grad():
        s.classifier.weight.zero_()
        s.classifier.bias.zero_()
    return s


@torch.no_grad()
def pooled_spread(
    pipe: PruMuxPipeline, teacher: MuxSequenceClassifier, depth: int, n: int
) -> dict[str, float]:
    teacher.eval()
    ens = StudentEnsemble.from_teacher(teacher, StudentConfig(k=1, depth=depth)).eval()
    b = collate(pipe.train_items[:n])
    x, bias = ens.embed(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    s = ens.students[0]
    assert isinstance(s, Student)
    for layer in s.layers:
        x = layer(x, bias)
    student = torch.tanh(s.pooler(x[:, 0]))
    mean = torch.tanh(s.pooler(pool_states(x, b["attention_mask"], "mean")))
    cls = teacher.hidden_states(
        b["input_ids"], b["attention_mask"], b["token_type_ids"], positions="cls"
    )
    pooler = teacher.encoder.pooler
    assert pooler is not None
    full = torch.tanh(pooler(cls))
    return {
        "fresh_student_pooled_std": float(student.std(0).mean()),
        "fresh_student_mean_pooled_std": float(mean.std(0).mean()),
        "teacher_pooled_std": float(full.std(0).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--students", type=int, default=3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pipe = PruMuxPipeline(task=args.task)
    teacher = pipe.baseline()
    items = pipe.train_items[: args.items]
    out = Path(
        args.out
        or f"benchmarks/results/student_diagnosis_{args.task}_k{args.students}d{args.depth}.json"
    )
    earlier = json.loads(out.read_text()) if out.exists() else {}
    doc: dict = {"task": args.task, "machine": machine("cpu"), **vars(args), "out": str(out)}
    doc["pooled"] = pooled_spread(pipe, teacher, args.depth, min(512, len(items)))
    print(doc["pooled"], flush=True)
    tcfg = dataclasses.replace(
        StudentTrainConfig.from_recipe(pipe.recipe), steps_per_student=args.steps, stacking_steps=0
    )
    base = pipe.baseline_metrics()["metric"]
    # rows kept from an earlier run carry that run's machine
    doc["variants"] = {
        name: {"machine": earlier.get("machine"), **row}
        for name, row in earlier.get("variants", {}).items()
        if name not in args.variants
    }
    for variant in args.variants:
        add = _from_previous if variant == "previous" else ADD_STUDENT
        StudentEnsemble.add_student = add  # type: ignore[method-assign,assignment]
        try:
            ens, stats = distill_students(
                teacher,
                items,
                StudentConfig(
                    k=args.students,
                    depth=args.depth,
                    pooling="mean" if variant == "mean" else "cls",
                ),
                tcfg,
                heldout=pipe.dev_items[:256],
            )
        finally:
            StudentEnsemble.add_student = ADD_STUDENT  # type: ignore[method-assign]
        outs = ensemble_outputs(ens, items)
        losses = student_accuracy_losses(pipe, ens)
        row = {
            "margin_spread": [float((o[:, 1] - o[:, 0]).std()) for o in outs],
            "residual_mse": stats["residual_mse"],
            "heldout_residual_mse": stats["heldout_residual_mse"],
            "dev_per_k": [base - losses[k].accuracy_loss for k in range(1, args.students + 1)],
            "machine": doc["machine"],
        }
        doc["variants"][variant] = row
        figures = {k: [round(v, 3) for v in vs] for k, vs in row.items() if isinstance(vs, list)}
        print(variant, figures, flush=True)
    write_json(out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
