"""`autoprumux ui` (the MLflow dashboard), `serve` (the registered recommender) and
`serve-students` (K boosted students behind an adaptive queue), all on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux.cli._checks import _check_port, _warn_non_loopback
from autoprumux.cli._flags import _pipeline, _recipe, parse_config

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from autoprumux.student_server import OperatingPoint, PointKey


def cmd_ui(args: argparse.Namespace) -> int:
    from autoprumux import tracking

    _check_port(args.port)
    _warn_non_loopback(args.host)
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    tracking.make_store_dir(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    cmd += ["--host", args.host, "--port", str(args.port)]
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow dashboard on {base} over {uri} (Ctrl-C stops it)")
    for line in _study_pages(tracking.client(uri), base):
        print(line)
    return _exec(cmd, {})


def _study_pages(cl: Any, base: str) -> list[str]:
    """The latest study's pages: its trials (flat, by speedup, with their losses, speedup and
    configuration as columns: the saved view, stored on the experiment here) and its Pareto
    front. A store that refuses the view's tag still gets the plain page of the runs."""
    from mlflow.exceptions import MlflowException

    from autoprumux import tracking

    run = tracking.newest_study_run(cl)
    if run is None:
        return []
    exp, rid = str(run.info.experiment_id), str(run.info.run_id)
    try:
        view = tracking.save_trials_view(cl, exp)
    except MlflowException as e:
        print(f"could not store the trials view on the experiment: {e}", file=sys.stderr)
        view = None
    lines = [f"the latest study's trials: {tracking.runs_page(base, exp, view)}"]
    pareto = tracking.PARETO_FIGURE
    try:
        logged = any(a.path == pareto for a in cl.list_artifacts(rid))
    except Exception:  # noqa: BLE001 - an artefact store this process cannot read: no link
        logged = False
    if logged:
        lines.append(f"its Pareto front: {tracking.artifact_page(base, exp, rid, pareto)}")
    return lines


def cmd_serve(args: argparse.Namespace) -> int:
    """The registered recommender behind MLflow's scoring app, in this process (so Ctrl-C or
    SIGTERM stops the listener with it), with a request guard in front (see serving._server)."""
    from autoprumux import tracking
    from autoprumux.serving import _pyfunc, _server

    # everything cheap first: no store is opened and nothing fetched for a bad argument
    _check_port(args.port)
    model_uri = args.model_uri or f"models:/{_pyfunc.REGISTERED_NAME}/latest"
    _pyfunc.check_model_uri(model_uri)
    uri = tracking.resolve_tracking_uri(args.tracking_uri)  # a server must answer within 3 s
    _warn_non_loopback(args.host)
    return _server.serve(model_uri, tracking_uri=uri, host=args.host, port=args.port)


