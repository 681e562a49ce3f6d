"""A four-class text task of the user's own kind, written as CSV from the local GLUE data, to try
the service on a multi-class task no GLUE loader knows.

    python benchmarks/multiclass_csv.py --glue ../shared/data/glue --out /tmp/reviews4

writes OUT/train.csv and OUT/dev.csv (columns `text`, `label`) with four classes: a film
review sentence that is negative or positive (SST-2's whole sentences; its phrases are left
out, as a user's data would hold sentences) and a sentence that is grammatical or not (CoLA).
Train comes from the two training sets, dev from the two dev sets. Then, e.g.:

    autoprumux search --data OUT --space search_spaces/quick.yaml --sampler guided \
        --trials 5 --budget 2
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from autoprumux.data import Example, load_task
from autoprumux.data._overlap import WholeTexts

LABELS = {
    "sst2": ("negative review", "positive review"),
    "cola": ("ungrammatical", "grammatical"),
}


def rows(task: str, split: list[Example], whole_only: bool) -> list[tuple[str, str]]:
    """(text, class name) of `split`; only its whole texts when `whole_only`."""
    keep = range(len(split))
    if whole_only:
        texts = WholeTexts(split)
        keep = sorted(texts.rows_of[k][0] for k in texts.wholes)
    return [(split[i].text_a, LABELS[task][split[i].label]) for i in keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--glue", default="../shared/data/glue")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", "train"), ("dev", "dev")):
        out: list[tuple[str, str]] = []
        for task in LABELS:
            data = load_task(task, data_dir=args.glue)
            out += rows(task, getattr(data, split), whole_only=split == "train")
        with open(args.out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(out)
        counts = {
            label: sum(r[1] == label for r in out) for pair in LABELS.values() for label in pair
        }
        print(f"{args.out / f'{name}.csv'}: {len(out)} rows, {counts}")


if __name__ == "__main__":
    main()
