"""On-disk artefact cache: entries are written to a temporary folder and renamed into place, so
an interrupted writer never leaves a half-written entry behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    env = os.environ.get("AUTOPRUMUX_CACHE")
    return Path(env).expanduser() if env else Path.cwd() / ".autoprumux" / "cache"


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ArtifactCache:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry(self, kind: str, key: dict[str, Any]) -> Path:
        return self.root / kind / key_hash(key)

    def has(self, kind: str, key: dict[str, Any]) -> bool:
        return (self.entry(kind, key) / "COMPLETE").is_file()

    def get_or_build(
        self, kind: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any] | None]
    ) -> tuple[Path, bool]:
        """Return (entry dir, hit). On a miss `build(tmp_dir)` fills a temporary directory, which
        is then renamed to the entry; whatever `build` returns is stored as `meta.json`."""
        final = self.entry(kind, key)
        if (final / "COMPLETE").is_file():
            return final, True
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{os.getpid()}-", dir=final.parent))
        try:
            meta = build(tmp) or {}
            (tmp / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            (tmp / "COMPLETE").write_text("ok\n")
            if final.exists():  # an incomplete leftover, or a concurrent writer finished first
                if (final / "COMPLETE").is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final, True
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # a concurrent writer renamed its entry in between
                if not (final / "COMPLETE").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return final, True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, False

    @staticmethod
    def _remove_stale(final: Path) -> None:
        """Delete temporary folders of writers of this entry that died (killed, crashed)."""
        for d in final.parent.glob(f".tmp-{final.name}-*"):
            parts = d.name[len(f".tmp-{final.name}-") :].split("-", 1)
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
        p = entry / "meta.json"
        return json.loads(p.read_text()) if p.is_file() else {}
