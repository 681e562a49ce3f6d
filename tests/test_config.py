"""The configuration types: every bad value of a `Candidate` once, with its message; the
constants shared with the data and models; and a search space read without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoprumux.config import (
    BASELINE,
    MAX_MUX,
    TASK_NAMES,
    Candidate,
    Recipe,
    check_budget,
)
from autoprumux.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"technique": "quantize"}, r"technique \('quantize'\) must be one of \['prumux', 'students'\]"),
        ({"sparsity": 1.0}, r"sparsity \(1.0\) must be in \[0, 1\)"),
        ({"sparsity": -0.1}, r"sparsity \(-0.1\) must be in \[0, 1\)"),
        ({"sparsity": float("nan")}, r"sparsity \(nan\) must be in \[0, 1\)"),
        ({"sparsity": "half"}, r"sparsity 'half' is not a number"),
        ({"mux": 0}, r"mux width N \(0\) must be a positive integer"),
        ({"mux": 2.5}, r"mux width N \(2.5\) must be a positive integer"),
        ({"mux": True}, r"mux width N \(True\) must be a positive integer"),
        ({"mux": MAX_MUX + 1}, rf"mux width N \({MAX_MUX + 1}\) must be at most {MAX_MUX}"),
        ({"mux_variant": "hadamard"}, r"mux variant \('hadamard'\) must be one of"),
        ({"students": 1.5}, r"students \(1.5\) must be an integer"),
        ({"student_depth": True}, r"student_depth \(True\) must be an integer"),
        ({"students": 2}, r"a PruMUX configuration has no students"),
        ({"technique": "students", "students": 0, "student_depth": 2}, r"students \(0\) must be an integer in \[1, 16\]"),
        ({"technique": "students", "students": 17, "student_depth": 2}, r"students \(17\) must be an integer in \[1, 16\]"),
        ({"technique": "students", "students": 2, "student_depth": 4}, r"student_depth \(4\) must be one of \[1, 2, 3\]"),
        ({"technique": "students", "students": 2, "student_depth": 2, "mux": 2}, r"students configuration has sparsity 0 and N=1"),
        ({"precision": "int4"}, r"precision \('int4'\) must be one of \['fp32', 'int8', 'tf32', 'bf16', 'fp16', 'ov-fp32', 'ov-int8'\]"),
    ],
)  # fmt: skip
def test_every_bad_candidate_value_is_refused_with_its_rule(fields, match):
    with pytest.raises(ConfigError, match=match):
        Candidate(**fields)


def test_a_candidate_is_normalised_hashable_and_round_trips():
    a = Candidate(sparsity=0.30000000001, mux=2.0)  # type: ignore[arg-type]
    assert (a.sparsity, a.mux) == (0.3, 2) and isinstance(a.mux, int)
    assert a == Candidate(sparsity=0.3, mux=2) and len({a, Candidate(sparsity=0.3, mux=2)}) == 1
    assert Candidate.from_dict(a.to_dict()) == a
    assert Candidate.from_dict({"sparsity": 0.5}) == Candidate(sparsity=0.5)  # older records
    with pytest.raises(ConfigError, match="unknown configuration key 'colour'"):
        Candidate.from_dict({"colour": 1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        Candidate.from_dict([0.5])
    assert BASELINE.is_baseline and not a.is_baseline
    assert Candidate(technique="students", students=4, student_depth=2).describe() == (
        "students K=4 d=2"
    )
    assert a.describe() == "s=0.3 N=2"


def test_budgets_are_numbers_in_points():
    assert check_budget("2") == 2.0 and check_budget(0) == 0.0
    for bad in (True, -1, 101, float("nan"), "two", None):
        with pytest.raises(ConfigError, match="budget"):
            check_budget(bad)


def test_the_task_names_are_the_data_layers_tasks():
    from autoprumux.data import TASKS

    assert sorted(TASKS) == sorted(TASK_NAMES)


def test_reading_a_search_space_does_not_import_torch_or_the_search_libraries():
    code = (
        "import sys\n"
        "from autoprumux.search import SearchSpace\n"
        f"s = SearchSpace.from_yaml({str(REPO / 'search_spaces' / 'combined.yaml')!r})\n"
        "assert len(s.grid()) == 144\n"
        "heavy = [m for m in ('torch', 'transformers', 'optuna', 'mlflow', 'lightgbm') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---- the recipe's flags are generated from its fields -------------------------------------------
def test_every_recipe_field_is_a_documented_flag_of_the_commands_that_train():
    import argparse
    from dataclasses import fields

    from autoprumux.cli import build_parser
    from autoprumux.config import RECIPE_GROUPS, Recipe

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("evaluate", "export", "serve-students", "warmup"):
        dests = {a.dest: a for a in commands.choices[command]._actions}
        for f in fields(Recipe):
            assert f.metadata["group"] in RECIPE_GROUPS and f.metadata["help"], f.name
            flag = dests.get(f.name)
            assert flag is not None, f"{command} has no --{f.name.replace('_', '-')}"
            assert f.metadata["help"].replace("%", "%%") in flag.help


def test_a_recipe_flag_reaches_the_recipe_and_a_bad_one_is_the_recipes_error(capsys):
    from autoprumux.cli import build_parser, main
    from autoprumux.cli._flags import _recipe

    parser = build_parser()
    # fields that once were YAML-only: each read by its rule's type
    args = parser.parse_args(
        [
            "evaluate",
            "--student-loss",
            "mse",
            "--late-mux-lr",
            "0.002",
            "--freeze-word-embeddings",
            "false",
            "--preset",
            "quick",
            "--lr",
            "3e-5",
        ]
    )
    recipe = _recipe(args)
    assert (recipe.student_loss, recipe.late_mux_lr, recipe.freeze_word_embeddings) == (
        "mse",
        0.002,
        False,
    )
    assert recipe.lr == 3e-5 and recipe.finetune_steps == 200  # the flags win over the preset
    # a value outside the field's rule: the Recipe's own message, exit 2, one line
    assert main(["evaluate", "--student-loss", "hinge"]) == 2
    err = capsys.readouterr().err.strip()
    assert "recipe field student_loss ('hinge') must be one of ['mse', 'kl']" in err


def test_a_budget_is_checked_once_where_it_enters_then_trusted():
    import json

    from autoprumux.config import Budget

    budget = check_budget("2.5")
    assert isinstance(budget, Budget) and budget == 2.5
    assert check_budget(budget) is budget  # passed on: not checked again
    assert json.loads(json.dumps({"budget": budget})) == {"budget": 2.5} and f"{budget:g}" == "2.5"
    with pytest.raises(ConfigError, match=r"budget \(101.0\) must be an accuracy loss"):
        check_budget(101.0)


@pytest.mark.parametrize(
    "recipe, config, trains",
    [
        (Recipe(recovery="path"), Candidate(sparsity=0.4), False),  # the path's snapshot
        (Recipe(recovery="path"), Candidate(sparsity=0.4, precision="int8"), False),
        (Recipe(), Candidate(sparsity=0.4), True),  # its own prune-and-recover
        (Recipe(), Candidate(precision="int8"), False),  # the baseline converted
        (Recipe(int8_recovery_steps=50), Candidate(precision="int8"), True),
        (Recipe(recovery="path"), Candidate(sparsity=0.4, mux=2), True),
        (
            Recipe(recovery="path"),
            Candidate(technique="students", students=2, student_depth=2),
            True,
        ),
    ],
)
def test_which_configurations_train_a_model_of_their_own(recipe, config, trains):
    assert recipe.trains_own_model(config) is trains
