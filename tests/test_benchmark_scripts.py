"""The benchmark scripts' shared results helper, and every script's command line (`--help`)."""

from __future__ import annotations

import importlib.util
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoprumux.evaluation import this_machine

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _results_module():
    spec = importlib.util.spec_from_file_location("_results", BENCH / "_results.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_machine_names_threads_and_torch():
    results = _results_module()
    text = results.machine("cpu")
    assert text == this_machine("cpu").describe() and this_machine("cpu").cpu in text
    assert f"{torch.get_num_threads()} threads" in text
    assert f"torch {torch.__version__}" in text


def test_write_json_replaces_whole_file_and_keeps_old_one_on_failure(tmp_path):
    results = _results_module()
    out = tmp_path / "deeper" / "r.json"
    results.write_json(out, {"rows": [1, 2]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}
    results.write_json(out, {"rows": [3]})
    assert json.loads(out.read_text()) == {"rows": [3]}
    with pytest.raises(TypeError):
        results.write_json(out, {"rows": [object()]})  # not JSON: fails half-way through dumping
    assert json.loads(out.read_text()) == {"rows": [3]}  # the previous file is intact
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_help(script, monkeypatch, capsys):
    """Each script parses its command line before any work: `--help` prints usage, exit 0. It
    runs as `__main__` in this process, with its folder first on the path as when run as
    `python benchmarks/<script>.py` (the heavy imports are paid once for all scripts)."""
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(script), run_name="__main__")
    assert e.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # no work began


def test_students_latency_with_another_recipe_needs_its_own_file(monkeypatch, capsys):
    """`--recipe` without `--out` fails before any work: the default file holds the default
    recipe's figures."""
    script = BENCH / "students_latency.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--recipe", "student_steps=10"])
    monkeypatch.syspath_prepend(str(BENCH))
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(script), run_name="__main__")
    assert e.value.code == 2
    assert "--recipe needs --out" in capsys.readouterr().err


