"""Reading the files of an export directory safely: each is a regular file inside the folder
(a symbolic link that leaves it is refused, not followed), JSON files have a size cap, and the
manifest's size and sha256 of every file export wrote are checked before any of them is used.
A problem is a ConfigError naming the file and the fix, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprumux._cache import file_sha256
from autoprumux.errors import ConfigError

AGAIN = "export the model again (`autoprumux export --out DIR --force ...`)"
# far above what export writes (a few KiB), far below what would hurt to parse
MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    """What export wrote into one file of the directory: its size and sha256 (hex)."""

    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        size, digest = self.bytes, self.sha256
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(f"export manifest: file size {size!r} is not a non-negative int")
        if not isinstance(digest, str) or len(digest) != 64 or digest.strip(HEX):
            raise ConfigError(f"export manifest: {digest!r} is not a sha256 (64 hex digits)")


HEX = "0123456789abcdef"


def local_file(directory: str | Path, name: str) -> Path:
    """The resolved path of `name` in `directory`: it must exist and be a regular file within
    the directory (a link to a file inside it is followed, one leading outside is refused)."""
    root = Path(directory)
    p = root / name
    try:
        real = p.resolve(strict=True)
        inside = real.is_relative_to(root.resolve(strict=True))
    except FileNotFoundError:
        raise ConfigError(f"{str(p)!r} is missing: the export is incomplete; {AGAIN}") from None
    except (OSError, RuntimeError) as e:  # a symlink loop: RuntimeError before Python 3.13
        raise ConfigError(f"{str(p)!r} cannot be read ({type(e).__name__}); {AGAIN}") from None
    if not inside:
        raise ConfigError(
            f"{str(p)!r} is a link to {str(real)!r}, outside the export directory; nothing is "
            "read from outside it: copy the file in, or " + AGAIN
        )
    if not real.is_file():
        raise ConfigError(f"{str(p)!r} is not a regular file; {AGAIN}")
    return real


def read_json(directory: str | Path, name: str, *, limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of file `name` in `directory` (see `local_file`), at most `limit` bytes."""
    p = local_file(directory, name)
    shown = str(Path(directory) / name)
    size = p.stat().st_size
    if size > limit:
        raise ConfigError(
            f"{shown!r} is {size:,} bytes, more than the {limit:,} such a file can be; {AGAIN}"
        )
    try:
        return json.loads(p.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise ConfigError(f"{shown!r} is not readable JSON ({type(e).__name__}); {AGAIN}") from None


def verify_files(
    directory: str | Path, files: Mapping[str, FileRecord], required: Sequence[str]
) -> None:
    """Every file the manifest lists is in the directory (`local_file`) with the size and
    sha256 export recorded: a truncated, edited, replaced or bit-flipped file is refused
    before anything is read from it. Files the manifest does not list are never read; those
    named in `required` (the model's, which the runtime reads) must be listed."""
    d = Path(directory)
    missing = [n for n in required if n not in files]
    if missing:
        raise ConfigError(
            f"{str(d)!r}: the export manifest records no digest of {missing[0]}, so the "
            f"directory cannot be verified; {AGAIN}"
        )
    paths = {name: local_file(d, name) for name in sorted(files)}
    for name, p in paths.items():  # sizes first: a cut-short file needs no hashing
        size, want = p.stat().st_size, files[name].bytes
        if size != want:
            raise ConfigError(
                f"{str(d / name)!r} is {size:,} bytes but export wrote {want:,}: the file was "
                f"cut short or changed; {AGAIN}"
            )
    for name, p in paths.items():
        try:
            digest = file_sha256(p)
        except OSError as e:
            raise ConfigError(f"{str(d / name)!r} cannot be read ({type(e).__name__})") from None
        if digest != files[name].sha256:
            raise ConfigError(
                f"{str(d / name)!r} differs from what export wrote (its sha256 does not match "
                f"the manifest's): the file was changed or damaged; {AGAIN}"
            )
