"""The command line's flag groups, each flag declared once and shared by the commands that take
it, and what the flags build (a Recipe, a pipeline). Torch-free: `--help` imports nothing heavy."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoprumux.cli._checks import _check_cache_dir
from autoprumux.config import SAMPLERS
from autoprumux.errors import ConfigError

if TYPE_CHECKING:
    from autoprumux.config import Candidate, Recipe
    from autoprumux.data import DataSource
    from autoprumux.pipeline import PruMuxPipeline

Container = argparse.ArgumentParser | argparse._ArgumentGroup


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{v!r} is not a boolean (use true or false)")


def recipe_flags() -> list[tuple[str, str, Callable[[str], Any], str]]:
    """One flag per Recipe field, generated from the field's metadata (`config._recipe`): (its
    group, the flag, how its text is read, its help with the default)."""
    from dataclasses import fields

    from autoprumux.config import Recipe

    out = []
    for f in fields(Recipe):
        kind = f.metadata["rule"].kind
        read = _bool if kind is bool else kind
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if f.default is not None:
            text = f"{text} (default: {f.default})"
        out.append((f.metadata["group"], "--" + f.name.replace("_", "-"), read, text))
    return out


def add_recipe_group(p: argparse.ArgumentParser, note: str) -> None:
    """The training recipe: a preset, and a flag for every Recipe field that overrides it,
    in one argument group per part of the recipe (`RECIPE_GROUPS`)."""
    from autoprumux.config import RECIPE_GROUPS, RECIPE_PRESETS

    g = p.add_argument_group(f"training recipe ({note}; defaults: Recipe)")
    g.add_argument(
        "--preset",
        default="fast",
        choices=sorted(RECIPE_PRESETS),
        help="named recipe the flags below start from: quick (the README's minutes-long main "
        "job: a 200-step baseline short of its plateau, one pruning stage), fast (Recipe's "
        "defaults: the baseline trained to its plateau on all examples) or accurate (2.5x the "
        "mux fine-tune, 13x the pruning recovery) (default: fast)",
    )
    groups = {name: p.add_argument_group(f"recipe: {what}") for name, what in RECIPE_GROUPS.items()}
    for group, flag, read, text in recipe_flags():
        groups[group].add_argument(flag, type=read, default=None, help=text)


def _recipe(args: argparse.Namespace) -> Recipe:
    """A Recipe from the preset and the recipe flags given (the flags win)."""
    from dataclasses import fields

    from autoprumux.config import Recipe

    given = {
        f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None
    }
    return Recipe.preset(args.preset, **given)


def add_model_flags(p: Container) -> None:
    """--task (or --data) and --model of the commands that train (evaluate, warmup,
    serve-students)."""
    p.add_argument(
        "--task", default=None, help="sst2 | cola | mrpc | qnli (default: sst2; not with --data)"
    )
    add_task_data_flags(p)
    p.add_argument(
        "--model",
        default=None,
        help="BERT checkpoint directory or hub name (default: packaged all-MiniLM-L6-v2)",
    )


# the flags that describe --data (a DataSource's fields), unset unless given
DATA_FLAGS = ("text_column", "pair_column", "label_column", "dev_fraction")


def add_task_data_flags(p: Container) -> None:
    """--data (the user's own labelled text instead of a GLUE --task), its columns and dev
    split, --metric and --pos-label (see README "Your own data")."""
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="your own text-classification data instead of --task: a CSV, TSV, JSONL or "
        "Parquet file, a directory with train.* and dev.* (or validation.*), or "
        "hf:NAME[/CONFIG] (Hugging Face datasets); columns text, label and optionally text_pair",
    )
    p.add_argument("--text-column", default=None, help="with --data: the text (default: text)")
    p.add_argument(
        "--pair-column",
        "--text-pair-column",
        dest="pair_column",
        default=None,
        help="with --data: the second text of a sentence pair (default: text_pair when present)",
    )
    p.add_argument(
        "--label-column",
        default=None,
        help="with --data: the label, strings or integers (default: label)",
    )
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=None,
        help="with --data and no dev split: the share of train held out as dev, stratified and "
        "deterministic, at most 2000 rows (default: 0.1)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="primary dev metric: accuracy | f1 | mcc (default: the task's own: accuracy, CoLA "
        "mcc); f1 is positive-class F1 for two classes, macro-F1 for more",
    )
    p.add_argument(
        "--pos-label",
        default=None,
        metavar="CLASS",
        help="with --metric f1 and two classes: the class scored as positive, named as in the "
        "data (default: the minority class of train with --data; GLUE's label 1 for a task)",
    )


def _task_data(args: argparse.Namespace) -> tuple[str | None, DataSource | None]:
    """(--task, None) or (None, the DataSource of --data and its flags): --data is the task, so
    an explicit --task beside it is refused rather than silently overridden."""
    from autoprumux.data import DataSource
    from autoprumux.errors import ConfigError

    task = getattr(args, "task", None)
    given = {k: getattr(args, k) for k in DATA_FLAGS if getattr(args, k, None) is not None}
    location = getattr(args, "data", None)
    if location is None:
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise ConfigError(f"{flag} describes --data; add --data PATH or drop {flag}")
        return task, None
    if task is not None:
        raise ConfigError(
            f"--data {location!r} and --task {task!r} both given: --data is the task (named "
            "after the file); drop --task"
        )
    return None, DataSource(location, **given)


def add_data_flags(p: Container) -> None:
    """Where training runs and what it reads and caches: --device, --data-dir, --data-source,
    --cache-dir."""
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


def add_warmup_corpus(p: Container) -> None:
    p.add_argument(
        "--warmup-corpus",
        default="shared",
        help="mux warm-up text: 'shared' (SST-2+CoLA+MRPC training text), 'task', or a text file",
    )


def add_throughput_group(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("throughput measurement")
    t.add_argument("--tp-batch", type=int, default=64, help="examples per timed pass")
    t.add_argument("--tp-seq-len", type=int, default=128, help="fixed padded sequence length")
    t.add_argument("--tp-repeats", type=int, default=10)


def add_common(p: argparse.ArgumentParser) -> None:
    """The flags of evaluate and warmup: what to train, on what, and how to time it."""
    add_model_flags(p)
    add_data_flags(p)
    p.add_argument("--mux-variant", default="gaussian", help="gaussian | orthogonal")
    add_warmup_corpus(p)
    add_recipe_group(p, "part of every cache key")
    add_throughput_group(p)


def add_study_flags(p: argparse.ArgumentParser) -> None:
    """evaluate --study NAME [--storage URL]: the configuration measured as a new trial of a
    study, everything else read from the study (see `given_beside_study`)."""
    g = p.add_argument_group("measuring in a study")
    g.add_argument(
        "--study",
        default=None,
        metavar="NAME",
        help="measure the configuration as a new trial of this study (autoprumux search's): "
        "its task or data, model, recipe, device, throughput settings, budget and sampler come "
        "from the study, and the trial is tracked with the study's in MLflow; refused on "
        "another machine than the study's",
    )
    add_storage(
        g, "with --study: the study's Optuna storage URL (default: sqlite:///autoprumux.db)"
    )


def given_beside_study(args: argparse.Namespace) -> list[str]:
    """The flags of `evaluate` that describe what a study already fixes (task, data, model,
    recipe, device, throughput timing), given beside --study: the flags unset by default, and
    those whose value is not their default (a default is taken as left out)."""
    probe = argparse.ArgumentParser(add_help=False)
    add_common(probe)
    defaults = vars(probe.parse_args([]))
    keep = ("mux_variant", "data_dir", "cache_dir")  # a configuration flag; paths of this checkout
    return [
        "--" + k.replace("_", "-")
        for k, d in defaults.items()
        if k not in keep and getattr(args, k, d) != d
    ] + (["--active"] if getattr(args, "active", None) is not None else [])


def add_mux_shape_flags(p: Container, *, unset: bool = False) -> None:
    """--mux-layers and --mux-combiner: late multiplexing of an N > 1 configuration (`unset`:
    None unless given, for a command that refuses them beside a study)."""
    p.add_argument(
        "--mux-layers",
        default=None if unset else "0",
        metavar="K",
        help="N > 1: encoder layers run on each input before the N inputs are combined, below "
        "the model's layers (default: 0, mixing the embeddings)",
    )
    p.add_argument(
        "--mux-combiner",
        default=None if unset else "binding",
        metavar="{binding,concat,concat_skip}",
        help="N > 1: how the inputs are combined: the fixed binding of --mux-variant, or a "
        "learned projection of each to H/N, concatenated (concat_skip: each output also reads "
        "its own input's states from before the combiner) (default: binding)",
    )


def add_storage(
    p: Container, help_text: str = "Optuna storage URL (default: sqlite:///autoprumux.db here)"
) -> None:
    p.add_argument("--storage", default=None, help=help_text)


def add_tracking_uri(p: Container) -> None:
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/mlflow.db here)",
    )


def add_host(p: Container) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (another host is warned about)"
    )


# what a worker leaves out takes the study's value (None: not given; a given one must match)
STUDY_DEFAULT = " (default: the study's)"


def add_sampler(p: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    """--sampler; `inherit`: unset unless given (a worker takes its study's)."""
    p.add_argument(
        "--sampler",
        default=None if inherit else "tpe",
        choices=SAMPLERS,
        help=("tpe" if inherit else "tpe (default)")
        + "; guided: spend the trials where they can still change the fastest "
        "configuration within --budget (see docs/search.md); random, grid: baselines"
        + (STUDY_DEFAULT if inherit else ""),
    )


def add_search_common(p: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    """The flags of search and worker: the study, its tracking, and how each trial trains
    (`inherit`: --budget and --prune-margin unset unless given, for a worker)."""
    add_storage(p)
    p.add_argument("--study-name", default=None, help="default: <space>-<task>-<model>")
    add_tracking_uri(p)
    p.add_argument(
        "--budget",
        default=None if inherit else "2.0",
        help="accuracy-loss budget in points for TPE's constraint"
        + (STUDY_DEFAULT if inherit else " (default: 2.0)"),
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    add_data_flags(p)
    add_warmup_corpus(p)
    p.add_argument(
        "--prune-margin",
        type=float,
        default=None if inherit else 5.0,
        help="stop a trial whose accuracy loss after a pruning stage (never the last) exceeds "
        "the budget by more than this many points"
        + (STUDY_DEFAULT if inherit else " (default: 5)"),
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between trial heartbeats; a silent trial is failed and retried after 2x",
    )
    p.add_argument(
        "--prior",
        nargs="+",
        default=(),
        metavar="STUDY",
        help="with --sampler guided: start from these earlier studies' finished trials (other "
        "tasks or models, in the same --storage; 'all': every other study there) instead of "
        "bisecting: the meta-model is fitted on them with the task descriptors as features",
    )
    p.add_argument(
        "--no-register",
        action="store_true",
        help="do not fit and register the meta-model recommender at the end",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="search even when the baseline's dev accuracy is within noise of always "
        "predicting the majority class (refused without it: there is nothing to compress)",
    )
    add_throughput_group(p)


def add_recommend_flags(p: argparse.ArgumentParser) -> None:
    """recommend: the budget, and the filters that leave one (task, model, device) and one
    machine (the answer refuses to mix several; see meta._scope)."""
    p.add_argument("--budget", required=True, help="accepted accuracy loss in points, e.g. 2.0")
    p.add_argument("--task", default=None, help="the task (needed when the store holds several)")
    p.add_argument(
        "--model",
        default=None,
        help="the base model id, or a part of it (needed when the store holds several)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda (needed when the store holds both)")
    add_storage(p)
    p.add_argument(
        "--study",
        "--study-name",
        dest="study_name",
        default=None,
        metavar="NAME",
        help="answer from this study only (its task, model and device)",
    )
    p.add_argument(
        "--machine",
        default=None,
        metavar="KEY",
        help="the machine whose measurements answer, by the key recommend lists, when the "
        "trials come from several (default: this machine's, when it is one of them)",
    )
    add_margin_se(p)
    p.add_argument("--json", dest="json_out", action="store_true", help="print JSON")


def add_margin_se(p: Any, default: float | None = 1.0) -> None:
    """--margin-se: how sure an answer must be that a configuration is within the budget
    (`default` None: unset unless given, so that a flag that would not apply is refused)."""
    p.add_argument(
        "--margin-se",
        default=default,
        metavar="K",
        help="raise each validation loss by K of its standard errors before comparing it with "
        "the budget (default 1: about 84%% sure it is within; 2: about 98%%; 0: the loss alone)",
    )


def add_serving_group(p: argparse.ArgumentParser) -> None:
    """serve-students: the endpoint, its batching, and how K follows the load."""
    s = p.add_argument_group("serving")
    add_host(s)
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
        help="do not measure each k's accuracy at start-up (more students = more accurate)",
    )
    s.add_argument(
        "--accuracy-from",
        choices=["dev", "meta", "none"],
        default=None,
        help="each k's accuracy loss in the policy table: measured at start-up ('dev', the "
        "default: on the validation split, which orders the table and holds --budget, and on "
        "dev, reported beside it; on dev alone without a split), the meta-model's pessimistic "
        "prediction from the study in --storage ('meta', chosen on as predicted), or none "
        "('none', as --skip-dev-eval)",
    )
    s.add_argument(
        "--also",
        action="append",
        default=None,
        metavar="CONFIG",
        help="a configuration of the same task to serve beside the students, as FIELD=VALUE "
        "pairs joined by commas, e.g. sparsity=0.5,mux=2,mux_layers=3,mux_combiner=concat "
        "(repeatable; built or taken from the cache). It enters the policy table by its "
        "measured speed and accuracy loss, so under load the policy can switch to it, e.g. to "
        "a model that multiplexes more inputs per pass",
    )
    s.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="POINTS",
        help="serve only points that lose at most this many accuracy points on the validation "
        "split (on dev without one, as predicted with --accuracy-from meta; needs their "
        "accuracy: --accuracy-from dev or meta)",
    )
    add_storage(s, help_text="with --accuracy-from meta: Optuna storage of the study")


def parse_config(spec: str) -> Candidate:
    """A configuration from 'FIELD=VALUE,FIELD=VALUE' (Candidate's fields, typed as its
    defaults are), checked by Candidate itself."""
    from autoprumux.config import Candidate

    defaults = Candidate().to_dict()
    given: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in defaults:
            raise ConfigError(
                f"{part!r} in --also {spec!r} is not FIELD=VALUE with a field of "
                f"{sorted(defaults)}; e.g. --also sparsity=0.5,mux=2,mux_layers=3"
            )
        kind = type(defaults[name])
        try:
            given[name] = kind(raw.strip())
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} in --also {spec!r} is not {kind.__name__}; e.g. mux=2"
            ) from None
    if not given:
        raise ConfigError(f"--also {spec!r} names no field; e.g. --also sparsity=0.5,mux=2")
    return Candidate.from_dict({**defaults, **given})


def _pipeline(args: argparse.Namespace, recipe: Recipe) -> PruMuxPipeline:
    """The pipeline the flags describe, once the cache directory is known to be usable."""
    from autoprumux.pipeline import PruMuxPipeline

    task, data = _task_data(args)
    _check_cache_dir(args.cache_dir)
    return PruMuxPipeline(
        task=task,
        data=data,
        metric=getattr(args, "metric", None),
        pos_label=getattr(args, "pos_label", None),
        model=args.model,
        recipe=recipe,
        device=args.device,
        data_dir=args.data_dir,
        data_source=args.data_source,
        cache_dir=args.cache_dir,
        mux_variant=args.mux_variant,
        warmup_corpus=args.warmup_corpus,
    )
