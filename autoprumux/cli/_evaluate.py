"""`autoprumux evaluate` (one configuration beside the baseline) and `autoprumux warmup` (the
cached token-retrieval warm-up)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux._paths import new_file_mode
from autoprumux._selection import DEV_CHOSEN, describe_losses
from autoprumux.cli._checks import (
    _check_cache_dir,
    _check_mux_layers_fit,
    _check_output_file,
    _mux_shape_args,
    _student_args,
)
from autoprumux.cli._flags import _pipeline, _recipe, given_beside_study
from autoprumux.errors import AutoPruMuxError, ConfigError

if TYPE_CHECKING:
    from autoprumux.config import Candidate
    from autoprumux.evaluation import Evaluation
    from autoprumux.search import Searcher


def format_table(ev: Evaluation) -> str:
    """A readable two-row table: baseline and candidate with both losses (val loss: on the
    validation split, what a search chooses on; dev loss: what to expect) and speedup."""
    m = ev.metric_name
    head = (
        f"{'config':<20}{'sparsity':>9}{'N':>4}{m:>9}{'val loss':>10}{'dev loss':>10}{'ex/s':>10}"
        f"{'speedup':>9}{'ideal':>7}"
    )
    rows = [head, "-" * len(head)]
    for meas, sp, ideal in (
        (ev.baseline, 1.0, 1.0),
        (ev.candidate, ev.speedup, ev.ideal_speedup),
    ):
        cand = meas is ev.candidate
        # a loss or gain within its split's noise is not reported as one
        dev = (
            "in noise"
            if cand and ev.loss_within_noise
            else f"{ev.accuracy_loss if cand else 0.0:.2f}"
        )
        val = (
            "-"
            if ev.validation_loss is None
            else "in noise"
            if cand and ev.validation_loss_within_noise
            else f"{ev.validation_loss if cand else 0.0:.2f}"
        )
        rows.append(
            f"{meas.name:<20}{meas.sparsity:>9.3f}{meas.n:>4}{meas.metric:>9.2f}{val:>10}{dev:>10}"
            f"{meas.throughput:>10.1f}{sp:>8.2f}x{ideal:>6.2f}x"
        )
    tp = ev.throughput_config
    rows.append(
        f"(task {ev.task}, device {ev.device}, throughput at batch {tp.batch_size} x {tp.seq_len} tokens, median of {tp.repeats})"
    )
    if ev.pos_label is not None:  # which class "f1" means
        rows.append(f"(metric {ev.metric_label})")
    return "\n".join(rows + baseline_lines(ev) + stage_lines(ev))


def baseline_lines(ev: Evaluation) -> list[str]:
    """Where the baseline comes from, how far its score stands from chance on this dev set, and
    whether the candidate's difference from it is within noise."""
    out = []
    if ev.baseline_origin == "given":
        out.append("(baseline: your own fine-tuned classifier, used as is: not trained here)")
    elif ev.baseline_convergence is not None:
        out.append(f"({ev.baseline_convergence})")
    if ev.validation_loss is None:
        out.append(f"({DEV_CHOSEN})")
    elif ev.validation_loss_se is not None:
        out.append(
            f"(validation loss {ev.validation_loss:.2f} +-{ev.validation_loss_se:.2f} points (paired "
            f"standard error); a search compares {ev.selection_loss:.2f} with its budget)"
        )
    noise = ev.noise
    if noise is None:
        return out
    out.append(f"({noise.describe()})")
    if ev.validation_noise is not None:
        out.append(f"({ev.validation_noise.describe()})")
    if ev.loss_within_noise:
        loss = ev.accuracy_loss
        what = "loss" if loss > 0 else "gain"
        out.append(
            f"(the candidate's {what} of {abs(loss):.2f} points is within noise "
            f"(+-{ev.loss_margin:.2f}): not told apart from the baseline's score)"
        )
    if noise.near_majority:
        out.append(f"WARNING: {noise.warning()}")
    return out


