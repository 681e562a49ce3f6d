"""Command line: `autoprumux evaluate ...`. Bad input exits with code 2 and a message naming the value."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from autoprumux.errors import AutoPruMuxError

EXIT_BAD_INPUT = 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="sst2", help="sst2 | cola | mrpc | qnli (default: sst2)")
    p.add_argument(
        "--model",
        default=None,
        help="BERT checkpoint directory or hub name (default: packaged all-MiniLM-L6-v2)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="GLUE-format directory (default: $AUTOPRUMUX_DATA or ../shared/data/glue)",
    )
    p.add_argument(
        "--data-source",
        default="local",
        choices=["local", "hf"],
        help="local GLUE files or Hugging Face datasets",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="artefact cache (default: $AUTOPRUMUX_CACHE or ./.autoprumux/cache)",
    )
    p.add_argument("--mux-variant", default="gaussian", help="gaussian | orthogonal")
    p.add_argument(
        "--warmup-corpus",
        default="shared",
        help="mux warm-up text: 'shared' (SST-2+CoLA+MRPC training text), 'task', or a text file",
    )
    g = p.add_argument_group("recipe (training budget; part of every cache key)")
    g.add_argument("--max-train-examples", type=int, default=8000)
    g.add_argument("--max-seq-len", type=int, default=64)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--finetune-steps", type=int, default=200, help="baseline fine-tune steps")
    g.add_argument(
        "--mux-warmup-steps", type=int, default=300, help="token-retrieval warm-up steps per N"
    )
    g.add_argument("--mux-finetune-steps", type=int, default=300)
    g.add_argument("--recovery-steps", type=int, default=150, help="fine-tune steps after pruning")
    g.add_argument("--prune-stages", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("throughput measurement")
    t.add_argument("--tp-batch", type=int, default=64, help="examples per timed pass")
    t.add_argument("--tp-seq-len", type=int, default=128, help="fixed padded sequence length")
    t.add_argument("--tp-repeats", type=int, default=10)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoprumux", description="Fast-inference AutoML for BERT-like models (PruMUX)."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser(
        "evaluate", help="train and measure one (sparsity, N) configuration beside the baseline"
    )
    ev.add_argument(
        "--sparsity", default="0.7", help="fraction of encoder parameters to remove, in [0, 1)"
    )
    ev.add_argument("--mux", default="2", help="multiplexing width N >= 1 (1 = none)")
    ev.add_argument(
        "--json", dest="json_out", default=None, help="also write the result as JSON to this file"
    )
    _add_common(ev)
    wu = sub.add_parser(
        "warmup",
        help="run (or reuse) the cached token-retrieval warm-up for one or more N, task-independent",
    )
    wu.add_argument("--mux", nargs="+", default=["2"], help="one or more widths N >= 2")
    _add_common(wu)
    return p


def _recipe(args: argparse.Namespace):
    from autoprumux.pipeline import Recipe

    return Recipe(
        max_seq_len=args.max_seq_len,
        max_train_examples=args.max_train_examples,
        batch_size=args.batch_size,
        finetune_steps=args.finetune_steps,
        mux_warmup_steps=args.mux_warmup_steps,
        mux_finetune_steps=args.mux_finetune_steps,
        recovery_steps=args.recovery_steps,
        prune_stages=args.prune_stages,
        seed=args.seed,
    )


def format_table(ev) -> str:
    """A readable two-row table: baseline and candidate with accuracy loss and speedup."""
    m = ev.metric_name
    head = f"{'config':<16}{'sparsity':>9}{'N':>4}{m:>9}{'acc loss':>10}{'ex/s':>10}{'speedup':>9}{'ideal':>7}"
    rows = [head, "-" * len(head)]
    for meas, loss, sp, ideal in (
        (ev.baseline, 0.0, 1.0, 1.0),
        (ev.candidate, ev.accuracy_loss, ev.speedup, ev.ideal_speedup),
    ):
        rows.append(
            f"{meas.name:<16}{meas.sparsity:>9.3f}{meas.n:>4}{meas.metric:>9.2f}{loss:>10.2f}{meas.throughput:>10.1f}{sp:>8.2f}x{ideal:>6.2f}x"
        )
    tp = ev.throughput_config
    rows.append(
        f"(task {ev.task}, device {ev.device}, throughput at batch {tp.batch_size} x {tp.seq_len} tokens, median of {tp.repeats})"
    )
    return "\n".join(rows)


def _pipeline(args: argparse.Namespace, recipe):
    from autoprumux.pipeline import PruMuxPipeline

    return PruMuxPipeline(
        task=args.task,
        model=args.model,
        recipe=recipe,
        device=args.device,
        data_dir=args.data_dir,
        data_source=args.data_source,
        cache_dir=args.cache_dir,
        mux_variant=args.mux_variant,
        warmup_corpus=args.warmup_corpus,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.pipeline import validate_candidate

    # validate everything cheap before any work starts
    sparsity, n = validate_candidate(args.sparsity, args.mux)
    recipe = _recipe(args)
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
    )
    if args.json_out and not Path(args.json_out).resolve().parent.is_dir():
        raise AutoPruMuxError(
            f"--json {args.json_out!r}: its directory does not exist; create it or choose another path"
        )
    pipe = _pipeline(args, recipe)
    ev = pipe.evaluate(sparsity, n, throughput=tp)
    print(format_table(ev))
    r = pipe.recipe
    print(
        f"(budget: {len(pipe.train_items)} training examples, batch {r.batch_size}; baseline {r.finetune_steps} steps"
        + (
            f"; mux warm-up {r.mux_warmup_steps} + fine-tune {r.mux_finetune_steps} steps"
            if n > 1
            else ""
        )
        + (
            f"; pruning in {r.prune_stages} stages + {r.recovery_steps} recovery steps"
            if sparsity > 0
            else ""
        )
        + f"; cache {pipe.cache.root})"
    )
    if args.json_out:
        _atomic_write(Path(args.json_out), json.dumps(ev.to_dict(), indent=2))
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from autoprumux.pipeline import validate_candidate

    widths = [validate_candidate(0.0, n)[1] for n in args.mux]
    if any(n < 2 for n in widths):
        raise AutoPruMuxError(f"--mux {args.mux}: the warm-up is for N >= 2 (N=1 needs none)")
    recipe = _recipe(args)
    if recipe.mux_warmup_steps < 1:
        raise AutoPruMuxError("--mux-warmup-steps must be >= 1 for `autoprumux warmup`")
    pipe = _pipeline(args, recipe)
    print(f"{'N':>3}{'steps':>7}{'seconds':>9}{'retrieval acc':>15}  cache")
    for n in widths:
        entry, meta = pipe.mux_warmup(n)
        w = meta["warmup"]
        print(
            f"{n:>3}{int(w['steps']):>7}{w['seconds']:>9.0f}{w['retrieval_accuracy']:>15.3f}  "
            f"{'hit' if meta['cache_hit'] else 'built'} {entry}"
        )
    return 0


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "warmup":
            return cmd_warmup(args)
    except AutoPruMuxError as e:
        print(f"autoprumux: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser.error(f"unknown command {args.command!r}")
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
