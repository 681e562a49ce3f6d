"""Command line: evaluate, warmup, search, worker, recommend, ui, serve, serve-students.

Bad input exits with code 2 and a message naming the value."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprumux.config import SAMPLERS
from autoprumux.errors import AutoPruMuxError

EXIT_BAD_INPUT = 2


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{v!r} is not a boolean (use true or false)")


def _recipe_help(field: str, text: str) -> str:
    from autoprumux.config import Recipe

    return f"{text} (default: {getattr(Recipe(), field)})"


RECIPE_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("--max-train-examples", int, "training examples (seeded subsample)"),
    ("--max-seq-len", int, "max tokens per example"),
    ("--batch-size", int, "examples per step"),
    ("--finetune-steps", int, "baseline fine-tune steps"),
    ("--mux-warmup-steps", int, "token-retrieval warm-up steps per N"),
    ("--mux-finetune-steps", int, "task fine-tune steps per N > 1"),
    ("--recovery-steps", int, "fine-tune steps after pruning, all stages"),
    ("--prune-stages", int, "pruning stages"),
    ("--mux-pooling", str, "N > 1 head reads the demuxed [CLS] ('cls') or token mean ('mean')"),
    ("--warmup-hidden-distill", float, "weight of hidden-state distillation in the warm-up"),
    ("--mux-hidden-distill", float, "weight of hidden-state KD in the N > 1 fine-tune"),
    ("--warmup-from-smaller", _bool, "N >= 4 warm-up starts from the N/2 warm-up (true/false)"),
    ("--student-steps", int, "boosting steps per Academus student"),
    ("--student-stacking-steps", int, "joint stacking-distillation steps of all students"),
    ("--student-lr", float, "learning rate of the student boosting steps"),
    ("--seed", int, "seed of sampling, initialisation and data order"),
    ("--trainer", str, "fine-tune loop: 'standard' or 'l2l' (layer-to-layer, constant memory)"),
    ("--l2l-micro-batches", int, "L2L micro-batches per batch (must divide --batch-size)"),
    ("--l2l-stash", str, "L2L boundary activations kept on the 'device' or the 'host'"),
]


def _add_recipe_flags(g: argparse._ArgumentGroup) -> None:
    from autoprumux.config import RECIPE_PRESETS

    g.add_argument(
        "--preset",
        default="fast",
        choices=sorted(RECIPE_PRESETS),
        help="named recipe the flags below start from: fast (Recipe's defaults) or accurate "
        "(2.5x longer N > 1 fine-tune on 4x the examples; see docs/multiplexing.md) (default: fast)",
    )
    for flag, typ, hlp in RECIPE_FLAGS:
        g.add_argument(
            flag, type=typ, default=None, help=_recipe_help(flag[2:].replace("-", "_"), hlp)
        )


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
    g = p.add_argument_group("recipe (training budget; part of every cache key; defaults: Recipe)")
    _add_recipe_flags(g)
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
        "--students",
        default=None,
        help="evaluate K Academus students instead of PruMUX (K in 1..16; --sparsity/--mux ignored)",
    )
    ev.add_argument("--student-depth", default="2", help="layers per student: 1, 2 or 3")
    ev.add_argument(
        "--active", default=None, help="run only the first k of the K students (default: all)"
    )
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

    se = sub.add_parser(
        "search", help="run (or resume) an Optuna study over a search space, tracked in MLflow"
    )
    se.add_argument("--space", default="search_spaces/prumux.yaml", help="search space YAML file")
    se.add_argument("--task", default=None, help="overrides the space's task")
    se.add_argument("--trials", type=int, default=24, help="finished trials the study should hold")
    _add_sampler(se)
    _add_search_common(se)

    wk = sub.add_parser(
        "worker", help="one more worker on an existing study (shared storage, e.g. PostgreSQL)"
    )
    wk.add_argument("--trials", type=int, default=None, help="default: the study's own target")
    _add_sampler(wk)
    _add_search_common(wk)

    rc = sub.add_parser(
        "recommend", help="the fastest configuration measured within an accuracy budget"
    )
    rc.add_argument("--budget", required=True, help="accepted accuracy loss in points, e.g. 2.0")
    rc.add_argument("--task", default=None)
    rc.add_argument("--model", default=None, help="filter studies by model id (substring)")
    rc.add_argument("--device", default=None)
    rc.add_argument("--storage", default=None, help="Optuna storage URL (default: ./autoprumux.db)")
    rc.add_argument("--study-name", default=None, help="use only this study")
    rc.add_argument("--json", dest="json_out", action="store_true", help="print JSON")

    ui = sub.add_parser("ui", help="MLflow dashboard over the tracking store (127.0.0.1)")
    ui.add_argument("--tracking-uri", default=None, help="default: sqlite:///mlflow.db here")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)

    sv = sub.add_parser(
        "serve", help="serve the registered recommender (MLflow scoring server, 127.0.0.1)"
    )
    sv.add_argument("--tracking-uri", default=None, help="default: sqlite:///mlflow.db here")
    sv.add_argument(
        "--model-uri",
        default=None,
        help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/PATH or a model directory "
        "(default: models:/autoprumux-recommender/latest)",
    )
    sv.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (another host is warned about)"
    )
    sv.add_argument("--port", type=int, default=5001, help="1..65535 (default: 5001)")
    _add_serve_students(sub)
    return p


def _add_serve_students(sub: Any) -> None:
    ss = sub.add_parser(
        "serve-students",
        help="serve K boosted students over HTTP (127.0.0.1), lowering K under load bursts",
    )
    ss.add_argument("--students", type=int, default=4, help="K students (default: 4)")
    ss.add_argument("--depth", type=int, default=2, help="layers per student (default: 2)")
    ss.add_argument("--task", default="sst2", help="sst2 | cola | mrpc | qnli (default: sst2)")
    ss.add_argument("--model", default=None, help="default: packaged all-MiniLM-L6-v2")
    ss.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    ss.add_argument("--data-dir", default=None)
    ss.add_argument("--data-source", default="local", choices=["local", "hf"])
    ss.add_argument("--cache-dir", default=None)
    ss.set_defaults(mux_variant="gaussian", warmup_corpus="shared")
    g = ss.add_argument_group("recipe (finds or builds the cached ensemble; defaults: Recipe)")
    _add_recipe_flags(g)
    s = ss.add_argument_group("serving")
    s.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (another host is warned about)"
    )
    s.add_argument("--port", type=int, default=8008, help="default: 8008 (0: a free port)")
    s.add_argument(
        "--slo-ms", type=float, default=100.0, help="latency objective of the queue (default: 100)"
    )
    s.add_argument("--max-batch", type=int, default=32, help="texts per batch (default: 32)")
    s.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="wait for a batch to fill (default: 5)"
    )
    s.add_argument(
        "--fixed-k", type=int, default=None, help="always run this many students (no adaptation)"
    )
    s.add_argument(
        "--hold-s", type=float, default=2.0, help="quiet seconds before K is raised (default: 2)"
    )
    s.add_argument("--max-chars", type=int, default=10_000, help="per text (default: 10000)")
    s.add_argument("--max-texts", type=int, default=64, help="per request (default: 64)")
    s.add_argument(
        "--skip-dev-eval",
        action="store_true",
        help="do not measure each k's dev accuracy at start-up (more students = more accurate)",
    )
    s.add_argument(
        "--accuracy-from",
        choices=["dev", "meta", "none"],
        default=None,
        help="each k's accuracy loss in the policy table: measured on dev at start-up ('dev', "
        "the default), the meta-model's pessimistic prediction from the study in --storage "
        "('meta'), or none ('none', as --skip-dev-eval)",
    )
    s.add_argument(
        "--storage", default=None, help="with --accuracy-from meta: Optuna storage of the study"
    )


def _add_sampler(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler",
        default="tpe",
        choices=SAMPLERS,
        help="tpe (default); guided: spend the trials where they can still change the fastest "
        "configuration within --budget (see docs/search.md); random, grid: baselines",
    )


def _add_search_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage", default=None, help="Optuna storage URL (default: sqlite:///autoprumux.db here)"
    )
    p.add_argument("--study-name", default=None, help="default: <space>-<task>-<model>")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)",
    )
    p.add_argument(
        "--budget", default="2.0", help="accuracy-loss budget in points for TPE's constraint"
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--data-source", default="local", choices=["local", "hf"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--warmup-corpus", default="shared")
    p.add_argument(
        "--prune-margin",
        type=float,
        default=5.0,
        help="stop a trial whose accuracy loss after a pruning stage (never the last) exceeds "
        "the budget by more than this many points (default: 5)",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between trial heartbeats; a silent trial is failed and retried after 2x",
    )
    p.add_argument(
        "--no-register",
        action="store_true",
        help="do not fit and register the meta-model recommender at the end",
    )
    t = p.add_argument_group("throughput measurement")
    t.add_argument("--tp-batch", type=int, default=64)
    t.add_argument("--tp-seq-len", type=int, default=128)
    t.add_argument("--tp-repeats", type=int, default=10)


def _recipe(args: argparse.Namespace):
    """A Recipe from the preset and the recipe flags given (the flags win)."""
    from autoprumux.config import Recipe

    given = {}
    for flag, _, _ in RECIPE_FLAGS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    return Recipe.preset(args.preset, **given)


def format_table(ev) -> str:
    """A readable two-row table: baseline and candidate with accuracy loss and speedup."""
    m = ev.metric_name
    head = f"{'config':<20}{'sparsity':>9}{'N':>4}{m:>9}{'acc loss':>10}{'ex/s':>10}{'speedup':>9}{'ideal':>7}"
    rows = [head, "-" * len(head)]
    for meas, loss, sp, ideal in (
        (ev.baseline, 0.0, 1.0, 1.0),
        (ev.candidate, ev.accuracy_loss, ev.speedup, ev.ideal_speedup),
    ):
        rows.append(
            f"{meas.name:<20}{meas.sparsity:>9.3f}{meas.n:>4}{meas.metric:>9.2f}{loss:>10.2f}{meas.throughput:>10.1f}{sp:>8.2f}x{ideal:>6.2f}x"
        )
    tp = ev.throughput_config
    rows.append(
        f"(task {ev.task}, device {ev.device}, throughput at batch {tp.batch_size} x {tp.seq_len} tokens, median of {tp.repeats})"
    )
    return "\n".join(rows)


def _check_output_file(flag: str, value: str) -> None:
    """An output file named on the command line must be writable before the work starts."""
    p = Path(value).expanduser()
    if p.is_dir():
        raise AutoPruMuxError(f"{flag} {value!r} is a directory; name a file in it")
    if not p.resolve().parent.is_dir():
        raise AutoPruMuxError(
            f"{flag} {value!r}: its directory does not exist; create it or choose another path"
        )
    if not os.access(p if p.exists() else p.resolve().parent, os.W_OK):
        raise AutoPruMuxError(f"{flag} {value!r} is not writable; choose another path")


def _check_cache_dir(value: str | None) -> None:
    """The artefact cache (--cache-dir, $AUTOPRUMUX_CACHE, or ./.autoprumux/cache) must be a
    directory this process can create and write, before any work starts."""
    from autoprumux._cache import default_cache_dir

    where = "--cache-dir" if value else "the cache directory ($AUTOPRUMUX_CACHE or the default)"
    root = Path(value).expanduser() if value else default_cache_dir()
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise AutoPruMuxError(
            f"{where} {str(root)!r}: {str(existing)!r} is a file, not a directory; "
            "choose another --cache-dir"
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise AutoPruMuxError(
            f"{where} {str(root)!r} is not writable ({str(existing)!r} is read-only); "
            "pass a writable --cache-dir or set AUTOPRUMUX_CACHE"
        )


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise AutoPruMuxError(f"--port ({port}) must be between 1 and 65535 (e.g. 5000)")
    return port


def _warn_non_loopback(host: str) -> None:
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(
            f"autoprumux: warning: --host {host} makes the server reachable from other machines; "
            "it has no authentication (the default 127.0.0.1 keeps it local)",
            file=sys.stderr,
        )


def _pipeline(args: argparse.Namespace, recipe):
    from autoprumux.pipeline import PruMuxPipeline

    _check_cache_dir(args.cache_dir)
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
    from autoprumux.config import validate_candidate
    from autoprumux.evaluation import ThroughputConfig

    # validate everything cheap before any work starts
    students = _student_args(args) if args.students is not None else None
    sparsity, n = (0.0, 1) if students else validate_candidate(args.sparsity, args.mux)
    recipe = _recipe(args)
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
    )
    if args.json_out:
        _check_output_file("--json", args.json_out)
    pipe = _pipeline(args, recipe)
    if students:
        k, depth, active = students
        ev = pipe.evaluate_students(k, depth, active=active, throughput=tp)
    else:
        ev = pipe.evaluate(sparsity, n, throughput=tp)
    print(format_table(ev))
    r = pipe.recipe
    print(
        f"(budget: {len(pipe.train_items)} training examples, batch {r.batch_size}; baseline {r.finetune_steps} steps"
        + (
            f"; {r.student_steps} boosting steps per student + {r.student_stacking_steps} "
            "stacking steps"
            if students
            else ""
        )
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


def _student_args(args: argparse.Namespace) -> tuple[int, int, int | None]:
    """(K, depth, active) from --students/--student-depth/--active, validated."""
    from autoprumux.models import StudentConfig

    def as_int(flag: str, v: str) -> int:
        try:
            return int(v)
        except ValueError:
            raise AutoPruMuxError(f"{flag} ({v!r}) must be an integer") from None

    cfg = StudentConfig(
        k=as_int("--students", args.students), depth=as_int("--student-depth", args.student_depth)
    )
    active = None if args.active is None else as_int("--active", args.active)
    if active is not None and not 1 <= active <= cfg.k:
        raise AutoPruMuxError(f"--active ({active}) must be between 1 and --students ({cfg.k})")
    return cfg.k, cfg.depth, active


def cmd_warmup(args: argparse.Namespace) -> int:
    from autoprumux.config import validate_candidate

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
        if w.get("curve"):  # training-batch retrieval accuracy over each tenth of the warm-up
            pts = " ".join(f"{int(c['step'])}:{c['retrieval_accuracy']:.2f}" for c in w["curve"])
            print(f"{'':>3}  retrieval accuracy by step  {pts}")
    return 0


def _search_settings(args: argparse.Namespace, space, trials: int):
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.search import SearchSettings, check_budget

    _check_cache_dir(args.cache_dir)
    return SearchSettings(
        space=space,
        trials=trials,
        storage=args.storage,
        study_name=args.study_name,
        tracking_uri=args.tracking_uri,
        budget=check_budget(args.budget),
        sampler=args.sampler,
        seed=args.seed,
        device=args.device,
        cache_dir=args.cache_dir,
        data_dir=args.data_dir,
        data_source=args.data_source,
        warmup_corpus=args.warmup_corpus,
        throughput=ThroughputConfig(
            batch_size=args.tp_batch,
            seq_len=args.tp_seq_len,
            repeats=args.tp_repeats,
            device=args.device,
        ),
        prune_margin=args.prune_margin,
        heartbeat=args.heartbeat,
    )


def _run_search(args: argparse.Namespace, settings) -> int:
    from autoprumux.search import Searcher

    searcher = Searcher(settings)
    print(
        f"study {searcher.name} in {searcher.storage_url}; MLflow {searcher.tracking_uri} "
        f"(experiment autoprumux/{searcher.name})",
        flush=True,
    )
    searcher.run()
    print(searcher.report())
    if not args.no_register:
        uri = searcher.register()
        if uri:
            print(f"recommender registered as {uri} (serve it: autoprumux serve)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from autoprumux.search import SearchSpace, check_budget

    check_budget(args.budget)
    space = SearchSpace.from_yaml(args.space).with_task(args.task)
    return _run_search(args, _search_settings(args, space, args.trials))


def cmd_worker(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from autoprumux.search import SearchSpace, check_budget
    from autoprumux.search._study import load_study_attrs

    check_budget(args.budget)
    if not args.study_name:
        raise AutoPruMuxError("worker: --study-name is required (the study to join)")
    if args.trials is not None and args.trials < 1:
        raise AutoPruMuxError(
            f"--trials ({args.trials}) must be a positive integer (omit it for the study's target)"
        )
    attrs = load_study_attrs(args.storage, args.study_name)
    space = SearchSpace.from_dict(attrs["space"], source=f"study {args.study_name}")
    trials = args.trials if args.trials is not None else int(attrs.get("target_trials", 24))
    # joined workers seed their samplers apart, or they propose the same configurations
    settings = replace(_search_settings(args, space, trials), worker_offset=os.getpid())
    return _run_search(args, settings)


def cmd_recommend(args: argparse.Namespace) -> int:
    from autoprumux.search import check_budget, recommend

    budget = check_budget(args.budget)
    rec = recommend(
        budget,
        args.task,
        model=args.model,
        device=args.device,
        storage=args.storage,
        study=args.study_name,
    )
    print(json.dumps(rec.to_dict(), indent=2) if args.json_out else rec.describe())
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from autoprumux.search import _tracking as tracking

    _check_port(args.port)
    _warn_non_loopback(args.host)
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    cmd += ["--host", args.host, "--port", str(args.port)]
    print(f"MLflow dashboard on http://{args.host}:{args.port} over {uri} (Ctrl-C stops it)")
    return _exec(cmd, {})


def cmd_serve(args: argparse.Namespace) -> int:
    """The registered recommender behind MLflow's scoring app, in this process (so Ctrl-C or
    SIGTERM stops the listener with it), with a request guard in front (see _serving)."""
    from autoprumux.search import _serving
    from autoprumux.search import _tracking as tracking

    # everything cheap first: no store is opened and nothing fetched for a bad argument
    _check_port(args.port)
    model_uri = args.model_uri or f"models:/{_serving.REGISTERED_NAME}/latest"
    _serving.check_model_uri(model_uri)
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        tracking.check_reachable(uri, timeout=3.0)  # MLflow's client retries for minutes
    _warn_non_loopback(args.host)
    return _serving.serve(model_uri, tracking_uri=uri, host=args.host, port=args.port)


def cmd_serve_students(args: argparse.Namespace) -> int:
    from autoprumux.errors import ConfigError
    from autoprumux.models import StudentConfig
    from autoprumux.serving import (
        AdaptivePolicy,
        FixedPolicy,
        KPolicy,
        PolicyConfig,
        ServingConfig,
        StudentServer,
        check_loopback,
        meta_accuracy_losses,
        profile_operating_points,
        student_accuracy_losses,
    )

    # validate everything cheap before any data is read or any student trained
    cfg = StudentConfig(k=args.students, depth=args.depth)
    if args.fixed_k is not None and not 1 <= args.fixed_k <= cfg.k:
        raise ConfigError(f"--fixed-k ({args.fixed_k}) must be between 1 and --students ({cfg.k})")
    policy_cfg = PolicyConfig(slo_ms=args.slo_ms, hold_s=args.hold_s)
    source = args.accuracy_from or ("none" if args.skip_dev_eval else "dev")
    if args.skip_dev_eval and source != "none":
        raise ConfigError(f"--skip-dev-eval contradicts --accuracy-from {source}; give one of them")
    recipe = _recipe(args)
    serving = ServingConfig(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_seq_len=recipe.max_seq_len,
        max_chars=args.max_chars,
        max_texts=args.max_texts,
    )
    try:
        check_loopback(args.host)
    except ConfigError:
        print(
            f"autoprumux: warning: {args.host} is not loopback; the endpoint is reachable from the network",
            file=sys.stderr,
        )
    pipe = _pipeline(args, recipe)
    layers = len(pipe.base.config.heads)
    if cfg.depth >= layers:
        raise ConfigError(f"--depth ({cfg.depth}) must be below the base model's {layers} layers")
    ens = pipe.students(cfg.k, cfg.depth)
    losses: dict[int, float] | None = None
    if source == "meta":
        from autoprumux.search import build_recommender

        losses = meta_accuracy_losses(
            build_recommender(args.storage),
            k=cfg.k,
            depth=cfg.depth,
            task=pipe.task.name,
            device=args.device,
        )
    elif source == "dev":
        losses = student_accuracy_losses(pipe, ens)
    texts = [
        (e.text_a, e.text_b) if e.text_b is not None else e.text_a for e in pipe.data.dev[:256]
    ]
    points = profile_operating_points(
        ens,
        pipe.tokenizer,
        texts,
        max_batch=serving.max_batch,
        max_seq_len=serving.max_seq_len,
        device=args.device,
        accuracy_loss=losses,
    )
    policy: KPolicy = (
        FixedPolicy(args.fixed_k, points=points)
        if args.fixed_k is not None
        else AdaptivePolicy(points, policy_cfg)
    )
    server = StudentServer(
        ens,
        pipe.tokenizer,
        policy,
        config=serving,
        pair=pipe.task.pair,
        device=args.device,
        info={"task": pipe.task.name, "model": pipe.base.model_id},
    ).start()
    print(f"{'k':>3}{'ex/s':>10}{'acc loss':>10}   (profiled at batch {serving.max_batch})")
    for p in points.values():
        loss = "-" if p.accuracy_loss is None else f"{p.accuracy_loss:.2f}"
        print(f"{p.k:>3}{p.examples_per_second:>10.1f}{loss:>10}")
    mode = (
        f"fixed k={args.fixed_k}"
        if args.fixed_k is not None
        else f"adaptive, objective {args.slo_ms:g} ms"
    )
    print(
        f"serving K={cfg.k} students of depth {cfg.depth} ({pipe.task.name}, {mode}) on "
        f"{server.url}/predict (Ctrl-C stops it)",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.close()
    return 0


def _exec(cmd: list[str], env: dict[str, str]) -> int:
    """Run a server child in its own process group until it exits; Ctrl-C or SIGTERM to this
    process stop the whole group (mlflow's server forks workers that would outlive a plain
    terminate)."""
    import signal
    import subprocess

    # mlflow starts uvicorn/gunicorn by name: make this interpreter's bin directory findable
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PATH": path}, start_new_session=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        commands = {
            "search": cmd_search,
            "worker": cmd_worker,
            "recommend": cmd_recommend,
            "ui": cmd_ui,
            "serve": cmd_serve,
            "serve-students": cmd_serve_students,
        }
        if args.command in commands:
            return commands[args.command](args)
    except AutoPruMuxError as e:
        print(f"autoprumux: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser.error(f"unknown command {args.command!r}")
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
