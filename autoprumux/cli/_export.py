"""`autoprumux export`: one configuration (explicit, a study's trial, or a study's
recommendation within a budget) as a deployable directory, registered in MLflow."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from typing import Any

from autoprumux._selection import SELECTION_STANDARD_ERRORS
from autoprumux.cli._checks import _check_mux_layers_fit, _mux_shape_args, _student_args
from autoprumux.cli._flags import (
    DATA_FLAGS,
    _pipeline,
    _recipe,
    add_common,
    add_margin_se,
    add_mux_shape_flags,
    add_storage,
    add_tracking_uri,
)
from autoprumux.config import Recipe, check_margin_se
from autoprumux.deploy._manifest import MODEL_FORMATS, default_format
from autoprumux.errors import ConfigError

# what a study decides: given with --study, these flags would be silently ignored
_STUDY_DECIDES = (
    "task",
    "data",
    *DATA_FLAGS,
    "metric",
    "pos_label",
    "model",
    "sparsity",
    "mux",
    "students",
    "precision",
    "mux_variant",
    "mux_layers",
    "mux_combiner",
    "preset",
    *(f.name for f in fields(Recipe)),
)


def add_export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write one configuration as a deployable directory (weights, tokenizer, model "
        "card) and register it in MLflow",
    )
    ex.add_argument("--out", required=True, help="the directory to create (new or empty)")
    ex.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export at --out; refused, naming them, if it holds files "
        "export did not write",
    )
    ex.add_argument(
        "--format",
        choices=MODEL_FORMATS,
        default=None,
        help="default: the format the configuration was measured in (openvino for the "
        "precisions ov-fp32 and ov-int8, torch for the others). torch: safetensors weights, run "
        "by torch in the exported precision; onnx: the fp32 model as model.onnx, run by ONNX "
        "Runtime without torch (N=1 fp32 models and students; pip install 'autoprumux[onnx]'); "
        "openvino: the ov-fp32 / ov-int8 graph as OpenVINO IR, run by OpenVINO without torch",
    )
    g = ex.add_argument_group(
        "what to export: --study with --trial or --budget, or an explicit configuration "
        "(--sparsity/--mux or --students)"
    )
    g.add_argument(
        "--study",
        "--study-name",
        dest="study",
        default=None,
        help="a study in --storage; its task, model and recipe are used",
    )
    g.add_argument("--trial", type=int, default=None, help="with --study: this finished trial")
    g.add_argument(
        "--budget",
        default=None,
        help="with --study: the fastest configuration measured within this accuracy loss "
        "(points), as `autoprumux recommend` answers",
    )
    add_margin_se(g, default=None)
    add_storage(g)
    g.add_argument("--sparsity", default=None, help="fraction of encoder parameters to remove")
    g.add_argument("--mux", default=None, help="multiplexing width N >= 1 (default: 1)")
    g.add_argument("--students", default=None, help="K Academus students instead of PruMUX")
    g.add_argument("--student-depth", default="2", help="layers per student: 1, 2 or 3")
    g.add_argument(
        "--precision",
        default=None,
        help="fp32 (default) or int8 on the CPU; fp32, tf32, bf16 or fp16 on CUDA. Weights are "
        "stored in fp32 and converted when loaded",
    )
    add_mux_shape_flags(g, unset=True)
    add_common(ex)
    # unset unless given, so that a flag given beside --study is refused, not ignored
    ex.set_defaults(task=None, mux_variant=None, preset=None, active=None)
    r = ex.add_argument_group("MLflow registry")
    add_tracking_uri(r)
    r.add_argument("--no-register", action="store_true", help="do not log and register it")
    r.add_argument(
        "--registered-name", default=None, help="registered model name (default: autoprumux-<task>)"
    )


def _explicit_config(args: argparse.Namespace) -> Any:
    from autoprumux.config import Candidate, validate_candidate

    precision = args.precision or "fp32"
    if args.students is not None:
        if args.sparsity is not None or args.mux is not None:
            raise ConfigError("give --students or --sparsity/--mux, not both")
        _mux_shape_args(args, 1)  # --mux-layers/--mux-combiner: refused, they need N > 1
        k, depth, _ = _student_args(args)
        return Candidate(technique="students", students=k, student_depth=depth, precision=precision)
    if args.sparsity is None and args.mux is None:
        raise ConfigError(
            "say what to export: --sparsity S --mux N (or --students K), or --study NAME with "
            "--trial N or --budget B"
        )
    sparsity, n = validate_candidate(args.sparsity or 0.0, args.mux or 1)
    mux_layers, mux_combiner = _mux_shape_args(args, n)
    return Candidate(
        sparsity=sparsity,
        mux=n,
        mux_variant=args.mux_variant or "gaussian",
        precision=precision,
        mux_layers=mux_layers,
        mux_combiner=mux_combiner,
    )


def cmd_export(args: argparse.Namespace) -> int:
    """`_export`, stopped cleanly by Ctrl-C or SIGTERM: the temporary directory is removed
    (`export_model`), one line says what was left, and the exit code is 128 + the signal's."""
    import signal
    import threading

    stopped: list[int] = []

    def on_sigterm(signum: int, _frame: object) -> None:
        stopped.append(signum)
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    published: list[str] = []
    try:
        return _export(args, published)
    except KeyboardInterrupt:
        how = "SIGTERM" if stopped else "Ctrl-C"
        left = (
            f"{published[0]} was written but not registered in MLflow"
            if published
            else f"nothing was written to {args.out}"
        )
        print(f"autoprumux: export stopped ({how}): {left}", file=sys.stderr)
        return 128 + (stopped[0] if stopped else signal.SIGINT)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _export(args: argparse.Namespace, published: list[str]) -> int:
    from autoprumux import tracking
    from autoprumux.config import ThroughputConfig, check_precision
    from autoprumux.export import (
        ExportSource,
        check_model_format,
        check_out_dir,
        export_model,
        from_budget,
        from_trial,
    )
    from autoprumux.export._pyfunc import check_registered_name, register_export

    # everything cheap first: nothing is read, built or written for a bad argument
    out = check_out_dir(args.out, args.force)
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
    )
    uri = None
    if not args.no_register:
        uri = tracking.resolve_tracking_uri(args.tracking_uri)  # a server must answer now
        if args.registered_name is not None:
            check_registered_name(args.registered_name)
    if args.study is not None:
        given = [f"--{k.replace('_', '-')}" for k in _STUDY_DECIDES if getattr(args, k) is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} do not apply with --study: the study's task, model, recipe "
                "and configuration are used"
            )
        if (args.trial is None) == (args.budget is None):
            raise ConfigError("with --study, give one of --trial N or --budget B")
        if args.margin_se is not None and args.budget is None:
            raise ConfigError(
                "--margin-se applies to --budget B (how sure the answer must be that it is "
                "within B); a --trial is exported as it is"
            )
        if args.trial is not None:
            choice = from_trial(args.storage, args.study, args.trial)
        else:
            margin = SELECTION_STANDARD_ERRORS if args.margin_se is None else args.margin_se
            choice = from_budget(args.storage, args.study, args.budget, check_margin_se(margin))
        config, source, recipe, space = (
            choice.config,
            choice.source,
            choice.space.recipe,
            choice.space,
        )
        own = space.data
        study_data = {
            "task": None if own is not None else space.task,
            "data": own.location if own is not None else None,
            **{k: getattr(own, k) if own is not None else None for k in DATA_FLAGS},
            "metric": space.metric,
            "pos_label": space.pos_label,
            "model": space.model,
        }
    else:
        if args.trial is not None or args.budget is not None or args.margin_se is not None:
            raise ConfigError(
                "--trial, --budget and --margin-se choose from a study: give --study NAME"
            )
        config, source = _explicit_config(args), ExportSource()
        recipe = _recipe(argparse.Namespace(**{**vars(args), "preset": args.preset or "fast"}))
        study_data = {}
        _check_mux_layers_fit(config.mux_layers, args.model)
    check_precision(config.precision, args.device)
    model_format = args.format or default_format(config)
    check_model_format(model_format, config)  # before the model is built
    pipe = _pipeline(
        argparse.Namespace(**{**vars(args), **study_data, "mux_variant": config.mux_variant}),
        recipe,
    )
    argv = getattr(args, "argv", None)
    command = shlex.join(["autoprumux", *argv]) if argv is not None else ""
    res = export_model(
        pipe,
        config,
        out,
        throughput=tp,
        source=source,
        force=args.force,
        command=command,
        model_format=model_format,
    )
    published.append(str(res.path))
    m = res.manifest.measurement
    print(
        f"exported {config.describe()} ({pipe.task.name}) to {res.path}: {m.metric_label} "
        f"{m.metric:.2f} (baseline {m.baseline_metric:.2f}, loss {m.accuracy_loss:.2f} pts on dev), "
        f"{m.speedup:.2f}x the baseline's throughput on {m.device}"
    )
    if uri is not None:
        model_uri = register_export(res.path, tracking_uri=uri, name=args.registered_name)
        print(
            f"registered as {model_uri} (serve it: mlflow models serve -m {model_uri} "
            "--env-manager local)"
        )
    return 0
