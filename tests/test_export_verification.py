"""An export directory is verified when it is loaded, never half-written, and `--force` never
deletes what the user added: one tiny export per module, copied per case.

A damaged or tampered folder is refused with one ConfigError through `autoprumux.load` and
exit 2 with one line through `autoprumux predict`. Most cases are checked twice over: an edit
alone fails the manifest's sha256, and an edit whose digest was rewritten into the manifest
(`_rehash`) is still refused by the check behind it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GLUE_DIR as DATA
from conftest import ctrl_c_delivered
from test_search import TINY_RECIPE, TP_ARGS

import autoprumux
from autoprumux.cli import main
from autoprumux.deploy import CALIBRATION_FILE, MANIFEST_FILE, read_manifest
from autoprumux.errors import ConfigError
from autoprumux.export import check_out_dir

WEIGHTS, CONFIG = "model.safetensors", "autoprumux_config.json"
# the tiny recipe's flags (the CLI has no flag for the warm-up corpus or importance sizes: N=1
# needs neither)
RECIPE = [
    f"--{k.replace('_', '-')}={v}"
    for k, v in TINY_RECIPE.items()
    if k not in ("warmup_corpus_size", "importance_examples")
]


@pytest.fixture(scope="module")
def export_argv(tiny_checkpoint, tmp_path_factory) -> list[str]:
    """The export command's flags after --out: pruned, N=1, over a shared cache."""
    cache = tmp_path_factory.mktemp("verify_cache")
    flags = ["--sparsity", "0.5", "--mux", "1", "--model", tiny_checkpoint, "--no-register"]
    return [*flags, *RECIPE, "--data-dir", str(DATA), "--cache-dir", str(cache), *TP_ARGS]


