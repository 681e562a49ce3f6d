"""What L2L's overlapped clipping choices cost in exactness: `l2l_clip` "global" (exact, host
steps after the whole backward) against "previous" and "stage" (host steps overlapped).

    OMP_NUM_THREADS=2 python benchmarks/l2l_clip.py --steps 200

The packaged MiniLM cut to `--layers` layers, dropout off (so every run follows one trajectory up
to the clipping rule), frozen word embeddings, mean pooling; `--steps` steps of 16 SST-2 training
sentences (4 micro-batches) at lr 2e-4 through `train_classifier`, clipping at `--clip`. Per mode:
the share of steps whose global norm was over the clip, the final training loss, the largest
parameter difference from the exact run, dev accuracy on `--dev` sentences and the share of dev
predictions equal to the exact run's. JSON: benchmarks/results/l2l_clip_cpu.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from _results import machine, write_json
from torch import nn

from autoprumux.data import encode, load_task
from autoprumux.models import MuxConfig, MuxSequenceClassifier, resolve_model
from autoprumux.models._encoder import EncoderLayer
from autoprumux.training import TrainConfig, predict, train_classifier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--dev", type=int, default=872)
    ap.add_argument("--out", default="benchmarks/results/l2l_clip_cpu.json")
    args = ap.parse_args(argv)
    base = resolve_model(None)
    tok = base.tokenizer()
    data = load_task("sst2", max_train_examples=8000, max_dev_examples=args.dev)
    train, dev = encode(data.train, tok, 64), encode(data.dev, tok, 64)
    enc = base.build_encoder()
    del enc.layers[args.layers :]
    enc.refresh_config()
    for module in enc.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for layer in enc.layers:
        if isinstance(layer, EncoderLayer):
            layer.attention_dropout = 0.0
    torch.manual_seed(0)
    start = MuxSequenceClassifier(enc, num_labels=2, mux=MuxConfig(pooling="mean"))
    start.encoder.embeddings.word.weight.requires_grad_(False)
    labels = torch.tensor([x.label for x in dev])
    rows, models, preds = {}, {}, {}
    for mode in ("global", "previous", "stage"):
        t0 = time.perf_counter()
        model = copy.deepcopy(start)
        cfg = TrainConfig(
            steps=args.steps,
            batch_size=16,
            lr=2e-4,
            grad_clip=args.clip,
            trainer="l2l",
            micro_batches=4,
            l2l_clip=mode,
        )
        stats = train_classifier(model, train, cfg)
        models[mode], preds[mode] = model, predict(model, dev).argmax(-1)
        rows[mode] = {
            "final_loss": stats.get("final_loss"),
            "dev_accuracy": 100 * float((preds[mode] == labels).float().mean()),
            "seconds": time.perf_counter() - t0,
        }
        print(mode, rows[mode], flush=True)
    for mode in ("previous", "stage"):
        rows[mode]["max_param_diff_from_global"] = max(
            float((p - q).abs().max())
            for p, q in zip(models[mode].parameters(), models["global"].parameters(), strict=True)
        )
        rows[mode]["same_dev_predictions_as_global"] = 100 * float(
            (preds[mode] == preds["global"]).float().mean()
        )
    write_json(Path(args.out), {"args": vars(args), "machine": machine("cpu"), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
