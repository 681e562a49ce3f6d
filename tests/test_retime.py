"""benchmarks/retime.py: a frontier's N=1 points timed again on this machine from the shapes
their rows record, beside a model of the baseline's shape."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from conftest import tiny_bert_config

from autoprumux.evaluation import this_machine
from autoprumux.models import EncoderConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
FAST = ["--tp-batch", "4", "--tp-seq-len", "16", "--tp-repeats", "1"]


def _retime():
    """benchmarks/retime.py as a module (it imports its siblings _results and reference_grid)."""
    try:
        return _script("retime")
    finally:
        sys.path.remove(str(BENCH))


def _row(sparsity: float, precision: str, encoder: dict | None, n: int = 1) -> dict:
    """A row as benchmarks/reference_grid.py writes it, scored on another machine."""
    return {
        "target_sparsity": sparsity,
        "n": n,
        "precision": precision,
        "metric": 90.0 - 10 * sparsity,
        "accuracy_loss": 10 * sparsity,
        "validation_loss": 8 * sparsity,
        "throughput": 1000.0,
        "baseline_throughput": 500.0,
        "speedup": 2.0,
        "machine": "a GPU box",
        "encoder": encoder,
    }


def _frontier(path: Path, rows: list[dict]) -> Path:
    doc = {"task": "sst2", "device": "cuda", "throughput_config": {"batch_size": 64}, "rows": rows}
    path.write_text(json.dumps(doc))
    return path


def test_rows_get_this_machines_speedups_and_keep_their_accuracy(tmp_path):
    full = EncoderConfig.from_bert_config(tiny_bert_config())
    pruned = full.with_layers(heads=(2, 1), ffn=(20, 9))
    rows = [
        _row(0.0, "fp32", full.to_dict()),
        _row(0.5, "int8", pruned.to_dict()),
        _row(0.5, "ov-int8", pruned.to_dict()),  # converted as the pipeline converts it
    ]
    source = _frontier(tmp_path / "scored.json", rows)
    out = tmp_path / "here.json"
    assert _retime().main(["--from", str(source), "--out", str(out), *FAST]) == 0
    data = json.loads(out.read_text())
    here = this_machine("cpu").describe()
    assert data["timed_on"] == here and data["retimed_from"] == str(source)
    assert data["throughput_config"]["batch_size"] == 4
    assert data["throughput_config"]["seq_len"] == 16
    assert data["device"] == "cpu" and data["device_as_scored"] == "cuda"
    for before, after in zip(rows, data["rows"], strict=True):
        assert after["speedup"] > 0 and after["throughput"] > 0
        assert after["speedup"] == after["throughput"] / after["baseline_throughput"]
        assert after["machine"] == here
        assert after["speedup_as_scored"] == 2.0 and after["machine_as_scored"] == "a GPU box"
        for key in ("metric", "accuracy_loss", "validation_loss", "encoder"):
            assert after[key] == before[key]
    # every row is timed against the same baseline, in the same rounds
    assert len({r["baseline_throughput"] for r in data["rows"]}) == 1


def test_rows_that_cannot_be_timed_from_a_shape_are_refused(tmp_path, capsys):
    retime = _retime()
    full = EncoderConfig.from_bert_config(tiny_bert_config()).to_dict()
    out = tmp_path / "here.json"
    cases = {
        "without an `encoder` shape": [_row(0.0, "fp32", full), _row(0.5, "fp32", None)],
        "N > 1": [_row(0.0, "fp32", full), _row(0.0, "fp32", None, n=2)],
        "no baseline row": [_row(0.5, "int8", full)],
        "a precision this CPU does not offer": [_row(0.0, "fp32", full), _row(0.0, "bf16", full)],
    }
    for i, (why, rows) in enumerate(cases.items()):
        source = _frontier(tmp_path / f"scored{i}.json", rows)
        assert retime.main(["--from", str(source), "--out", str(out), *FAST]) == 2
        assert why in capsys.readouterr().err
    assert not out.exists()


def _script(name: str):
    """A benchmarks/ script as a module (its siblings importable while it loads and runs)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_frontier_over_a_path_builds_it_once_and_records_each_levels_shape(
    tmp_path, tiny_checkpoint
):
    frontier = _script("frontier")
    try:
        out = tmp_path / "path.json"
        recipe = [
            "max_train_examples=300",
            "finetune_steps=10",
            "eval_every=5",
            "path_steps=12",
            "path_settle_steps=1",
            "path_max_sparsity=0.4",
            "path_step=0.2",
            "train_autocast=fp32",
        ]
        args = ["--task", "sst2", "--model", tiny_checkpoint, "--path", "--mux", "1"]
        args += ["--precision", "fp32", "int8", "--cache-dir", str(tmp_path / "c"), "--out"]
        assert frontier.main([*args, str(out), *FAST, "--recipe", *recipe]) == 0
    finally:
        sys.path.remove(str(BENCH))
    data = json.loads(out.read_text())
    assert [lv["level"] for lv in data["path"]["levels"]] == [0.2, 0.4]
    assert data["path"]["steps"] == 12 + 2 and data["recipe"]["recovery"] == "path"
    assert data["path"]["machine"] == this_machine("cpu").describe()  # the machine that built it
    points = sorted((r["target_sparsity"], r["precision"]) for r in data["rows"])
    assert points == [(s, p) for s in (0.0, 0.2, 0.4) for p in ("fp32", "int8")]
    shapes = {r["target_sparsity"]: EncoderConfig.from_dict(r["encoder"]) for r in data["rows"]}
    assert len({(c.heads, c.ffn) for c in shapes.values()}) == 3  # one shape per level
    for r in data["rows"]:
        assert abs(r["sparsity"] - r["target_sparsity"]) < 0.05
    assert "best_within" in data and (tmp_path / "path.png").is_file()
