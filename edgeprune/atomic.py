"""The one atomic writer: files and folders appear whole or not at all, even when the run is interrupted.

Every result EdgePrune writes (run folders, sweep cells, profiles, checkpoints, reports) goes through this
module.  A target ``DIR/NAME`` is built under a temporary name next to it, ``DIR/.NAME.tmp-PID-TOKEN``
(``PID`` = the writing process, ``TOKEN`` = 8 random hex digits), and renamed into place at the end; a
replaced target is first moved aside to ``DIR/.NAME.old-PID-TOKEN`` and removed after.  So:

* **Ctrl-C / SIGTERM at any instant** removes the temporary: the body runs in ``try``; while a write is in
  progress in the main thread, SIGTERM and SIGHUP at their default action (which would kill the process on
  the spot) raise :class:`Terminated` instead, and the short steps that create, publish and remove the
  temporary defer SIGINT/SIGTERM/SIGHUP to their end.  Temporaries still registered when the interpreter
  exits are removed by an ``atexit`` hook.
* **A killed run (SIGKILL, power loss of the process)** can leave a temporary; its name carries the dead
  writer's PID, so the next write into the same folder removes it (and logs one warning line)
  — :func:`remove_stale`.  A temporary whose writer still runs is left alone.
* **Modes**: nothing is ``chmod``-ed and the process umask is never changed.  Folders are created with
  ``os.mkdir(path, 0o777)`` and files by the writer's ordinary ``open``, so the kernel applies the umask
  (and any default ACL) exactly as for any other file: ``0o666 & ~umask`` for files.

Atomic with respect to the process (a crash or a signal), not to a power cut of the machine (no fsync).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from edgeprune.errors import ResultError

__all__ = [
    "Terminated",
    "atomic_dir",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale",
    "signals_raise",
    "temp_name",
]

_log = logging.getLogger(__name__)

#: ``.NAME.tmp-PID-TOKEN`` (a write in progress) or ``.NAME.old-PID-TOKEN`` (a replaced target).
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")

_CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_ACTIVE: set[Path] = set()  # temporaries of this process still being written (absolute paths)
_ACTIVE_LOCK = threading.Lock()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a write was in progress (a :class:`KeyboardInterrupt`, so every
    command's Ctrl-C path handles it); ``signum`` says which, for the exit status ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def temp_name(target: Path, kind: str = "tmp") -> Path:
    """A fresh temporary path next to ``target``: ``.NAME.<kind>-PID-TOKEN``."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise :class:`Terminated` (where they would kill the process).

    Only signals at their default action are taken over (a handler someone installed is kept), only in the
    main thread (elsewhere the block is a no-op), and the previous handlers come back at the end.
    """
    if not _in_main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP during a few system calls, then deliver them to the handlers again.

    Used around creating, publishing and removing a temporary, so an interrupt cannot fall between a
    system call and the bookkeeping that makes it undoable.  Main thread only (signals are delivered
    there); a no-op elsewhere.
    """
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in _CAUGHT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)  # the restored handler acts on it now


def _register(path: Path) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.add(path.absolute())


def _unregister(path: Path) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(path.absolute())


def _remove(path: Path) -> None:
    """Remove a file or folder tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@atexit.register
def _remove_active() -> None:
    """At interpreter exit no write is in progress any more: what is still registered is debris."""
    with _ACTIVE_LOCK:
        leftovers = list(_ACTIVE)
        _ACTIVE.clear()
    for path in leftovers:
        _remove(path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer is gone (see the module docstring); return them.

    One warning line is logged per removal.  Temporaries of running processes, and this process's own
    writes in progress, are kept.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing or unreadable: nothing to clean
        return removed
    with _ACTIVE_LOCK:
        active = set(_ACTIVE)
    for entry in entries:
        m = TEMP_PATTERN.match(entry.name)
        if m is None:
            continue
        path = Path(entry.path)
        pid = int(m["pid"])
        mine_but_orphaned = pid == os.getpid() and path.absolute() not in active
        if mine_but_orphaned or not _pid_alive(pid):
            _remove(path)
            removed.append(path)
            _log.warning("removed %s: left by process %d, which is no longer running", path, pid)
    return removed


@contextmanager
def atomic_file(target: str | os.PathLike[str], *, clean_stale: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s content to; it replaces ``target`` when the block ends.

    The temporary is not created here: the caller's writer creates it (so it gets the usual mode).  An
    exception or interrupt in the block removes it and leaves ``target`` as it was.  ``clean_stale``:
    first remove stale temporaries in the folder (a scan of it; sweeps writing thousands of cells do that
    once instead).
    """
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultError(f"{path}: cannot create output: {exc.strerror}") from None
    if clean_stale:
        remove_stale(path.parent)
    tmp = temp_name(path)
    with signals_raise():
        _register(tmp)
        try:
            yield tmp
            with _deferred():
                os.replace(tmp, path)
                _unregister(tmp)
        except BaseException:
            with _deferred():
                _remove(tmp)
                _unregister(tmp)
            raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, clean_stale: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, clean_stale=clean_stale) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, clean_stale: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, clean_stale=clean_stale) as tmp:
        tmp.write_bytes(data)


def _publish_dir(tmp: Path, target: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` (only with ``replace``) is moved aside first."""
    if not replace or not target.exists():
        try:
            os.rename(tmp, target)  # replaces an empty folder, fails on anything else
        except OSError as exc:
            if not target.exists():
                raise
            raise ResultError(f"{target}: exists and is not empty (pass --force to replace it)") from exc
        return
    old = temp_name(target, "old")
    _register(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        _unregister(old)
        raise


@contextmanager
def atomic_dir(target: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh empty temporary folder; it becomes ``target`` when the block ends.

    ``replace``: an existing ``target`` is replaced (moved aside, then removed); without it an existing
    ``target`` is a :class:`ResultError` at publication.  An exception or interrupt anywhere removes the
    temporary and leaves ``target`` as it was.  Stale temporaries in the parent folder are removed first.
    """
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultError(f"{path}: cannot create output: {exc.strerror}") from None
    remove_stale(path.parent)
    tmp = temp_name(path)
    with signals_raise():
        with _deferred():
            _register(tmp)
            try:
                os.mkdir(tmp, 0o777)  # the umask applies, as for any folder
            except OSError as exc:
                _unregister(tmp)
                raise ResultError(f"{path}: cannot create output: {exc.strerror}") from None
        try:
            yield tmp
            with _deferred():
                _publish_dir(tmp, path, replace)
                _unregister(tmp)
        except BaseException:
            with _deferred():
                _remove(tmp)
                _unregister(tmp)
            raise
    _drop_replaced(path)


def _drop_replaced(target: Path) -> None:
    """Remove the folders this process moved aside when replacing ``target``."""
    prefix = f".{target.name}.old-{os.getpid()}-"
    with _ACTIVE_LOCK:
        mine = [p for p in _ACTIVE if p.parent == target.parent.absolute() and p.name.startswith(prefix)]
    for old in mine:
        try:
            _remove(old)
        finally:  # interrupted half-way: finish the removal (signals held) before the interrupt goes on
            with _deferred():
                _remove(old)
                _unregister(old)
