"""Command line: evaluate, warmup, search, worker, recommend, ui, serve, serve-students, export,
predict.

Bad input exits with code 2 and a message naming the value. The flag groups are declared once
in `_flags`, the input checks live in `_checks`, and the commands in `_evaluate` (evaluate,
warmup), `_search` (search, worker, recommend), `_serve` (ui, serve, serve-students), `_export` and
`_predict`; nothing
here imports torch until a command runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from autoprumux.cli._checks import (
    _check_cache_dir,
    _check_output_file,
    _check_port,
    _student_args,
    _warn_non_loopback,
)
from autoprumux.cli._evaluate import _atomic_write, cmd_evaluate, cmd_warmup, format_table
from autoprumux.cli._export import add_export_parser, cmd_export
from autoprumux.cli._flags import (
    _pipeline,
    _recipe,
    add_common,
    add_data_flags,
    add_host,
    add_model_flags,
    add_mux_shape_flags,
    add_recipe_group,
    add_recommend_flags,
    add_sampler,
    add_search_common,
    add_serving_group,
    add_study_flags,
    add_task_data_flags,
    add_tracking_uri,
    recipe_flags,
)
from autoprumux.cli._predict import add_predict_parser, cmd_predict
from autoprumux.cli._search import cmd_recommend, cmd_search, cmd_worker
from autoprumux.cli._serve import _exec, cmd_serve, cmd_serve_students, cmd_ui
from autoprumux.errors import AutoPruMuxError

__all__ = [
    "EXIT_BAD_INPUT",
    "recipe_flags",
    "_atomic_write",
    "_check_cache_dir",
    "_check_output_file",
    "_check_port",
    "_exec",
    "_pipeline",
    "_recipe",
    "_student_args",
    "_warn_non_loopback",
    "build_parser",
    "cmd_evaluate",
    "cmd_export",
    "cmd_predict",
    "cmd_recommend",
    "cmd_search",
    "cmd_serve",
    "cmd_serve_students",
    "cmd_ui",
    "cmd_warmup",
    "cmd_worker",
    "format_table",
    "main",
]

EXIT_BAD_INPUT = 2

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "evaluate": cmd_evaluate,
    "warmup": cmd_warmup,
    "search": cmd_search,
    "worker": cmd_worker,
    "recommend": cmd_recommend,
    "ui": cmd_ui,
    "serve": cmd_serve,
    "serve-students": cmd_serve_students,
    "export": cmd_export,
    "predict": cmd_predict,
}


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
        "--precision",
        default="fp32",
        help="inference precision: fp32 or int8 on the CPU; fp32, tf32, bf16 or fp16 on CUDA",
    )
    add_mux_shape_flags(ev)
    ev.add_argument(
        "--active", default=None, help="run only the first k of the K students (default: all)"
    )
    ev.add_argument(
        "--json", dest="json_out", default=None, help="also write the result as JSON to this file"
    )
    add_common(ev)
    add_study_flags(ev)
    wu = sub.add_parser(
        "warmup",
        help="run (or reuse) the cached token-retrieval warm-up for one or more N, task-independent",
    )
    wu.add_argument("--mux", nargs="+", default=["2"], help="one or more widths N >= 2")
    add_common(wu)

    se = sub.add_parser(
        "search", help="run (or resume) an Optuna study over a search space, tracked in MLflow"
    )
    se.add_argument("--space", default="search_spaces/prumux.yaml", help="search space YAML file")
    se.add_argument("--task", default=None, help="overrides the space's task (or data)")
    add_task_data_flags(se)  # --data, its columns and --metric override the space's too
    se.add_argument("--trials", type=int, default=24, help="finished trials the study should hold")
    se.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="then export the recommendation within --budget to DIR (a new directory, or this "
        "command's earlier export, which is replaced; see `autoprumux export`) and register it "
        "unless --no-register",
    )
    add_sampler(se)
    add_search_common(se)

    wk = sub.add_parser(
        "worker", help="one more worker on an existing study (shared storage, e.g. PostgreSQL)"
    )
    wk.add_argument("--trials", type=int, default=None, help="default: the study's own target")
    add_sampler(wk, inherit=True)
    add_search_common(wk, inherit=True)

    rc = sub.add_parser(
        "recommend", help="the fastest configuration measured within an accuracy budget"
    )
    add_recommend_flags(rc)

    ui = sub.add_parser("ui", help="MLflow dashboard over the tracking store (127.0.0.1)")
    add_tracking_uri(ui)
    add_host(ui)
    ui.add_argument("--port", type=int, default=5000)

    sv = sub.add_parser(
        "serve", help="serve the registered recommender (MLflow scoring server, 127.0.0.1)"
    )
    add_tracking_uri(sv)
    sv.add_argument(
        "--model-uri",
        default=None,
        help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/PATH or a model directory "
        "(default: models:/autoprumux-recommender/latest)",
    )
    add_host(sv)
    sv.add_argument("--port", type=int, default=5001, help="1..65535 (default: 5001)")

    ss = sub.add_parser(
        "serve-students",
        help="serve K boosted students over HTTP (127.0.0.1), lowering K under load bursts",
    )
    ss.add_argument("--students", type=int, default=4, help="K students (default: 4)")
    ss.add_argument("--depth", type=int, default=2, help="layers per student (default: 2)")
    add_model_flags(ss)
    add_data_flags(ss)
    ss.set_defaults(mux_variant="gaussian", warmup_corpus="shared")
    add_recipe_group(ss, "finds or builds the cached ensemble")
    add_serving_group(ss)
    add_export_parser(sub)
    add_predict_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for model cards
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command = COMMANDS.get(args.command)
    if command is None:
        parser.error(f"unknown command {args.command!r}")
    try:
        return command(args)
    except AutoPruMuxError as e:
        print(f"autoprumux: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
