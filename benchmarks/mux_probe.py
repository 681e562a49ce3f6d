"""Linear probe: is the task information in a (multiplexed) model's frozen features?

    python benchmarks/mux_probe.py base .autoprumux/ablation/warm_N2_retrieval_400_1.0 ...

For each model ("base" = the plain pretrained model, N=1; otherwise a saved
MuxSequenceClassifier directory, e.g. a warm-up from benchmarks/mux_ablation.py): per-instance
(demuxed) token states of 3,000 SST-2 training sentences, mean-pooled or [CLS], then a logistic
regression; prints its SST-2 dev accuracy. No fine-tuning is involved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from autoprumux.data import collate
from autoprumux.models import MuxSequenceClassifier
from autoprumux.pipeline import PruMuxPipeline


def features(model: MuxSequenceClassifier, items: list, pool: str) -> np.ndarray:
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(items), 64):
            b = collate(items[s : s + 64])
            st = model.hidden_states(
                b["input_ids"], b["attention_mask"], b["token_type_ids"], positions="all"
            )
            if pool == "mean":
                mk = b["attention_mask"].unsqueeze(-1).float()
                out.append(((st * mk).sum(1) / mk.sum(1)).numpy())
            else:
                out.append(st[:, 0].numpy())
    return np.concatenate(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "models", nargs="*", default=["base"], help='"base" or saved MuxSequenceClassifier folders'
    )
    paths = ap.parse_args(argv).models
    missing = [p for p in paths if p != "base" and not Path(p).is_dir()]
    if missing:
        ap.error(f"no saved model folder at {missing}; pass 'base' or a folder a warm-up saved")
    pipe = PruMuxPipeline(task="sst2")
    train, dev = pipe.train_items[:3000], pipe.dev_items
    y_train = [x.label for x in train]
    y_dev = np.array([x.label for x in dev])
    for path in paths:
        model = pipe.fresh_model(1) if path == "base" else MuxSequenceClassifier.load(path)
        for pool in ("mean", "cls"):
            clf = LogisticRegression(max_iter=2000).fit(features(model, train, pool), y_train)
            acc = float((clf.predict(features(model, dev, pool)) == y_dev).mean())
            print(f"{path} {pool}: probe dev accuracy {acc:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
