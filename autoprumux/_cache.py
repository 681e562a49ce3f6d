"""On-disk artefact cache: entries are written to a temporary folder and renamed into place, so
an interrupted writer never leaves a half-written entry behind.

Each entry's `COMPLETE` marker holds its manifest: the size and sha256 of every other file in
the entry, written last before the rename. A lookup (`get_or_build`, `has`, `meta`) checks the
entry against it, so a truncated, missing or edited file (weights, meta.json) is a miss that is
moved aside and rebuilt instead of a traceback on every run or a silently wrong model. Digests
are memoised per process by each file's stat, so a search that reads an entry many times hashes
its ~90 MB of weights once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprumux.errors import AutoPruMuxError

log = logging.getLogger("autoprumux")

MARKER = "COMPLETE"
MANIFEST_FORMAT = 1
# a file whose mtime or ctime is this recent is not memoised: a later write within the same
# timestamp tick (coarse clocks, 1-2 s filesystems) would keep the same stat and be missed
# (git's "racy clean" rule)
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20

_digest_lock = threading.Lock()
# absolute path -> (stat signature, sha256 hex); one slot per path, so memory stays bounded
_digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}


class CacheEntryError(AutoPruMuxError, RuntimeError):
    """A cache entry failed verification where it cannot be rebuilt (see `ArtifactCache.meta`)."""


def default_cache_dir() -> Path:
    env = os.environ.get("AUTOPRUMUX_CACHE")
    return Path(env).expanduser() if env else Path.cwd() / ".autoprumux" / "cache"


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's contents, streamed in chunks and memoised per process by
    (path, size, mtime_ns, ctime_ns, inode): an unchanged file is hashed once per process,
    a rewritten one (new mtime/ctime/inode) again. ctime cannot be set back from user space,
    so restoring an edited file's mtime does not keep a stale digest."""
    p = os.path.abspath(path)
    started = time.time_ns()
    st = os.stat(p)
    sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _digest_lock:
        memo = _digests.get(p)
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    after = os.stat(p)
    stable = (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) == sig
    if stable and max(st.st_mtime_ns, st.st_ctime_ns) < started - RACY_NS:
        with _digest_lock:
            _digests[p] = (sig, digest)
    return digest


def _entry_files(entry: Path) -> list[str]:
    """Relative paths (posix) of the files in an entry, the marker excluded."""
    out = []
    for dirpath, _, files in os.walk(entry):
        for name in files:
            rel = Path(dirpath, name).relative_to(entry).as_posix()
            if rel != MARKER:
                out.append(rel)
    return sorted(out)


def write_manifest(entry: Path) -> None:
    """Record the size and sha256 of every file in `entry` in its marker (written last)."""
    files = {}
    for rel in _entry_files(entry):
        f = entry / rel
        files[rel] = {"size": f.stat().st_size, "sha256": file_sha256(f)}
    text = json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True)
    (entry / MARKER).write_text(text + "\n")


def verify_entry(entry: Path) -> str | None:
    """None when `entry` matches its manifest, else the first problem, naming the file.

    Entries written before manifests existed (marker "ok") fail too, so they are rebuilt once:
    nothing can tell an intact one from an edited one, and the model id of every local
    checkpoint (the packaged model included) changed with content hashing in the same release,
    so their keys are unreachable anyway; only hub-model entries pay the one-time rebuild."""
    try:
        text = (entry / MARKER).read_text()
    except FileNotFoundError:
        return f"{MARKER}: missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"{MARKER}: unreadable ({type(e).__name__})"
    if text.strip() == "ok":
        return f"{MARKER}: written by an older autoprumux, without file digests"
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError
        expected = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{MARKER}: not a valid manifest"
    present = _entry_files(entry)
    for rel in sorted(expected):  # cheap checks first: a truncated file needs no hashing
        f = entry / rel
        if not f.is_file():
            return f"{rel}: missing"
        size = f.stat().st_size
        if size != expected[rel][0]:
            return f"{rel}: {size} bytes, the manifest says {expected[rel][0]}"
    extra = [rel for rel in present if rel not in expected]
    if extra:
        return f"{extra[0]}: not in the manifest"
    for rel in sorted(expected):
        try:
            if file_sha256(entry / rel) != expected[rel][1]:
                return f"{rel}: contents differ from the manifest (sha256)"
        except OSError as e:
            return f"{rel}: unreadable ({type(e).__name__})"
    return None