def _frontier():
    """benchmarks/frontier.py as a module (it imports its sibling reference_grid)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("frontier", BENCH / "frontier.py")
        assert spec is not None and spec.loader is not None
        frontier = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(frontier)
    finally:
        sys.path.remove(str(BENCH))
    return frontier


def test_the_frontier_report_finds_the_fastest_point_within_each_budget(tmp_path):
    frontier = _frontier()

    def row(s, n, p, loss, speed):
        return {
            "target_sparsity": s,
            "n": n,
            "precision": p,
            "accuracy_loss": loss,
            "speedup": speed,
        }

    rows = [
        row(0.0, 1, "int8", 0.7, 1.5),
        row(0.5, 1, "fp32", 0.4, 2.0),
        row(0.5, 1, "int8", 2.9, 3.1),
        row(0.7, 1, "fp32", 8.0, 3.0),
        row(0.0, 2, "fp32", 9.0, 2.1),
        {"target_sparsity": 0.3, "n": 1, "accuracy_loss": 0.2, "speedup": 1.4},  # older: fp32
        {**row(0.0, 4, "fp32", 4.0, 3.5), "mux_layers": 2, "combiner": "concat"},  # late
    ]
    out = tmp_path / "frontier_sst2_cpu.json"
    out.write_text(json.dumps({"task": "sst2", "device": "cpu", "rows": rows}))
    assert frontier.main(["--report", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    best = data["best_within"]
    assert set(best) == {"0.5", "1", "2", "3", "5"}
    assert best["0.5"] == {
        "speedup": 2.0,
        "loss": 0.4,
        "validation_loss": None,
        "validation_loss_se": None,
        "chosen_on": "dev",  # rows measured without a validation split
        "config": "s=0.5 N=1 fp32",
    }
    assert best["3"]["config"] == "s=0.5 N=1 int8" and best["3"]["speedup"] == 3.1
    assert best["5"]["config"] == "s=0 N=4 k=2 concat fp32" and best["5"]["loss"] == 4.0
    refs = data["references"]
    assert refs["int8 of the baseline"]["1"]["speedup"] == 1.5
    assert refs["int8 of the baseline"]["0.5"]["config"] == "baseline"
    assert refs["pruning alone"]["1"]["config"] == "s=0.5 N=1 fp32"
    assert refs["multiplexing alone"]["3"]["config"] == "baseline"
    assert refs["multiplexing alone"]["5"]["config"] == "s=0 N=4 k=2 concat fp32"
    assert [p["config"] for p in data["pareto"]] == [
        "s=0.3 N=1 fp32",
        "s=0.5 N=1 fp32",
        "s=0.5 N=1 int8",
        "s=0 N=4 k=2 concat fp32",
    ]
    assert out.with_suffix(".png").stat().st_size > 0


def test_the_frontier_chooses_on_validation_and_reports_dev():
    frontier = _frontier()
    rows = [  # a lucky dev loss over budget on validation, and the other way round
        {
            "target_sparsity": 0.7,
            "n": 1,
            "accuracy_loss": 0.3,
            "validation_loss": 1.5,
            "speedup": 4,
        },
        {
            "target_sparsity": 0.5,
            "n": 1,
            "accuracy_loss": 1.8,
            "validation_loss": 0.6,
            "speedup": 2,
        },
    ]
    best = frontier.fastest_within(rows, 1.0)
    assert (best["config"], best["loss"], best["validation_loss"]) == ("s=0.5 N=1 fp32", 1.8, 0.6)
    assert best["chosen_on"] == "validation"
    assert frontier.fastest_within(rows, 2.0)["config"] == "s=0.7 N=1 fp32"
    # a row's standard error raises the loss it is chosen on (`selection_loss`)
    rows[0]["validation_loss_se"] = 0.8
    assert frontier.fastest_within(rows, 2.0)["config"] == "s=0.5 N=1 fp32"
    assert frontier.fastest_within(rows, 2.4)["validation_loss_se"] == 0.8


def test_the_transfer_benchmark_compares_searches_with_and_without_a_prior(tmp_path):
    """benchmarks/transfer.py end to end on the committed SST-2 and MRPC reference grids (replayed
    trials, real studies): one search per budget with and without the prior, regrets in [0, 1]."""
    out = tmp_path / "transfer.json"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "transfer.py"),
            "--prior",
            "benchmarks/results/reference_grid_sst2_cpu.json",
            "--targets",
            "benchmarks/results/reference_grid_mrpc_cpu.json",
            "--evaluations",
            "2",
            "--budgets",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert [(x["prior"], x["evaluations"]) for x in d["runs"]] == [([], 2), (["prior-sst2"], 2)]
    for x in d["runs"]:
        assert 0.0 <= x["regret"] <= 1.0 and x["task"] == "mrpc"
        assert x["grid_speedup"] <= x["best_speedup"] + 1e-9 or x["violation"]
    assert {s["prior"] for s in d["summary"]} == {False, True}
    assert "| evaluations | prior |" in r.stdout


def _search_regret(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("search_regret", BENCH / "search_regret.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "search_regret", mod)  # its dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


REGRET_MEASURED = ROOT / "benchmarks/results/frontier_long_recovery_sst2_cpu.json"


def test_search_regret_measured_mode_replays_one_machines_points_with_their_spreads(
    monkeypatch,
):
    """The measured mode's space is the measured values (int8 included) and nothing else; a
    set of two machines' (or recipes') rows is refused; each trained model's replayed noise is
    one draw of its measured spread per seed, shared by its fp32 and int8."""
    sr = _search_regret(monkeypatch)
    table = sr.MeasuredTable([REGRET_MEASURED])
    space = table.space(ROOT / "search_spaces/prumux.yaml")
    grid = space.grid()
    assert len(grid) == 12 and all(table.measured_at(c) for c in grid)
    assert {c.precision for c in grid} == {"fp32", "int8"}
    assert len(table.machines) == 1 and "AMD EPYC" in table.machines[0]
    s82 = sr.Candidate(sparsity=0.82, precision="int8")
    assert table.truth(s82) == pytest.approx((2.2936, 10.6465), abs=1e-3)
    for other in ("frontier_sst2_cpu.json", "frontier_long_recovery_ld_sst2_cpu.json"):
        with pytest.raises(SystemExit, match="mix"):
            sr.MeasuredTable([REGRET_MEASURED, REGRET_MEASURED.with_name(other)])

    spreads = sr.Spreads(ROOT / "benchmarks/results", table.task, table.recipe, 1.35)
    own = spreads.of(sr.model_key(0.9, 1))  # 5.39 here, 7.68 on the H200: sd = 2.29 / sqrt 2
    assert own.sd == pytest.approx(abs(7.6835 - 5.3899) / 2**0.5, abs=1e-3)
    assert own.source.startswith("own") and "recovery_r2000_sst2_cuda.json" in own.source
    assert spreads.of(sr.model_key(0.82, 1)).source.startswith("pooled")
    assert spreads.of(sr.model_key(0.0, 1)).sd == 0.0
    assert any("late_mux_ablation" in w for _, w in spreads.pairings.values())

    def replay(seed, cfg, with_spreads=True):
        ev = sr.ReplayEvaluator(table, 872, 8000, 2, spreads if with_spreads else None, seed)
        got = ev.evaluate(cfg)
        # the noisy replayed loss is the one the search chooses on; dev reports the file's
        assert got.chosen_on == "validation"
        assert got.accuracy_loss == pytest.approx(table.truth(cfg)[0])
        return got.validation_loss

    s82_fp32 = sr.Candidate(sparsity=0.82)
    assert replay(0, s82, with_spreads=False) == pytest.approx(table.truth(s82)[0])
    draws = [replay(seed, s82) - table.truth(s82)[0] for seed in range(4)]
    assert len(set(draws)) == 4  # a new draw per seed ...
    assert replay(1, s82) - table.truth(s82)[0] == draws[1]  # ... the same within one
    assert replay(1, s82_fp32) - table.truth(s82_fp32)[0] == pytest.approx(draws[1])
    assert (
        replay(3, sr.Candidate(precision="int8")) == table.truth(sr.Candidate(precision="int8"))[0]
    )


def test_search_regret_chooses_on_a_rows_measured_validation_loss(monkeypatch, tmp_path):
    """A row measured on a validation split is replayed at that loss (what the search chooses
    on) and judged by its dev loss; a row without one falls back to its dev loss."""
    sr = _search_regret(monkeypatch)
    doc = json.loads(REGRET_MEASURED.read_text())
    for r in doc["rows"]:
        if r["target_sparsity"] == 0.82 and r.get("precision") == "int8":
            r["validation_loss"] = r["accuracy_loss"] + 2.5
            r["validation_loss_se"] = 0.5  # what chooses is 0.5 (one SE) higher still
    path = tmp_path / "with_validation.json"
    path.write_text(json.dumps(doc))
    table = sr.MeasuredTable([path])
    s82, s70 = sr.Candidate(sparsity=0.82, precision="int8"), sr.Candidate(sparsity=0.7)
    assert table.validation_loss(s82) == pytest.approx(table.truth(s82)[0] + 2.5 + 0.5)
    assert table.validation_loss(s70) == table.truth(s70)[0]
    got = sr.ReplayEvaluator(table, 872, 8000, 2, None, 0).evaluate(s82)
    assert got.selection_loss == pytest.approx(table.truth(s82)[0] + 2.5 + 0.5)
    assert got.accuracy_loss == pytest.approx(table.truth(s82)[0])


def test_search_regret_runs_both_modes_side_by_side(tmp_path):
    """benchmarks/search_regret.py end to end on a tiny run: the interpolated mode (fp32, 60
    configurations, no noise) and the measured mode (12 measured ones with int8, noisy), real
    studies, regrets as defined against each mode's best within the budget."""
    out = tmp_path / "regret.json"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "search_regret.py"),
            *("--grid", "benchmarks/results/reference_grid_sst2_cpu.json"),
            *("--measured", str(REGRET_MEASURED)),
            *("--budgets", "3", "--trials", "3", "--samplers", "guided", "--seeds", "2"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    interp, measured = d["modes"]
    assert (interp["mode"], interp["configurations"], interp["measured_configurations"]) == (
        "interpolated",
        60,
        24,
    )
    assert interp["precisions"] == ["fp32"] and interp["noise"] is None
    assert (measured["mode"], measured["configurations"], measured["measured_configurations"]) == (
        "measured",
        12,
        12,
    )
    assert measured["precisions"] == ["fp32", "int8"]
    assert {x["source"].split(":")[0] for x in measured["noise"]} >= {"own", "none"}
    best = {"interpolated": 2.0275, "measured": 10.6465}  # s=0.5 N=1 fp32; s=0.82 int8
    for m in d["modes"]:
        (res,) = m["results"]
        assert res["best_speedup"] == pytest.approx(best[m["mode"]], abs=1e-3)
        # guided replays one seed without noise, every seed with it
        assert len(res["runs"]) == (2 if m["noise"] else 1)
        for x in res["runs"]:
            assert x["regret"] == pytest.approx(1.0 - x["speedup"] / res["best_speedup"])
            assert x["violation"] == (x["loss"] > 3.0)
            assert x["evaluations"] == 3
            # chosen on validation, judged on dev: the answer's dev loss against the budget
            assert x["answer"]["chosen_on"] == "validation"
            assert x["dev_loss"] == x["loss"]
            assert x["dev_excess"] == pytest.approx(max(0.0, x["dev_loss"] - 3.0))
            if not m["noise"]:  # without noise the two losses are one
                assert x["validation_loss"] == pytest.approx(x["dev_loss"])
        assert res["dev_within_budget"] == (res["violations"] == 0)
        assert res["dev_excess_max"] == max(x["dev_excess"] for x in res["runs"])
        # the search's own regret: against measuring every configuration, chosen on validation
        every = res["every_configuration_speedup"]
        if not m["noise"]:  # validation is dev here: the same answer
            assert every == pytest.approx(res["best_speedup"])
        for x in res["runs"]:
            assert x["search_regret"] == pytest.approx(1.0 - x["speedup"] / every)
        assert res["search_regret_max"] == max(x["search_regret"] for x in res["runs"])
    assert "| budget | interpolated: best | interpolated: guided | measured: best |" in r.stdout
    assert "| budget | interpolated: every configuration | interpolated: guided |" in r.stdout
    assert "chosen on the validation loss; the answer's dev loss is within the" in r.stdout


def test_the_l2l_throughput_benchmark_runs_end_to_end_on_a_tiny_model(tmp_path):
    """The GPU benchmark's CPU dry run: both trainers' largest batch (no cap on the CPU: the
    search stops at --max-batch), equal-batch and largest-batch throughput, and the JSON."""
    out = tmp_path / "l2l_tp.json"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "l2l_throughput.py"),
            *("--depth", "2", "--width", "32", "--heads", "2", "--ffn", "64", "--vocab", "200"),
            *("--seq-len", "16", "--min-batch", "4", "--max-batch", "8"),
            *("--micro-batch-size", "4", "--steps", "1", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["largest_batch"] == {"standard": 8, "l2l": 8}
    assert data["equal_batch"]["l2l_equal"]["batch"] == 8
    assert data["l2l_slowdown_per_example_at_equal_batch"] > 0
    assert data["profile"] is None  # profiled on CUDA only


def _fidelity_files(tmp_path: Path, second_machine: bool = False) -> tuple[Path, Path]:
    """A bare path and its recovered snapshots: bare, only s=0.2 is within 1 point (validation
    + SE); recovered, s=0.4 and s=0.6 are too, s=0.8 is not."""

    def row(s: float, val: float, dev: float, speed: float, seconds: float, machine: str) -> dict:
        return {
            "target_sparsity": s, "n": 1, "precision": "ov-int8", "accuracy_loss": dev,
            "validation_loss": val, "validation_loss_se": 0.2, "speedup": speed,
            "seconds": seconds, "machine": machine,
        }  # fmt: skip

    bare = [row(0.0, 0.0, 0.0, 2.0, 40, "cpu A")] + [
        row(s, val, val + 0.1, speed, 30, "cpu A")
        for s, val, speed in ((0.2, 0.5, 3.0), (0.4, 1.5, 4.0), (0.6, 2.5, 5.0), (0.8, 6.0, 8.0))
    ]
    other = "cpu B" if second_machine else "cpu A"
    recovered = [
        row(s, val, val + 0.3, speed, 200, other)
        for s, val, speed in ((0.4, 0.3, 4.0), (0.6, 0.7, 5.0), (0.8, 3.0, 8.0))
    ]
    paths = []
    for name, rows in (("bare", bare), ("recovered", recovered)):
        doc = {"rows": rows, "baseline": {"metric": 90.0}, "recipe": {"snapshot_recovery_steps": 9}}
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        paths.append(tmp_path / f"{name}.json")
    return paths[0], paths[1]


def test_the_fidelity_replay_prices_each_promotion_strategy(tmp_path, capsys):
    """benchmarks/fidelity_replay.py: what each strategy recovers, answers and spends; Optuna's
    successive halving, in a fixed order, promotes only what its rung 0 ranks on top."""
    spec = importlib.util.spec_from_file_location("fidelity_replay", BENCH / "fidelity_replay.py")
    assert spec is not None and spec.loader is not None
    sys.path.insert(0, str(BENCH))
    try:
        replay = importlib.util.module_from_spec(spec)
        sys.modules["fidelity_replay"] = replay  # its dataclass looks its module up
        spec.loader.exec_module(replay)
    finally:
        sys.path.remove(str(BENCH))
    bare_path, recovered_path = _fidelity_files(tmp_path)
    bare, _ = replay.load(str(bare_path), "ov-int8", 0)
    recovered, _ = replay.load(str(recovered_path), "ov-int8", 1)
    assert sorted(bare) == [0.2, 0.4, 0.6, 0.8]  # the unpruned row is the baseline's
    rungs = [bare, recovered]
    # bare answer s=0.2 (3.0x); open above it: 0.4, 0.6, 0.8; bisect: 0.6 fits, then 0.8 misses
    measured = replay.promote_near_misses(rungs, 1.0)
    assert [(p.sparsity, p.rung) for p in measured if p.rung == 1] == [(0.6, 1), (0.8, 1)]
    got = replay.summary(measured, 1.0, replay.answer([*bare.values(), *recovered.values()], 1.0))
    assert got["answer"] == "s=0.6 rung 1" and got["speedup"] == 5.0 and got["regret"] == 0.0
    assert got["seconds"] == 4 * 30 + 2 * 200 and got["dev_within_budget"] is True  # 0.9 on dev
    # halving, eta 2, in the order 0.8, 0.4, 0.6, 0.2: 0.8 first (promoted alone), 0.4 beats it
    # at rung 0 (-0.7 > -5.2) and is promoted, 0.6 (-1.7) is not the best of three
    import optuna

    pruner = optuna.pruners.SuccessiveHalvingPruner(1, 2)
    measured = replay.optuna_replay(pruner, [0.8, 0.4, 0.6, 0.2], rungs, 1.0, 2)
    assert [p.sparsity for p in measured if p.rung == 1] == [0.8, 0.4]
    assert replay.answer(measured, 1.0).sparsity == 0.4
    # the command line: one row per budget and strategy, the JSON beside it
    out = tmp_path / "replay.json"
    argv = ["--bare", str(bare_path), "--recovered", str(recovered_path), "--budgets", "1"]
    assert replay.main([*argv, "--orders", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    row = doc["budgets"]["1"]
    assert row["recover-all"]["recoveries"] == 3 and row["bare"]["speedup"] == 3.0
    assert row["halving-eta2"]["dev_within_budget"] == "3/3"
    assert "| 1 | promote-near-misses | 5.00x | 0.0% | yes | 2 | 520 |" in capsys.readouterr().out
    # two machines' rows do not compare: refused, naming them
    bare_path, recovered_path = _fidelity_files(tmp_path, second_machine=True)
    with pytest.raises(SystemExit, match="2 machines"):
        replay.main(["--bare", str(bare_path), "--recovered", str(recovered_path)])


def test_split_agreement_scores_the_same_models_on_all_three_splits(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """benchmarks/split_agreement.py on a tiny model's path: each row's validation loss is the
    one the pipeline chooses on, its dev loss the one it reports; the baseline against itself
    loses nothing on any split; a recipe without a stopping split is refused."""
    from autoprumux.config import Candidate, Recipe
    from autoprumux.pipeline import PruMuxPipeline, validation_loss

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("split_agreement", BENCH / "split_agreement.py")
    assert spec is not None and spec.loader is not None
    agreement = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agreement)
    fields = {
        "max_train_examples": 400, "batch_size": 16, "max_seq_len": 32, "finetune_steps": 4,
        "path_steps": 6, "path_settle_steps": 1, "path_max_sparsity": 0.4, "path_step": 0.2,
        "path_importance_examples": 16,
    }  # fmt: skip
    recipe = [f"{k}={v}" for k, v in fields.items()]
    out, cache = tmp_path / "agree.json", tmp_path / "cache"
    argv = ["--path", "--sparsities", "0", "0.4", "--model", tiny_checkpoint]
    agreement.main([*argv, "--cache-dir", str(cache), "--out", str(out), "--recipe", *recipe])
    rows = json.loads(out.read_text())["rows"]
    assert [r["sparsity"] for r in rows] == [0.0, 0.4]
    assert all(rows[0][k] == {"loss": 0.0, "se": 0.0} for k in ("validation", "stopping", "dev"))
    pipe = PruMuxPipeline(
        task="sst2", model=tiny_checkpoint, cache_dir=cache,
        recipe=Recipe(**{**fields, "recovery": "path"}),
    )  # fmt: skip
    model = pipe.fp32_model(Candidate(sparsity=0.4))
    assert rows[1]["validation"]["loss"] == pytest.approx(validation_loss(pipe, model, 1))
    dev = pipe.baseline_metrics()["metric"] - pipe.dev_metrics(model, pairings=1)["metric"]
    assert rows[1]["dev"]["loss"] == pytest.approx(dev)
    with pytest.raises(SystemExit, match="no stopping split"):
        agreement.main(
            [*argv, "--cache-dir", str(cache), "--recipe", *recipe, "stopping_examples=0"]
        )


def test_answer_trust_reads_a_lucky_dip_on_a_path_as_luck(tmp_path):
    """A deeper snapshot whose held-out loss dips below a shallower one's is answered by the
    per-row rule and refused by the pooled and monotone rules; its dev loss counts as over."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import answer_trust
    import frontier

    def row(s, val, dev, speed):
        return {
            "target_sparsity": s,
            "n": 1,
            "precision": "ov-int8",
            "speedup": speed,
            "accuracy_loss": dev,
            "accuracy_loss_se": 0.5,
            "validation_loss": val,
            "validation_loss_se": 0.5,
        }

    rows = [row(0.0, 0.0, 0.0, 3.0), row(0.5, 2.4, 2.2, 6.0), row(0.7, 1.0, 3.0, 9.0)]
    got = {rule: answer_trust.answers(rows, rule, 1.0)["2"] for rule in answer_trust.RULES}
    assert got["raw"]["config"] == "s=0.7 N=1 ov-int8"
    assert got["raw"]["over"] and got["raw"]["clearly_over"]  # 3.0 > 2 + 0.5
    for rule in ("pooled", "monotone"):
        assert got[rule]["config"] == "s=0 N=1 ov-int8" and not got[rule]["over"]
    pooled = frontier.chosen_losses(rows, standard_errors=0.0)
    assert pooled[0] == 0.0 and pooled[1:] == pytest.approx([1.7, 1.7])  # violators averaged
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"rows": rows}))
    out = tmp_path / "trust.json"
    assert answer_trust.main([str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["files"][0]["rules"]["raw, 1 SE"]["over"] >= 1
    assert answer_trust.main([str(tmp_path / "missing.json")]) == 2
