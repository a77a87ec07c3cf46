"""Write-then-rename, so an interrupted write never replaces or half-writes a result.

A write goes to a temporary name beside its target, `.tmp-<target>-<host>-<pid>-<random>`,
and an overwritten directory is moved aside to `.old-<target>-<host>-<pid>-<random>/x` until
the new one is in place. A process killed meanwhile leaves these behind; the first atomic write
of a process into a folder removes the ones that are stale: those written from this host by a
process that is no longer running, and those of another host sharing the folder (whose
processes cannot be checked) once older than `STALE_AFTER_S`. A stale `.old-` whose target is
missing (the writer died between the two renames) is renamed back onto its target first, so
the previous result is never lost. Names of other tools, and our names from live processes, are
never touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)

STALE_AFTER_S = 7 * 24 * 3600
_TEMP = re.compile(r"^\.(?P<kind>tmp|old)-(?P<target>.+)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-\w+$")
_swept: set[str] = set()  # folders this process has already swept


@functools.cache
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _prefix(kind: str, path: str) -> str:
    return f".{kind}-{os.path.basename(path)}-{_host()}-{os.getpid()}-"


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(entry: os.DirEntry, match: re.Match) -> bool:
    if match["host"] == _host():
        return not _running(int(match["pid"]))
    try:  # another host's: its processes cannot be checked, so only by age
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def sweep_stale(folder: str | os.PathLike) -> list[str]:
    """Remove the stale temporaries of killed writes in `folder` (see the module docstring);
    returns what was removed or restored."""
    folder = os.fspath(folder)
    done = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        stale = [(e, m) for e in entries if (m := _TEMP.match(e.name)) and _is_stale(e, m)]
    for entry, match in stale:
        target = os.path.join(folder, match["target"])
        previous = os.path.join(entry.path, "x")
        try:
            if match["kind"] == "old" and not os.path.lexists(target) and os.path.lexists(previous):
                os.replace(previous, target)  # the writer died between its two renames
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError as e:  # another process swept it first, or it is not ours to remove
            log.debug("left %s: %s", entry.path, e)
            continue
        log.info("removed %s, left by an interrupted write (pid %s)", entry.path, match["pid"])
        done.append(entry.path)
    return done


def _sweep_once(folder: str) -> None:
    if folder not in _swept:
        _swept.add(folder)
        sweep_stale(folder)


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> None:
    """An `OSError` naming `path` unless a file (or a `directory`) can be written there: what
    is there already is of that kind, and the nearest existing folder above it is a writable
    directory (for a directory that exists, it must be writable too)."""
    text = os.fspath(path)
    path = os.path.abspath(text)
    if not directory and os.path.isdir(path):
        raise IsADirectoryError(f"{text}: is a directory, not a file")
    if directory and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{text}: is a file, not a directory")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{text}: {folder} is a file, not a directory")
    for where in (folder, path) if directory and os.path.isdir(path) else (folder,):
        if not os.access(where, os.W_OK | os.X_OK):
            raise PermissionError(f"{text}: cannot write in {where} (no permission or read-only)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reserve(path: str) -> tuple[int, str]:
    """An open descriptor and the name of a new empty temporary file beside `path`."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    _sweep_once(parent)
    fd, tmp = tempfile.mkstemp(prefix=_prefix("tmp", path), dir=parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
    return fd, tmp


@contextlib.contextmanager
def _renamed_onto(tmp: str, path: str) -> Iterator[None]:
    try:
        yield
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside `path`; rename it onto `path` when the block succeeds.
    For a file this process writes itself, `atomic_open` is cheaper."""
    path = os.fspath(path)
    fd, tmp = _reserve(path)
    os.close(fd)
    with _renamed_onto(tmp, path):
        yield tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """`open(path, mode, **kwargs)` for writing, through a temporary file renamed onto `path`
    when the block succeeds. The file is the one `mkstemp` created, never reopened: reopening
    it for writing truncates it, and ext4 flushes a file truncated to zero when it is closed
    (`auto_da_alloc`), which cost a 1 GB merge a third of its time."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a 'w' mode")
    path = os.fspath(path)
    fd, tmp = _reserve(path)
    with _renamed_onto(tmp, path), open(fd, mode, **kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `path`; move it onto `path` when the block succeeds.

    An existing `path` is kept unless `overwrite`, and then replaced only after the new
    directory is complete.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite to replace it)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    _sweep_once(parent)
    tmp = tempfile.mkdtemp(prefix=_prefix("tmp", path), dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=_prefix("old", path), dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