def _quarantine(entry: Path, problem: str) -> None:
    """Move a broken entry out of the way (an atomic rename frees its path at once) and
    delete it; a crash mid-delete leaves a `.corrupt-*` sibling that `_remove_stale` clears."""
    log.warning("cache entry %s failed verification (%s); rebuilding it", entry, problem)
    aside = entry.parent / f".corrupt-{entry.name}-{os.getpid()}-{time.time_ns()}"
    try:
        os.replace(entry, aside)
    except FileNotFoundError:  # another process moved it first
        return
    except OSError:  # e.g. `aside` exists: fall back to deleting in place
        shutil.rmtree(entry, ignore_errors=True)
        return
    shutil.rmtree(aside, ignore_errors=True)


def _valid_or_moved(entry: Path) -> bool:
    """True when `entry` is complete and intact; a complete but broken one is moved aside."""
    if not (entry / MARKER).is_file():
        return False
    problem = verify_entry(entry)
    if problem is None:
        return True
    _quarantine(entry, problem)
    return False


class ArtifactCache:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry(self, kind: str, key: dict[str, Any]) -> Path:
        return self.root / kind / key_hash(key)

    def has(self, kind: str, key: dict[str, Any]) -> bool:
        """Whether an intact entry exists (a broken one is moved aside: the next build redoes it)."""
        return _valid_or_moved(self.entry(kind, key))

    def get_or_build(
        self, kind: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any] | None]
    ) -> tuple[Path, bool]:
        """Return (entry dir, hit). On a miss `build(tmp_dir)` fills a temporary directory, which
        is then renamed to the entry; whatever `build` returns is stored as `meta.json`. An
        entry that fails verification is a miss (moved aside with a warning, then rebuilt)."""
        final = self.entry(kind, key)
        if _valid_or_moved(final):
            return final, True
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{os.getpid()}-", dir=final.parent))
        try:
            meta = build(tmp) or {}
            (tmp / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            write_manifest(tmp)
            if final.exists():  # an incomplete leftover, or a concurrent writer finished first
                if _valid_or_moved(final):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final, True
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # a concurrent writer renamed its entry in between
                if not (final / MARKER).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return final, True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, False

    @staticmethod
    def _remove_stale(final: Path) -> None:
        """Delete temporary folders of writers of this entry that died (killed, crashed), and
        broken entries a dead process was deleting."""
        for prefix in (f".tmp-{final.name}-", f".corrupt-{final.name}-"):
            for d in final.parent.glob(f"{prefix}*"):
                parts = d.name[len(prefix) :].split("-", 1)
                try:
                    pid = int(parts[0])
                except ValueError:
                    continue
                if pid == os.getpid():
                    continue
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    shutil.rmtree(d, ignore_errors=True)
                except PermissionError:
                    pass

    @staticmethod
    def meta(entry: Path) -> dict[str, Any]:
        """The entry's `meta.json`, after checking the entry (memoised, so cheap right after
        `get_or_build`). A broken entry is moved aside and raises: this call cannot rebuild
        it, the next `get_or_build` will."""
        p = entry / "meta.json"
        if not (entry / MARKER).is_file():  # not a finished entry (e.g. a build's own folder)
            return json.loads(p.read_text()) if p.is_file() else {}
        problem = verify_entry(entry)
        if problem is not None:
            _quarantine(entry, problem)
            raise CacheEntryError(
                f"cache entry {entry} failed verification ({problem}) and was moved aside; "
                "run again to rebuild it"
            )
        return json.loads(p.read_text())