@pytest.fixture(scope="module")
def exported(export_argv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify_exports") / "model"
    assert main(["export", "--out", str(out), *export_argv]) == 0
    return out


@pytest.fixture
def folder(exported, tmp_path) -> Path:
    """A private copy of the export."""
    d = tmp_path / "copy"
    shutil.copytree(exported, d)
    return d


def _rehash(d: Path) -> None:
    """Rewrite the manifest's digests to match the files as they are now (a consistent but
    tampered folder)."""
    raw = json.loads((d / MANIFEST_FILE).read_text())
    for name, rec in raw.get("files", {}).items():
        data = (d / name).read_bytes()
        rec.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (d / MANIFEST_FILE).write_text(json.dumps(raw))


def _edit_json(d: Path, name: str, edit: Callable[[dict], object]) -> None:
    data = json.loads((d / name).read_text())
    new = edit(data)
    (d / name).write_text(json.dumps(data if new is None else new))


def _refused(d: Path, match: str, tmp_path: Path, capsys, **load_kw) -> None:
    """`load` raises one ConfigError matching `match`; `predict` exits 2 with one line."""
    with pytest.raises(ConfigError, match=match):
        autoprumux.load(d, **load_kw)
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("text\na fine film\n")
    capsys.readouterr()
    assert main(["predict", str(d), "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoprumux: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()


def test_an_export_lists_the_digest_of_every_file_and_loads(exported):
    m = read_manifest(exported)
    on_disk = {p.name for p in exported.iterdir()} - {MANIFEST_FILE}
    assert set(m.files) == on_disk and {WEIGHTS, CONFIG, CALIBRATION_FILE, "README.md"} <= on_disk
    for name, rec in m.files.items():
        assert rec.bytes == (exported / name).stat().st_size and len(rec.sha256) == 64
    assert len(autoprumux.load(exported).predict(["a fine film", "dull"])) == 2
    assert autoprumux.load(exported, precision="int8").model is not None


def _truncate(d: Path) -> None:
    with open(d / WEIGHTS, "r+b") as f:
        f.truncate((d / WEIGHTS).stat().st_size // 2)


def _flip_a_bit(d: Path) -> None:
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-100] ^= 0x01  # a bit of the last tensor: the header stays valid
    (d / WEIGHTS).write_bytes(bytes(data))


def _config(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda d: _edit_json(d, CONFIG, edit)


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda d: _edit_json(d, MANIFEST_FILE, edit)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda c: c.__setitem__(key, value)


def _hidden(c: dict) -> None:
    c["encoder"]["hidden_size"] = 200_000


def _auto_map(d: Path) -> None:
    _edit_json(d, "tokenizer_config.json", _set("auto_map", {"AutoTokenizer": ["x.Tok", None]}))


# an edit that changes a file's size is caught before it is hashed
CHANGED = r"(is [\d,]+ bytes but export wrote|differs from what export wrote)"
# (id, damage, rewrite the manifest's digests after it, what the refusal says)
DAMAGED = [
    ("truncated-weights", _truncate, False, r"model.safetensors' is [\d,]+ bytes but export wrote"),
    ("truncated-weights-rehashed", _truncate, True, "not a readable safetensors file"),
    ("bit-flipped-weights", _flip_a_bit, False, "differs from what export wrote"),
    ("config-edited", _config(_hidden), False, f"{CONFIG}' {CHANGED}"),
    ("config-not-json", lambda d: (d / CONFIG).write_text("{not json"), True, "not readable JSON"),
    ("config-a-list", _config(lambda c: [c]), True, "holds a JSON list, not a model config"),
    ("num-labels-two", _config(_set("num_labels", "two")), True, "num_labels 'two' is not an int"),
    (
        "config-names-students",
        _config(_set("format", "autoprumux.StudentEnsemble/1")),
        True,
        "holds a 'autoprumux.StudentEnsemble/1' but the manifest describes a prumux model",
    ),
    (
        "config-names-another-class",
        _config(_set("format", "transformers.BertModel/1")),
        True,
        "names the model format 'transformers.BertModel/1'",
    ),
    (
        "hidden-size-200000",
        _config(_hidden),
        True,
        "describes a model of at least [\\d,]+ parameters but .* holds",
    ),
    (
        "hidden-size-a-string",
        _config(lambda c: c["encoder"].__setitem__("hidden_size", "32")),
        True,
        r"encoder.hidden_size '32' is not an integer >= 1",
    ),
    (
        "vocab-size-smaller-than-the-weights",
        _config(lambda c: c["encoder"].__setitem__("vocab_size", 1000)),
        True,
        "does not load into the model",
    ),
    (
        "three-labels-for-a-two-class-head",
        _manifest(_set("label_names", ["a", "b", "c"])),
        False,
        "names 3 labels .* has 2 classes",
    ),
    ("max-seq-len-1e9", _manifest(_set("max_seq_len", 1e9)), False, "max_seq_len 1000000000.0"),
    (
        "max-seq-len-10**9",
        _manifest(_set("max_seq_len", 10**9)),
        False,
        r"max_seq_len \(1000000000\) \+ mux prefix \(0\) exceeds the model's 128 positions",
    ),
    ("auto-map", _auto_map, True, r"asks for code from the model folder \(auto_map\)"),
    ("auto-map-not-rehashed", _auto_map, False, f"tokenizer_config.json' {CHANGED}"),
    (
        "manifest-lists-a-path",
        _manifest(lambda m: m["files"].__setitem__("../x", m["files"][WEIGHTS])),
        False,
        "files lists '../x'",
    ),
    (
        "older-format-without-digests",
        _manifest(lambda m: {**m, "format": "autoprumux.export/1", "files": None}),
        False,
        "written by an older autoprumux without file digests.*export the model again",
    ),
    ("manifest-deep-json", lambda d: (d / MANIFEST_FILE).write_text("[" * 100_000), False, "JSON"),
    ("weights-missing", lambda d: (d / WEIGHTS).unlink(), False, "model.safetensors' is missing"),
]


@pytest.mark.parametrize(
    "damage,rehash,match", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED]
)
def test_a_damaged_export_is_refused_with_one_message(
    folder, tmp_path, capsys, damage, rehash, match
):
    damage(folder)
    if rehash:
        _rehash(folder)
    _refused(folder, match, tmp_path, capsys)


def test_weights_linked_to_another_export_outside_are_not_followed(folder, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    shutil.copytree(folder, other)
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).symlink_to(other / WEIGHTS)  # identical bytes: the digest matches
    _refused(folder, "is a link to .*elsewhere.*, outside the export directory", tmp_path, capsys)
    # a link that stays inside the folder is followed
    (folder / WEIGHTS).unlink()
    shutil.move(other / WEIGHTS, folder / "weights.bin")
    (folder / WEIGHTS).symlink_to("weights.bin")
    assert autoprumux.load(folder).model is not None


def test_a_linked_manifest_outside_is_refused(folder, tmp_path, capsys):
    shutil.move(folder / MANIFEST_FILE, tmp_path / "manifest.json")
    (folder / MANIFEST_FILE).symlink_to(tmp_path / "manifest.json")
    _refused(folder, "outside the export directory", tmp_path, capsys)


def test_files_the_manifest_does_not_list_are_never_read(folder):
    # transformers would read these; load copies only the listed tokenizer files
    (folder / "added_tokens.json").write_text("{not json")
    (folder / "config.json").symlink_to("/nonexistent/config.json")
    (folder / "NOTES.txt").write_text("mine")
    assert len(autoprumux.load(folder).predict(["a fine film"])) == 1


def test_a_missing_or_bad_int8_calibration_is_refused(folder, tmp_path, capsys):
    (folder / CALIBRATION_FILE).write_text('{"ranges": 3}')
    _rehash(folder)
    with pytest.raises(ConfigError, match="is not a valid int8 calibration"):
        autoprumux.load(folder, precision="int8")
    assert autoprumux.load(folder, precision="fp32").model is not None
    (folder / CALIBRATION_FILE).unlink()
    _refused(folder, "int8_calibration.json' is missing", tmp_path, capsys)
    _manifest(lambda m: m["files"].pop(CALIBRATION_FILE) and None)(folder)
    with pytest.raises(ConfigError, match="holds no int8_calibration.json, which int8 needs"):
        autoprumux.load(folder, precision="int8")


# address space allowed beyond what the interpreter holds with torch imported: the tiny model
# loads in far less, the model of `hidden_size: 200000` would need about 25 GB
MEMORY_HEADROOM = 2 << 30


def test_a_config_far_larger_than_its_weights_allocates_nothing(folder):
    """`hidden_size: 200000` with matching digests is refused from the weights' header; run
    under an address-space cap, so building it first would fail rather than exhaust memory."""
    _config(_hidden)(folder)
    _rehash(folder)
    code = (
        "import re, resource, sys, autoprumux, torch\n"
        "from transformers import AutoTokenizer\n"
        "vm = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) << 10\n"
        f"cap = vm + {MEMORY_HEADROOM}\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
        "try:\n"
        f"    autoprumux.load({str(folder)!r})\n"
        "except autoprumux.errors.ConfigError as e:\n"
        "    print('refused:', e)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0 and "refused:" in r.stdout, r.stderr[-2000:]
    assert "describes a model of at least" in r.stdout and "model.safetensors" in r.stdout


# ---- never half-written -----------------------------------------------------------------------
def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _export_paused(argv: list[str], ready: Path) -> subprocess.Popen:
    """`autoprumux export` in a subprocess that pauses, its directory complete and checked but
    not yet renamed into place, after writing `ready`."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import autoprumux.export._build as b\n"
        "check = b._self_check\n"
        "def paused(*a, **k):\n"
        "    check(*a, **k)\n"
        f"    Path({str(ready)!r}).write_text('ready')\n"
        "    time.sleep(300)\n"
        "b._self_check = paused\n"
        "from autoprumux.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOPRUMUX_PROGRESS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_delivered,
    )


def _wait_for(ready: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"the export ended first: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the export did not reach its pause")
        time.sleep(0.05)


@pytest.mark.parametrize("sig,how", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_signal_during_export_removes_the_temporary_directory(export_argv, tmp_path, sig, how):
    out = tmp_path / "model"
    proc = _export_paused(["export", "--out", str(out), *export_argv], tmp_path / "ready")
    _wait_for(tmp_path / "ready", proc)
    assert len(_temps(out)) == 1  # the temporary directory exists while it writes
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last == f"autoprumux: export stopped ({how}): nothing was written to {out}", err
    assert _temps(out) == [] and not out.exists()


def test_a_killed_exports_leftovers_are_removed_by_the_next_export(export_argv, tmp_path):
    out = tmp_path / "model"
    argv = ["export", "--out", str(out), *export_argv]
    proc = _export_paused(argv, tmp_path / "ready")
    _wait_for(tmp_path / "ready", proc)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    stale = _temps(out)
    assert len(stale) == 1 and (out.parent / stale[0] / WEIGHTS).is_file()
    # a live export's directory (its lock held) is left alone
    live = out.parent / f".{out.name}.tmp-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(argv) == 0
        assert _temps(out) == [live.name]
    finally:
        os.close(fd)
    assert autoprumux.load(out).model is not None


# ---- --force ----------------------------------------------------------------------------------
def test_force_refuses_a_folder_holding_what_export_did_not_write(
    folder, export_argv, tmp_path, capsys
):
    check_out_dir(folder, force=True)  # an earlier export alone is replaced
    (folder / "NOTES.txt").write_text("mine")
    (folder / "mydata").mkdir()
    (folder / "mydata" / "rows.csv").write_text("text\n")
    with pytest.raises(ConfigError, match=r"holds what export did not write: NOTES.txt, mydata/"):
        check_out_dir(folder, force=True)
    capsys.readouterr()
    assert main(["export", "--out", str(folder), "--force", *export_argv]) == 2
    err = capsys.readouterr().err
    assert "NOTES.txt, mydata/" in err and err.count("\n") == 1, err
    assert (folder / "NOTES.txt").read_text() == "mine" and (
        folder / "mydata" / "rows.csv"
    ).exists()


def test_force_replaces_an_export_of_an_older_format(folder):
    """An export written before the manifest listed its files: its fixed names are export's."""
    _manifest(lambda m: {**m, "format": "autoprumux.export/1", "files": None})(folder)
    check_out_dir(folder, force=True)
    (folder / "NOTES.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds what export did not write: NOTES.txt;"):
        check_out_dir(folder, force=True)
