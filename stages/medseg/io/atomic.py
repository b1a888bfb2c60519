"""Write outputs so that a reader never sees a half-written artifact.

``atomic_dir`` and ``atomic_file`` write under a hidden temporary sibling
(``.<name>.tmp-<pid>-*``) and move it into place with ``os.replace`` only when
complete; ``remove_stale_siblings`` deletes what a dead writer left. Why it is
safe against Ctrl-C, SIGTERM and SIGKILL: docs/ARCHITECTURE.md, "Atomic writes".
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .signals import DeferredStops, defer_stops

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    stops = defer_stops()
    tmp = Path(_created(stops, lambda: tempfile.mkdtemp(prefix=_tmp_prefix(final), dir=final.parent)))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
        stops.release()  # one that came meanwhile is raised here, where the cleanup below sees it
        yield tmp
        _swap_into_place(tmp, final)
    except BaseException:
        _cleanly(lambda: shutil.rmtree(tmp, ignore_errors=True), stops)  # nothing left to remove once swapped
        raise


def _swap_into_place(tmp: Path, final: Path) -> None:
    # os.replace cannot move a directory onto a non-empty one, so the old
    # output is first renamed aside and deleted after the new one is in place.
    # Ctrl-C or SIGTERM between the two renames would leave neither version
    # in place, so they wait until both are done, and the old one goes even
    # when one of them is taken then.
    old = None
    stops = defer_stops()
    try:
        if final.exists() or final.is_symlink():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        try:
            stops.release()
        finally:
            if old is not None:
                _cleanly(lambda: _remove(old))


@contextlib.contextmanager
def atomic_file(final: Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file that replaces ``final`` once closed without error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    stops = defer_stops()
    fd, name = _created(stops, lambda: tempfile.mkstemp(prefix=_tmp_prefix(final), dir=final.parent))
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        os.close(fd)
        stops.release()  # one that came meanwhile is raised here, where the cleanup below sees it
        with open(name, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, final)
    except BaseException:
        _cleanly(lambda: _remove(Path(name)), stops)
        raise


# A temporary sibling is created with Ctrl-C and SIGTERM deferred, and they
# are taken only inside the block that removes it on any exception: otherwise
# a signal landing between its creation and that block would leave it. The
# removal itself defers them too, so a second stop cannot cut it short.
def _created(stops: DeferredStops, make: Callable[[], T]) -> T:
    """``make()``; the stops are taken when it fails."""
    try:
        return make()
    except BaseException:
        stops.release()
        raise


def _cleanly(remove: Callable[[], None], deferred: DeferredStops | None = None) -> None:
    """``remove()`` with stops deferred, then those ``deferred`` since earlier (the block it cleans up after
    may have failed before releasing them) and those that came meanwhile are taken."""
    stops = defer_stops()
    try:
        remove()
    finally:
        try:
            stops.release()
        finally:
            if deferred is not None:
                deferred.release()


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-{os.getpid()}-"


def remove_stale_siblings(final: Path) -> list[Path]:
    """Delete the temporary siblings of ``final`` whose writing process is gone; return them.

    Siblings of a live process (another writer, or this one) are left alone.
    """
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(?:tmp-(\d+)-.+|old-(\d+))")
    removed = []
    with os.scandir(final.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and not process_alive(int(match.group(1) or match.group(2))):
                removed.append(final.parent / entry.name)
    for path in removed:
        log.info("removing %s, left by an interrupted run", path)
        _remove(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
