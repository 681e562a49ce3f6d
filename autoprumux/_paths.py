"""What is wrong with a path, in words, for the checks that run before any work: a file where
a directory belongs, a directory missing from the way, a link that leads nowhere, or a directory
in which no file can be created. And the mode a file written through a temporary file should
get, as a plain `open` would have given it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def resolved(p: str | Path) -> Path:
    """`p` made absolute with its links followed where they lead somewhere (Python 3.11's
    `resolve` raises on a link loop: the loop is left in for `dir_problem` to name)."""
    try:
        return Path(p).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def dir_problem(d: str | Path) -> str | None:
    """Why `d` is not an existing directory, with the fix ("'/x/notes.txt' is a file, not a
    directory; ..."), naming the first part of it that is wrong; None when it is one."""
    d = Path(d)
    if d.is_dir():
        return None
    for part in (d, *d.parents):
        if part.is_dir():
            missing = part / d.relative_to(part).parts[0]
            return f"{str(missing)!r} does not exist; create it or choose another path"
        if part.is_symlink() and not part.exists():
            return (
                f"{str(part)!r} is a symbolic link that leads nowhere (a loop or a missing "
                "target); fix the link or choose another path"
            )
        if part.exists():
            return f"{str(part)!r} is a file, not a directory; choose another path"
    return f"{str(d)!r} does not exist; create it or choose another path"


def create_problem(d: str | Path) -> str | None:
    """Why no new file can be created in the directory `d`, or None. Tried, not inferred from
    the mode bits: root passes every permission check yet cannot create files in /proc or on a
    read-only filesystem."""
    try:
        fd, probe = tempfile.mkstemp(dir=d, prefix=".autoprumux-probe-")
    except OSError as e:
        return (
            f"no file can be created in {str(d)!r} ({e.strerror or type(e).__name__}); choose "
            "another path"
        )
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def new_file_mode(path: str | Path) -> int:
    """The permission bits for (re)writing `path`: those of the file it replaces, else 0666
    less the process's umask (a temporary file starts at 0600, readable by its owner only)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return 0o666 & ~mask