def stage_lines(ev: Evaluation) -> list[str]:
    """One line per training stage of the candidate: converged on its validation plateau, or
    stopped by its cap (the recipe field to raise), or trained unvalidated (and why)."""
    return [f"({line})" for line in ev.stage_convergence]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from autoprumux.config import check_precision
    from autoprumux.evaluation import ThroughputConfig

    if getattr(args, "study", None) is not None:
        return _evaluate_in_study(args)
    # validate everything cheap before any work starts
    config = _candidate(args)
    check_precision(args.precision, args.device)  # an unknown name is not offered either
    recipe = _recipe(args)
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
    )
    if args.json_out:
        _check_output_file("--json", args.json_out)
    _check_mux_layers_fit(config.mux_layers, args.model)
    pipe = _pipeline(args, recipe)
    active = _student_args(args)[2] if config.technique == "students" else None
    ev = pipe.evaluate(config, throughput=tp, active=active)
    print(format_table(ev))
    r = pipe.recipe
    stop = [] if pipe.stopping_items is pipe.validation_items else pipe.stopping_items
    print(
        f"(data: {len(pipe.train_items) + len(pipe.validation_items) + len(stop)} training "
        f"examples ({len(pipe.validation_items)} held out for validation"
        + (f", {len(stop)} to stop training" if stop else "")
        + f"), batch {r.batch_size} "
        f"({r.batching}, {pipe.train_autocast} forward); "
        + (
            "baseline: your model, used as is"
            if pipe.baseline_origin == "given"
            else f"baseline at most {r.finetune_steps} steps"
        )
        + (
            f"; {r.student_steps} boosting steps per student + {r.student_stacking_steps} "
            "stacking steps"
            + (
                f" ({r.student_stacking_focus:g} on the full sum)"
                if r.student_stacking_focus
                else ""
            )
            + f", {r.student_pooling} pooling"
            + (f", + {r.student_unlabeled} corpus sentences" if r.student_unlabeled else "")
            if config.technique == "students"
            else ""
        )
        + (
            f"; late mux (k={config.mux_layers}, {config.mux_combiner}) fine-tune "
            f"{r.mux_finetune_steps} steps from the baseline"
            if config.mux_shape.late
            else f"; mux warm-up {r.mux_warmup_steps} + fine-tune {r.mux_finetune_steps} steps"
            if config.mux > 1
            else ""
        )
        + (
            f"; pruning in {r.prune_stages} stages + {r.recovery_steps} recovery steps"
            if config.sparsity > 0
            else ""
        )
        + f"; cache {pipe.cache.root})"
    )
    print(f"({pipe.max_seq_len_note})")
    if args.json_out:
        _atomic_write(Path(args.json_out), json.dumps(ev.to_dict(), indent=2))
    return 0


def _candidate(args: argparse.Namespace) -> Candidate:
    """The configuration the flags describe (checked where it enters: before any work)."""
    from autoprumux.config import Candidate, validate_candidate

    if args.students is not None:
        k, depth, _ = _student_args(args)
        _mux_shape_args(args, 1)  # students are N=1: per-instance layers are refused
        return Candidate(
            technique="students", students=k, student_depth=depth, precision=args.precision
        )
    sparsity, n = validate_candidate(args.sparsity, args.mux)
    layers, combiner = _mux_shape_args(args, n)
    return Candidate(
        sparsity=sparsity,
        mux=n,
        mux_variant=args.mux_variant,
        precision=args.precision,
        mux_layers=layers,
        mux_combiner=combiner,
    )


