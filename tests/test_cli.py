"""`autoprumux evaluate` on bad input (exit 2, a message naming the value, nothing written), and
the result table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autoprumux.cli import format_table
from autoprumux.evaluation import Evaluation, Measured, ThroughputConfig


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["AUTOPRUMUX_CACHE"] = str(tmp_path / "cache")
    env["AUTOPRUMUX_PROGRESS"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "autoprumux.cli", "evaluate", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_INPUT = [
    (["--sparsity", "1.0"], "1.0"),
    (["--sparsity", "-0.1"], "-0.1"),
    (["--sparsity", "abc"], "abc"),
    (["--sparsity", "nan"], "nan"),
    (["--mux", "0"], "0"),
    (["--mux", "1.5"], "1.5"),
    (["--mux", "two"], "two"),
    (["--task", "nosuchtask"], "nosuchtask"),
    (["--model", "/nonexistent/path"], "/nonexistent/path"),
    (["--device", "tpu"], "tpu"),
    (["--data-dir", "{tmp}/missing"], "{tmp}/missing"),
    (["--max-seq-len", "4"], "4"),
    (["--tp-seq-len", "600"], "600"),
    (["--mux", "1000"], "1000"),
    (["--students", "0"], "(0)"),
    (["--students", "17"], "(17)"),
    (["--students", "four"], "four"),
    (["--students", "2", "--student-depth", "5"], "(5)"),
    (["--students", "2", "--active", "3"], "(3)"),
]


@pytest.mark.parametrize("args,value", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_evaluate_bad_input_exits_2_without_side_effects(
    tmp_path, monkeypatch, capsys, args, value
):
    """In this process (the next test runs the real command): an uncaught exception would
    raise here instead of printing a traceback."""
    from autoprumux.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    value = value.replace("{tmp}", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOPRUMUX_CACHE", str(tmp_path / "cache"))
    try:
        code = main(["evaluate", *args])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert value in err and "error" in err, err
    assert out == ""  # no table, no partial output
    assert not (tmp_path / "cache").exists(), "cache directory written before validation failed"
    assert not (tmp_path / ".autoprumux").exists()


def test_mux_error_message_mentions_the_rule(tmp_path):
    """The real command: exit 2, the rule in one line, no traceback, nothing on stdout."""
    r = _run(tmp_path, "--mux", "1.5")
    assert r.returncode == 2
    assert "positive integer" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == "" and not (tmp_path / "cache").exists()


def _measured(
    name: str, sparsity: float, n: int, metric: float, throughput: float, flops: float
) -> Measured:
    return Measured(
        name=name,
        sparsity=sparsity,
        n=n,
        metric=metric,
        accuracy=metric,
        throughput=throughput,
        latency_ms=640.0 / throughput * 1000 / 10,
        encoder_params=1_000_000,
        flops=flops,
    )


def test_format_table_shows_loss_and_speedup():
    ev = Evaluation(
        task="sst2",
        metric_name="accuracy",
        device="cpu",
        baseline=_measured("baseline", 0.0, 1, 90.0, 100.0, 4e9),
        candidate=_measured("prumux", 0.7, 2, 88.5, 350.0, 1e9),
        throughput_config=ThroughputConfig(batch_size=64, seq_len=128, repeats=10),
    )
    assert ev.accuracy_loss == pytest.approx(1.5)
    assert ev.speedup == pytest.approx(3.5)
    text = format_table(ev)
    lines = text.splitlines()
    assert "accuracy" in lines[0] and "speedup" in lines[0] and "dev loss" in lines[0]
    assert "val loss" in lines[0] and "(chosen on dev: no validation split)" in text
    base = next(line for line in lines if line.startswith("baseline"))
    cand = next(line for line in lines if line.startswith("prumux"))
    assert "90.00" in base and "0.00" in base and "1.00x" in base and "100.0" in base
    assert "88.50" in cand and "350.0" in cand
    assert "1.50" in cand
    assert "3.50x" in cand
    assert "4.00x" in cand  # ideal speedup from the FLOP ratio
    assert "0.700" in cand and " 2 " in cand
    assert "1.50" not in base and "3.50x" not in base
    assert "batch 64 x 128" in text and "median of 10" in text and "sst2" in text
    # column alignment: header and rows have the same width
    assert len(base) == len(cand) == len(lines[0])
    # with a validation split: its loss (what a search chooses on) beside dev's
    from dataclasses import replace

    val = replace(
        ev,
        baseline=replace(ev.baseline, validation_metric=91.0),
        candidate=replace(ev.candidate, validation_metric=90.25),
    )
    assert val.validation_loss == pytest.approx(0.75) and val.chosen_on == "validation"
    text = format_table(val)
    cand = next(line for line in text.splitlines() if line.startswith("prumux"))
    assert "0.75" in cand and "1.50" in cand and "chosen on dev" not in text


def test_format_table_negative_loss_and_slowdown():
    ev = Evaluation(
        task="cola",
        metric_name="mcc",
        device="cpu",
        baseline=_measured("baseline", 0.0, 1, 40.0, 200.0, 2e9),
        candidate=_measured("prumux", 0.3, 1, 41.25, 150.0, 1e9),
        throughput_config=ThroughputConfig(),
    )
    text = format_table(ev)
    cand = next(line for line in text.splitlines() if line.startswith("prumux"))
    assert "-1.25" in cand  # the candidate is better: negative loss, shown as such
    assert "0.75x" in cand
    assert "mcc" in text.splitlines()[0]
