"""Write outputs so that a reader never sees a half-written artifact.

Everything is first written under a temporary sibling path and moved into
place with ``os.replace`` only once it is complete. If the process dies
before that, only a ``.tmp-*`` sibling remains, which no stage or DVC
declares as an output.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_into_place(tmp, final)


def _swap_into_place(tmp: Path, final: Path) -> None:
    # os.replace cannot move a directory onto a non-empty one, so the old
    # output is first renamed aside and deleted after the new one is in place.
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


@contextlib.contextmanager
def atomic_file(final: Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file that replaces ``final`` once closed without error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.fchmod(fd, 0o644)  # mkstemp makes it private; outputs are meant to be shared
    os.close(fd)
    try:
        with open(name, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