def _evaluate_in_study(args: argparse.Namespace) -> int:
    """`evaluate --study NAME`: the configuration as a new trial of the study, measured with
    everything the study fixes (see `search._measure`)."""
    from autoprumux import tracking
    from autoprumux.search import Searcher
    from autoprumux.search._measure import measure, settings_from_study

    study = tracking.check_study_name(args.study)
    given = given_beside_study(args)
    if given:
        raise ConfigError(
            f"{' '.join(given)} given beside --study {study}: the study fixes its task or data, "
            "model, recipe, device and throughput timing, and its trials are measured with "
            "them; drop these flags (or measure outside the study, without --study)"
        )
    config = _candidate(args)
    if args.json_out:
        _check_output_file("--json", args.json_out)
    _check_cache_dir(args.cache_dir)
    attrs = tracking.load_study_attrs(args.storage, study)
    settings = settings_from_study(
        attrs, study, args.storage, data_dir=args.data_dir, cache_dir=args.cache_dir
    )
    settings.space.check_member(config)  # before the baseline is loaded
    searcher = Searcher(settings)  # refuses another machine, recipe, sampler, budget or margin
    trial = measure(searcher, config)
    print(_trial_report(searcher, trial))
    if args.json_out:
        record = {
            "study": searcher.name,
            "trial": trial.number,
            "state": trial.state.name,
            **{k: v for k, v in trial.user_attrs.items() if k != "requested"},
        }
        _atomic_write(Path(args.json_out), json.dumps(record, indent=2))
    return 1 if trial.state.name == "FAIL" else 0


def _trial_report(searcher: Searcher, trial: Any) -> str:
    """What a measured trial of the study found, and where it is tracked."""
    from autoprumux.config import Candidate

    ua = trial.user_attrs
    config = Candidate.from_dict(ua["config"]) if "config" in ua else None
    head = (
        f"study {searcher.name}: trial {trial.number}, "
        f"{config.describe() if config else '-'}: {trial.state.name}"
    )
    budget = searcher.s.budget
    lines = [head]
    if trial.state.name == "COMPLETE":
        from autoprumux.search._record import trial_loss

        within = "within" if (trial_loss(trial) or 0.0) <= budget else "outside"
        losses = describe_losses(
            ua["accuracy_loss"], ua.get("validation_loss"), ua.get("validation_loss_se")
        )
        lines += [
            f"  {ua.get('metric_name', 'metric')} {ua['metric']:.2f} on dev (baseline "
            f"{ua['baseline_metric']:.2f}): {losses}, {within} the study's budget of {budget:g}",
            f"  speedup {ua['speedup']:.2f}x (ideal {ua['ideal_speedup']:.2f}x): "
            f"{ua['throughput']:.1f} examples/s, {ua['latency_ms']:.2f} ms a batch",
        ]
        # how each training stage stopped (`search._record.record_evaluation`)
        lines += [f"  {st['line']}" for st in ua.get("stage_training", [])]
    elif trial.state.name == "PRUNED":
        losses = describe_losses(
            ua.get("accuracy_loss", float("nan")),
            ua.get("validation_loss"),
            ua.get("validation_loss_se"),
        )
        lines.append(
            f"  stopped early before its last step: {losses}, more than "
            f"{searcher.s.prune_margin:g} above the study's budget of {budget:g}"
        )
    elif trial.state.name == "FAIL":
        lines.append(f"  failed: {trial.system_attrs.get('fail_reason', 'see its MLflow run')}")
    else:
        lines.append("  another worker of the study took it first: `autoprumux ui` shows it")
    if "mlflow_run_id" in ua:
        lines.append(
            f"  MLflow run {ua['mlflow_run_id']} (experiment autoprumux/{searcher.name}, "
            f"{searcher.tracking_uri})"
        )
    return "\n".join(lines)


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


def _atomic_write(path: Path, text: str) -> None:
    """`text` in `path` as UTF-8, written whole or not at all (a temporary file beside it,
    renamed), with the mode a plain `open` would give it; ConfigError when it cannot be."""
    mode = new_file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.")
    except OSError as e:
        raise ConfigError(
            f"cannot write {str(path)!r} ({e.strerror}); choose another path"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise ConfigError(
                f"cannot write {str(path)!r} ({e.strerror}); choose another path"
            ) from None
        raise
