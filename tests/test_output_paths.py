"""Output paths: `predict` never writes over its input (named by its path, a symbolic link or a
hard link), writes its output with the mode a plain `open` gives (the umask, not 0600), and
refuses an output it cannot write, root included, with one message and exit 2; the path checks
of predict, evaluate and export say what is actually wrong with a path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import test_export as ex

from autoprumux.cli import main
from autoprumux.config import Candidate

# the tiny export of test_export (its fixtures, found by name)
cache = ex.cache
pipes = ex.pipes
exports = ex.exports

TEXTS = ["a fine film", "dull", "bright and warm"]


@pytest.fixture
def model_dir(exports) -> Path:
    return exports("sst2", Candidate(sparsity=0.0, mux=1))


def _input(tmp_path: Path) -> Path:
    src = tmp_path / "in.csv"
    src.write_text("text\n" + "".join(f"{t}\n" for t in TEXTS))
    return src


def _predict(model_dir: Path, src: Path | str, out: Path | str) -> int:
    return main(["predict", str(model_dir), "--input", str(src), "--output", str(out)])


def _one_clean_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_predict_refuses_an_output_that_is_its_input(model_dir, tmp_path, capsys):
    src = _input(tmp_path)
    before = src.read_bytes()
    (tmp_path / "link.csv").symlink_to(src)
    os.link(src, tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "sub/../in.csv"):
        assert _predict(model_dir, src, out) == 2, out
        err = _one_clean_line(capsys.readouterr().err)
        assert f"--output {str(out)!r} is the --input file" in err, err
        assert src.read_bytes() == before
    assert (tmp_path / "link.csv").is_symlink()


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_predict_writes_its_output_with_the_process_umask(model_dir, tmp_path, umask):
    src = _input(tmp_path)
    old = os.umask(umask)
    try:
        assert _predict(model_dir, src, tmp_path / "out.jsonl") == 0
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o666 & ~umask
        # a file written over keeps its own mode, as with a plain open
        (tmp_path / "out.jsonl").chmod(0o640)
        assert _predict(model_dir, src, tmp_path / "out.jsonl") == 0
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


UNWRITABLE = [
    # (id, the output under tmp_path or absolute, the message names)
    ("under-a-file", "notes.txt/out.csv", "{tmp}/notes.txt' is a file, not a directory"),
    ("missing-dir", "missing/deeper/out.csv", "{tmp}/missing' does not exist; create it"),
    # root passes every permission check, yet no file can be created in /proc
    ("proc", "/proc/autoprumux-out.csv", "no file can be created in '/proc'"),
]


@pytest.mark.parametrize(
    "out, fragment", [u[1:] for u in UNWRITABLE], ids=[u[0] for u in UNWRITABLE]
)
def test_predict_refuses_an_output_it_cannot_write_root_included(
    model_dir, tmp_path, capsys, out, fragment
):
    src = _input(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    assert _predict(model_dir, src, tmp_path / out) == 2
    err = _one_clean_line(capsys.readouterr().err)
    assert fragment.format(tmp=tmp_path) in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_path_checks_say_what_is_wrong_with_the_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    is_a_file = f"{str(a_file)!r} is a file, not a directory"
    cases = [
        (["export", "--out", str(a_file / "sub")], is_a_file),
        (["export", "--out", str(tmp_path / "none" / "a" / "b")], f"{str(tmp_path / 'none')!r} "),
        (["evaluate", "--json", str(a_file / "e.json"), "--data-dir", str(ex.DATA)], is_a_file),
        (["evaluate", "--json", str(tmp_path / "loop" / "e.json")], "symbolic link that leads"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = _one_clean_line(capsys.readouterr().err)
        assert fragment in err, err
        assert "does not exist" not in err or "none" in argv[2], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop", "notes.txt"]
