"""What a study is bound to, recorded when it is created and checked whenever it is resumed
(`search`, `worker`, `evaluate --study`):

* one machine and one code version (`evaluation.Machine`: CPU model and ISA flags, threads,
  GPU, torch and autoprumux versions): a speedup, and an int8 loss, measured on another machine
  is another quantity, so the trials of one study never mix machines;
* one resolved recipe (every `Recipe` field, not only the space's overrides: a changed default
  trains other models under the same space);
* the settings that decide which trials run and how they end: sampler, budget, prune margin.

A study that records no machine (made before studies recorded theirs) may come from any
machine, so it is refused like another machine's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprumux.config import Recipe
from autoprumux.errors import ConfigError

if TYPE_CHECKING:
    from autoprumux.evaluation import Machine
    from autoprumux.search._settings import SearchSettings

# the search settings a study records, with the flag that sets each
SETTINGS = {"sampler": "--sampler", "budget": "--budget", "prune_margin": "--prune-margin"}
NEW_STUDY = "pass --study-name NEW to start a new study on this machine"


def recipe_record(recipe: Recipe) -> dict[str, Any]:
    """Every field of the recipe, as the study stores it (JSON: compared after a round trip)."""
    return dict(json.loads(json.dumps(dataclasses.asdict(recipe))))


def identity(settings: SearchSettings, machine: Machine) -> dict[str, Any]:
    """The study attributes `check_identity` compares: machine, recipe, sampler, budget,
    prune margin."""
    return {
        "machine": machine.to_dict(),
        "recipe": recipe_record(settings.space.recipe),
        "sampler": settings.sampler,
        "budget": float(settings.budget),
        "prune_margin": float(settings.prune_margin),
    }


def run_settings(settings: SearchSettings) -> dict[str, Any]:
    """Where the study's trials read their data and cache and how they time throughput, as
    given (paths made absolute), so that `evaluate --study` measures a configuration the same
    way. Recorded once; a worker may read from other paths."""

    def path(p: str | None) -> str | None:
        return None if p is None else str(Path(p).expanduser().resolve())

    corpus = settings.warmup_corpus
    return {
        "data_dir": path(settings.data_dir),
        "data_source": settings.data_source,
        "warmup_corpus": corpus if corpus in ("shared", "task") else path(corpus),
        "cache_dir": path(settings.cache_dir),
        "throughput": dataclasses.asdict(settings.throughput),
    }


def check_identity(have: dict[str, Any], want: dict[str, Any], study: str, url: str) -> None:
    """Refuse to resume study `study` (attributes `have`) with `want` (see `identity`): another
    machine or code version, another resolved recipe, or another sampler, budget or margin."""
    from autoprumux.evaluation import Machine

    where = f"study {study!r} in {url}"
    mine = Machine.from_dict(want["machine"])
    try:
        theirs = Machine.from_dict(have["machine"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"{where} records no machine (it was made before studies recorded theirs), so its "
            f"trials may come from another machine than this one ({mine.describe()}) and their "
            f"speedups cannot be compared with this one's; {NEW_STUDY}"
        ) from None
    if theirs != mine:
        raise ConfigError(
            f"{where} was measured on another machine or code version: "
            f"{'; '.join(theirs.differences(mine))} (the study's -> this one's). Speedups from "
            f"two machines are not comparable; {NEW_STUDY}, or resume it where it ran"
        )
    recorded = have.get("recipe")
    if recorded != want["recipe"]:
        ours = want["recipe"]
        diffs = (
            [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in ours.items() if recorded.get(k) != v]
            + [f"{k}: {v!r} -> unknown" for k, v in recorded.items() if k not in ours]
            if isinstance(recorded, dict)
            else ["none recorded"]
        )
        raise ConfigError(
            f"{where} was trained with another resolved recipe: {'; '.join(diffs)} (the "
            "study's -> this run's). Resume it with the study's recipe (its search space and "
            f"the same autoprumux version), or {NEW_STUDY}"
        )
    for key, flag in SETTINGS.items():
        if key in have and have[key] != want[key]:
            raise ConfigError(
                f"{where} searches with {key} {have[key]!r}; this run asks for {want[key]!r}. "
                f"Resume it with {flag} {have[key]} (a worker left without {flag} takes the "
                f"study's), or {NEW_STUDY}"
            )
