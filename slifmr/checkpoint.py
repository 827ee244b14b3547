"""Run-directory files: checkpoints that cannot execute code, atomic writes, clean interrupts.

* :func:`load_checkpoint` reads a ``.pt`` file with ``torch.load(weights_only=True)``: only
  tensors, numbers, strings, ``None`` and lists / tuples / dicts of them are accepted, so a
  crafted checkpoint (a pickle whose ``__reduce__`` names ``os.system``) is refused with
  :class:`CheckpointError` instead of running. Every checkpoint this project writes holds only
  those types (numpy arrays are stored as tensors).
* :func:`atomic_save` / :func:`write_json_atomic` / :func:`write_text_atomic` write through a
  temporary file beside the target, fsync it and ``os.replace`` it: a reader sees the old file
  or the new one, never a torn one. A failed write (a full disk) removes its temporary file and
  raises :class:`CheckpointError` naming the path and the cause; the previous file is intact.
* :func:`remove_stale_temporaries` deletes the ``<name>.tmp.<pid>`` files that a process killed
  mid-write (SIGKILL) left behind, once that process is gone.
* :func:`deferred_interrupts`: SIGINT / SIGTERM that arrive while a checkpoint is being written
  are held until the write is done, so Ctrl-C never leaves the run without a consistent
  ``last.pt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import threading
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "atomic_save",
    "write_json_atomic",
    "write_text_atomic",
    "remove_stale_temporaries",
    "deferred_interrupts",
    "TrainingInterrupted",
]

_TMP_RE = re.compile(r"^(?P<name>.+)\.tmp\.(?P<pid>\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint or run file that cannot be read safely, or cannot be written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM; ``last.pt`` holds the last epoch."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------- reading
def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """The dict stored in ``path`` by :func:`atomic_save`, loaded without executing code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a checkpoint of plain tensors and containers (a crafted
            or foreign pickle, an older format, a truncated or corrupted file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False: not repeated here
        detail = _unpickling_detail(str(exc))
        if "GLOBAL" in detail:
            # the file asks to import a callable or class: a crafted checkpoint, or one written
            # by another program
            raise CheckpointError(
                f"{path}: refused to load: the file asks for code, not only "
                f"tensors and plain containers ({detail}); slifmr never writes "
                f"such checkpoints, so it was not made by slifmr or was tampered "
                f"with"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(str(exc))})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return obj


def _first_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[0] if lines else "no details"


def _unpickling_detail(text: str) -> str:
    """The line of a weights-only unpickling error that says what was refused."""
    for line in text.splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith("Unsupported") or "error:" in line.lower():
            if line.rstrip(": ").endswith("WeightsUnpickler error"):
                continue
            return line
    return _first_line(text)


def require_keys(ckpt: dict, path: str, keys: tuple) -> None:
    """Raise :class:`CheckpointError` if ``ckpt`` lacks one of ``keys``."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a slifmr checkpoint of this kind (missing {missing})")


# --------------------------------------------------------------------------- writing
def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then fsync and rename over ``path``; on failure the temporary file is
    removed and :class:`CheckpointError` names ``path`` and the cause."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with deferred_interrupts():
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise CheckpointError(
            f"could not write {path}: {exc.strerror or exc} (the previous "
            f"{os.path.basename(path)}, if any, is unchanged)"
        ) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see the module docstring)."""

    def write(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch reports a failed write (ENOSPC) as RuntimeError
            raise OSError(str(exc).strip().splitlines()[0]) from None

    _atomic_write(path, write)


def write_text_atomic(text: str, path: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(path, write)


def write_json_atomic(obj, path: str) -> None:
    """``obj`` as indented, key-sorted JSON in ``path``, atomically."""
    write_text_atomic(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(directory: str) -> list:
    """Delete ``*.tmp.<pid>`` files in ``directory`` whose writer process is gone; returns the
    names removed. A live writer's file (another process training into the same directory)
    is left alone."""
    removed: list[str] = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        m = _TMP_RE.match(name)
        if m and not _pid_alive(int(m.group("pid"))):
            _unlink_quietly(os.path.join(directory, name))
            removed.append(name)
    return removed


# --------------------------------------------------------------------------- signals
_local = threading.local()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block, then deliver the first one that
    arrived (as :class:`TrainingInterrupted`). Outside the main thread (where Python cannot
    install handlers) or when nested, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread() or getattr(_local, "active", False):
        yield
        return
    pending: list = []

    def hold(signum, _frame):
        pending.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    _local.active = True
    try:
        yield
    finally:
        _local.active = False
        for s, h in previous.items():
            signal.signal(s, h)
    if pending:
        raise TrainingInterrupted(pending[0])


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM into :class:`TrainingInterrupted` (SIGINT already raises
    KeyboardInterrupt) for the duration of the block, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise TrainingInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
