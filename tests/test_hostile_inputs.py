"""Bad input to the command line: each case exits with code 2 and one message naming the value
and the fix, before any work, and leaves nothing behind (no study, no MLflow store, no cache)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from conftest import GLUE_DIR as DATA

from autoprumux.cli import main


def _space(tmp: Path, name: str = "space.yaml", **fields) -> Path:
    p = tmp / name
    body = {"name": "t", "task": "sst2", "params": {"sparsity": {"choices": [0.0]}}, **fields}
    p.write_text(yaml.safe_dump(body))
    return p


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    a_file = tmp / "plain.txt"
    a_file.write_text("not a store\n")
    binary = tmp / "binary.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    corpus = tmp / "corpus.bin"
    corpus.write_bytes(b"\xff\xfe\x00" * 100)
    space = str(_space(tmp))
    search = ["search", "--space", space, "--data-dir", str(DATA)]
    return [
        # an unreachable tracking server: a few seconds, not minutes of retries
        ([*search, "--tracking-uri", "http://127.0.0.1:1"], "not reachable"),
        ([*search, "--tracking-uri", "foo://x"], "unknown scheme 'foo'"),
        ([*search, "--tracking-uri", str(a_file)], "is a file"),
        ([*search, "--tracking-uri", f"sqlite:///{tmp}/missing/dir/m.db"], "does not exist"),
        ([*search, "--cache-dir", str(a_file)], "is a file, not a directory"),
        ([*search, "--seed", "-1"], "seed (-1)"),
        ([*search, "--heartbeat", "100000000000000000000"], "heartbeat"),
        ([*search, "--study-name", "x" * 300], "longer than 200"),
        (["search", "--space", str(binary)], "not UTF-8"),
        (
            ["search", "--space", str(_space(tmp, "listed.yaml", task=["sst2"]))],
            "'task' is ['sst2']",
        ),
        ([*search, "--warmup-corpus", str(corpus)], "not UTF-8"),
        (["worker", "--study-name", "s", "--trials", "0"], "--trials (0)"),
        (["evaluate", "--json", str(tmp), "--data-dir", str(DATA)], "is a directory"),
        (["evaluate", "--cache-dir", str(a_file), "--data-dir", str(DATA)], "is a file"),
        (["ui", "--port", "70000"], "--port (70000)"),
        (["ui", "--tracking-uri", "foo://x"], "unknown scheme"),
        (["ui", "--tracking-uri", str(a_file)], "is a file"),
    ]


def test_bad_input_exits_2_with_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AUTOPRUMUX_CACHE", raising=False)
    for argv, msg in _cases(tmp_path):
        t0 = time.perf_counter()
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert msg in err, (argv, err)
        assert err.count("\n") <= 2 and "Traceback" not in err, err
        assert time.perf_counter() - t0 < 20, argv
        left = {p.name for p in tmp_path.iterdir()} - {"plain.txt", "binary.yaml", "corpus.bin"}
        assert left <= {"space.yaml", "listed.yaml"}, (argv, left)


def test_sigterm_to_ui_stops_the_mlflow_server_it_started(tmp_path):
    """`autoprumux ui` runs `mlflow server` (which forks workers) in its own process group:
    SIGTERM to the command must leave nothing listening."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from test_search import _free_port, _wait_http

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprumux.cli", "ui", "--port", str(port)]
        + ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        t0 = time.time()
        while time.time() - t0 < 15:  # the forked workers may take a moment to close
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"something still listens on port {port} after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