def cmd_serve_students(args: argparse.Namespace) -> int:
    from autoprumux.errors import ConfigError
    from autoprumux.models import StudentConfig
    from autoprumux.student_server import (
        AdaptivePolicy,
        FixedPolicy,
        PointLosses,
        PolicyConfig,
        ServingConfig,
        ServingPolicy,
        StudentServer,
        is_loopback,
        meta_accuracy_losses,
        model_accuracy_losses,
        profile_operating_points,
        student_accuracy_losses,
        within_budget,
    )

    # validate everything cheap before any data is read or any student trained
    cfg = StudentConfig(k=args.students, depth=args.depth)
    if args.fixed_k is not None and not 1 <= args.fixed_k <= cfg.k:
        raise ConfigError(f"--fixed-k ({args.fixed_k}) must be between 1 and --students ({cfg.k})")
    policy_cfg = PolicyConfig(slo_ms=args.slo_ms, hold_s=args.hold_s)
    source = args.accuracy_from or ("none" if args.skip_dev_eval else "dev")
    if args.skip_dev_eval and source != "none":
        raise ConfigError(f"--skip-dev-eval contradicts --accuracy-from {source}; give one of them")
    also = {c.describe(): c for c in map(parse_config, args.also or [])}
    if source == "none" and (also or args.budget is not None):
        flag = "--also" if also else "--budget"
        raise ConfigError(
            f"{flag} needs each point's accuracy loss; use --accuracy-from dev (the default) or "
            "meta, not --skip-dev-eval"
        )
    recipe = _recipe(args)
    serving = ServingConfig(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        # the recipe's when set; one from the data is known once the pipeline has read it
        **({"max_seq_len": recipe.max_seq_len} if recipe.max_seq_len is not None else {}),
        max_chars=args.max_chars,
        max_texts=args.max_texts,
    )
    if not is_loopback(args.host):
        print(
            f"autoprumux: warning: {args.host} is not loopback; the endpoint is reachable from the network",
            file=sys.stderr,
        )
    pipe = _pipeline(args, recipe)
    serving = replace(serving, max_seq_len=pipe.max_seq_len)  # as the model was trained
    layers = len(pipe.base.config.heads)
    if cfg.depth >= layers:
        raise ConfigError(f"--depth ({cfg.depth}) must be below the base model's {layers} layers")
    for c in also.values():
        pipe.check(c)
    ens = pipe.students(cfg.k, cfg.depth)
    models = {name: pipe.deployable(c) for name, c in also.items()}
    # measured: the validation loss chooses (order, budget), the dev loss reports; predicted:
    # the meta-model's loss chooses as it is
    losses: dict[PointKey, float | PointLosses] | None = None
    if source == "meta":
        from autoprumux.meta import build_recommender

        predicted = meta_accuracy_losses(
            build_recommender(args.storage),
            k=cfg.k,
            depth=cfg.depth,
            task=pipe.task.name,
            configs=also,
            device=args.device,
        )
        losses = {key: PointLosses.predicted(v) for key, v in predicted.items()}
    elif source == "dev":
        losses = {**student_accuracy_losses(pipe, ens), **model_accuracy_losses(pipe, models)}
    texts = [
        (e.text_a, e.text_b) if e.text_b is not None else e.text_a for e in pipe.data.dev[:256]
    ]
    profiled = profile_operating_points(
        ens,
        pipe.tokenizer,
        texts,
        models=models,
        max_batch=serving.max_batch,
        max_seq_len=serving.max_seq_len,
        device=args.device,
        accuracy_loss=losses,
    )
    points = profiled if args.budget is None else within_budget(profiled, args.budget)
    if args.budget is not None and args.fixed_k is not None and args.fixed_k not in points:
        raise ConfigError(
            f"--fixed-k {args.fixed_k} loses more than the budget of {args.budget:g} points on "
            f"{profiled[args.fixed_k].chosen_on}; "
            f"choose one of {[k for k in points if isinstance(k, int)]} or raise --budget"
        )
    policy: ServingPolicy = (
        FixedPolicy(args.fixed_k, points=points)
        if args.fixed_k is not None
        else AdaptivePolicy(points, policy_cfg)
    )
    served = {key: p for key, p in points.items() if key in policy.keys or key == args.fixed_k}
    server = StudentServer(
        ens,
        pipe.tokenizer,
        policy,
        models={name: m for name, m in models.items() if name in served},
        config=serving,
        pair=pipe.task.pair,
        device=args.device,
        info={"task": pipe.task.name, "model": pipe.base.model_id},
        label_names=pipe.task.label_names,
    ).start()
    print(points_table(profiled, points, policy.keys, serving.max_batch))
    mode = (
        f"fixed k={args.fixed_k}"
        if args.fixed_k is not None
        else f"adaptive, objective {args.slo_ms:g} ms"
    )
    print(
        f"serving K={cfg.k} students of depth {cfg.depth}"
        + (
            f" and {len(server.batcher.models)} more configurations"
            if server.batcher.models
            else ""
        )
        + f" ({pipe.task.name}, {mode}) on {server.url}/predict (Ctrl-C stops it)",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.close()
    return 0


def points_table(
    profiled: Mapping[PointKey, OperatingPoint],
    kept: Collection[PointKey],
    used: Collection[PointKey],
    max_batch: int,
) -> str:
    """The operating-point table serve-students prints: each point's examples/second, its
    validation loss (what chose) and dev loss (reported) or its predicted loss, and why it is
    not used (over the budget: not in `kept`; dominated: not in `used`); then a line saying
    which loss chose."""
    from autoprumux.student_server import PREDICTED, chosen_line, table_chosen_on

    on = table_chosen_on(profiled)
    last = "pred loss" if on == PREDICTED else "dev loss"
    width = max(len(p.name) for p in profiled.values()) + 2
    lines = [
        f"{'point':<{width}}{'ex/s':>10}{'val loss':>10}{last:>10}   "
        f"(profiled at batch {max_batch})"
    ]
    for key, p in profiled.items():
        val = "-" if p.validation_loss is None else f"{p.validation_loss:.2f}"
        loss = "-" if p.accuracy_loss is None else f"{p.accuracy_loss:.2f}"
        note = (
            ""
            if key in used
            else f"   (over the budget on {on})"
            if key not in kept
            else "   (not used: another point is faster and as accurate)"
        )
        lines.append(f"{p.name:<{width}}{p.examples_per_second:>10.1f}{val:>10}{loss:>10}{note}")
    chosen = chosen_line(on)
    return "\n".join([*lines, *([chosen] if chosen else [])])


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
