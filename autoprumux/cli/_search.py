"""`autoprumux search`, `worker` (one more process on a shared study) and `recommend` (the
fastest configuration measured within an accuracy budget)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from autoprumux.cli._checks import _check_cache_dir
from autoprumux.cli._flags import _task_data
from autoprumux.errors import AutoPruMuxError

if TYPE_CHECKING:
    from autoprumux.search import Searcher, SearchSettings, SearchSpace


def _search_settings(args: argparse.Namespace, space: SearchSpace, trials: int) -> SearchSettings:
    from autoprumux.config import check_budget
    from autoprumux.evaluation import ThroughputConfig
    from autoprumux.search import SearchSettings

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
        prior=tuple(args.prior),
        force=args.force,
    )


def _run_search(args: argparse.Namespace, settings: SearchSettings) -> int:
    from autoprumux.search import Searcher

    searcher = Searcher(settings)
    print(
        f"study {searcher.name} in {searcher.storage_url}; MLflow {searcher.tracking_uri} "
        f"(experiment autoprumux/{searcher.name})",
        flush=True,
    )
    note = getattr(searcher.pipeline(searcher.variants[0]), "max_seq_len_note", None)
    if note:
        print(f"({note})", flush=True)
    searcher.run()
    if searcher.baseline_noise is not None:  # the baseline beside the dev set's yardsticks
        print(searcher.baseline_noise.describe())
    if searcher.baseline_convergence is not None:
        print(f"({searcher.baseline_convergence})")
    print(searcher.report())
    if not args.no_register:
        _register(searcher)
    if getattr(args, "export", None) is not None:
        _export_recommendation(args, searcher)
    return 0


def _register(searcher: Searcher) -> None:
    """Fit the recommender on every finished trial in the storage and register it in MLflow
    under the study's parent run (see `serving.register_if_new`)."""
    from autoprumux.serving._pyfunc import register_if_new

    uri = register_if_new(searcher.storage_url, searcher.tracking_uri, searcher.parent_run_id)
    if uri:
        searcher.close_parent()  # logging the model reopened the run
        print(f"recommender registered as {uri} (serve it: autoprumux serve)")


def _export_recommendation(args: argparse.Namespace, searcher: Searcher) -> None:
    """`search --export DIR`: the recommendation within the budget from the study just run (on
    this machine's trials), exported (and registered) like `autoprumux export --study NAME
    --budget B`, then what to do with it."""
    import shlex

    from autoprumux.export import export_model, from_budget, register_export
    from autoprumux.meta import recommend
    from autoprumux.tracking import default_storage

    budget = searcher.s.budget
    rec = recommend(budget, storage=searcher.storage_url, study=searcher.name)
    print("\n" + rec.describe())
    try:
        choice = from_budget(searcher.storage_url, searcher.name, budget)
    except AutoPruMuxError as e:  # only the baseline is within the budget: nothing to export
        print(f"nothing exported to {args.export}: {e}")
        return
    pipe = searcher.pipeline(choice.config.mux_variant)
    res = export_model(
        pipe,
        choice.config,
        args.export,
        throughput=searcher.s.throughput,
        source=choice.source,
        force=True,
        command=shlex.join(["autoprumux", *getattr(args, "argv", [])]),
    )
    m = res.manifest.measurement
    print(
        f"\nexported {choice.config.describe()} to {res.path}: {m.metric_label} {m.metric:.2f} "
        f"(loss {m.accuracy_loss:.2f} points on dev), {m.speedup:.2f}x the baseline's throughput"
    )
    if not args.no_register:
        print(f"registered as {register_export(res.path, tracking_uri=searcher.tracking_uri)}")
    storage = (
        ""
        if searcher.storage_url == default_storage()
        else f" --storage {shlex.quote(searcher.storage_url)}"
    )
    print(
        "next:\n"
        "  autoprumux ui                      # the study's trials in the MLflow dashboard\n"
        f"  autoprumux recommend --study {shlex.quote(searcher.name)}{storage} --budget "
        f"{budget:g}   # this answer again (the store may hold other studies)\n"
        f"  autoprumux predict {shlex.quote(str(res.path))} --input texts.csv --output scored.csv\n"
        f'  python -c "import autoprumux; print(autoprumux.load({str(res.path)!r})'
        ".predict(['a gripping film']).labels)\""
    )


def cmd_search(args: argparse.Namespace) -> int:
    from autoprumux.config import check_budget
    from autoprumux.search import SearchSpace

    args.budget = check_budget(args.budget)  # checked here, trusted from here on
    if args.export is not None:  # before the search: a taken directory is refused at once
        from autoprumux.export import check_out_dir

        # a rerun replaces its own earlier export (only a directory holding one)
        check_out_dir(args.export, force=True)
    task, data = _task_data(args)
    space = SearchSpace.from_yaml(args.space).with_task(
        task, data=data, metric=args.metric, pos_label=args.pos_label
    )
    return _run_search(args, _search_settings(args, space, args.trials))


def cmd_worker(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from autoprumux.config import check_budget
    from autoprumux.search import SearchSettings, SearchSpace
    from autoprumux.tracking import load_study_attrs

    if args.budget is not None:
        args.budget = check_budget(args.budget)  # checked here, trusted from here on
    if not args.study_name:
        raise AutoPruMuxError("worker: --study-name is required (the study to join)")
    if args.trials is not None and args.trials < 1:
        raise AutoPruMuxError(
            f"--trials ({args.trials}) must be a positive integer (omit it for the study's target)"
        )
    attrs = load_study_attrs(args.storage, args.study_name)
    space = SearchSpace.from_dict(attrs["space"], source=f"study {args.study_name}")
    trials = args.trials if args.trials is not None else int(attrs.get("target_trials", 24))
    # a flag left out takes the study's value; a given one that differs is refused by the
    # Searcher, like a resumed search's (a study from before these were recorded is refused
    # there for its machine)
    for key in ("sampler", "budget", "prune_margin"):
        if getattr(args, key) is None:
            setattr(args, key, attrs.get(key, getattr(SearchSettings, key)))
    # joined workers seed their samplers apart, or they propose the same configurations
    settings = replace(_search_settings(args, space, trials), worker_offset=os.getpid())
    return _run_search(args, settings)


def cmd_recommend(args: argparse.Namespace) -> int:
    from autoprumux.config import check_budget, check_margin_se
    from autoprumux.meta import recommend

    budget = check_budget(args.budget)
    margin_se = check_margin_se(args.margin_se)
    rec = recommend(
        budget,
        args.task,
        model=args.model,
        device=args.device,
        storage=args.storage,
        study=args.study_name,
        machine=args.machine,
        margin_se=margin_se,
    )
    print(json.dumps(rec.to_dict(), indent=2) if args.json_out else rec.describe())
    return 0
