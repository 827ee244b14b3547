"""Backend registry: which implementation of an op runs, and which one ran last.

Each op folder (``slifmr_kernels/<op>/``) holds one module per backend: ``reference.py``
(backend ``"torch"``, always present), ``numba.py``, ``triton.py``, ``cuda.py``. A backend
module is imported only when it is selected, so a missing optional dependency never breaks
``import slifmr_kernels``; asking for that backend by name raises :class:`BackendUnavailable`
with what to install.

Selection (``backend="auto"``, or the ``SLIFMR_BACKEND`` environment variable when set):
CPU tensors try numba, then torch; CUDA tensors try cuda, triton, then torch. Triton runs on
CPU tensors only when named explicitly and ``TRITON_INTERPRET=1`` is set (how CI checks it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import warnings

import torch

from .errors import BackendUnavailable, InputError, InputTypeError

__all__ = ["BACKENDS", "BackendUnavailable", "available_backends", "last_backend", "resolve", "load"]

log = logging.getLogger("slifmr_kernels")

BACKENDS = ("torch", "numba", "triton", "cuda")
OPS = ("propagate", "topk", "refine", "fuse")
_MODULE_OF = {"torch": "reference", "numba": "numba", "triton": "triton", "cuda": "cuda"}
_AUTO_ORDER = {"cpu": ("numba", "torch"), "cuda": ("cuda", "triton", "torch")}
_INSTALL = {
    "numba": "install it with `pip install numba` (a dependency of `pip install slifmr`)",
    "triton": "install it with `pip install triton`",
    "cuda": (
        "build the CUDA extension: `FORCE_CUDA=1 pip install --no-build-isolation -e .` "
        "on a machine with the CUDA toolkit"
    ),
}

#: Backends whose absence ``auto`` has already warned about (once per process).
_warned_missing: set[str] = set()

_cache: dict[tuple[str, str], object] = {}
_errors: dict[tuple[str, str], str] = {}
_last = threading.local()


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _device_ok(name: str, device: torch.device) -> str | None:
    """None if backend ``name`` can run on ``device``, else the reason it cannot."""
    kind = torch.device(device).type
    if name == "torch":
        return None
    if name == "numba":
        return None if kind == "cpu" else f"numba runs on CPU tensors only, got {kind} tensors"
    if name == "cuda":
        return None if kind == "cuda" else f"the cuda backend needs CUDA tensors, got {kind}"
    if name == "triton":
        if kind == "cuda" or _triton_interpreted():
            return None
        return f"triton needs CUDA tensors (got {kind}); on CPU it runs only under TRITON_INTERPRET=1"
    raise InputError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r}")


def load(op: str, name: str):
    """Import and return the module of backend ``name`` for ``op``; raise BackendUnavailable."""
    if op not in OPS:
        raise InputError(f"op must be one of {OPS}, got {op!r}")
    if not isinstance(name, str) or name not in _MODULE_OF:
        raise InputError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r}")
    key = (op, name)
    if key in _cache:
        return _cache[key]
    if key not in _errors:
        try:
            with _numba_cache_dir() if name == "numba" else contextlib.nullcontext():
                _cache[key] = importlib.import_module(f"slifmr_kernels.{op}.{_MODULE_OF[name]}")
            return _cache[key]
        except ModuleNotFoundError as exc:
            if exc.name == f"slifmr_kernels.{op}.{_MODULE_OF[name]}":
                _errors[key] = f"op {op!r} has no {name} implementation"
            else:
                _errors[key] = f"{exc}; {_INSTALL.get(name, '')}"
        except ImportError as exc:
            _errors[key] = f"{exc}; {_INSTALL.get(name, '')}"
    raise BackendUnavailable(f"backend {name!r} is unavailable for {op}: {_errors[key]}")


def numba_cache_dir() -> str:
    """Where the Numba kernels' compiled code is cached: ``$NUMBA_CACHE_DIR`` when set (Numba's
    own setting, then used as is), else ``$SLIFMR_CACHE_DIR/numba``, else
    ``$XDG_CACHE_HOME/slifmr/numba`` (``~/.cache/slifmr/numba``). Never the package's source
    tree, which an editable install would otherwise fill with ``__pycache__/*.nbi|nbc``."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    root = os.environ.get("SLIFMR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "slifmr"
    )
    return os.path.join(root, "numba")


@contextlib.contextmanager
def _numba_cache_dir():
    """While a Numba backend module is imported (its ``@njit(cache=True)`` functions pick their
    cache locator then), point Numba's CACHE_DIR at :func:`numba_cache_dir`; restored after,
    so other Numba users in the process keep their own setting."""
    try:
        from numba.core import config
    except ImportError:  # the import that follows names what is missing
        yield
        return
    old = config.CACHE_DIR
    path = numba_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
        config.CACHE_DIR = path
    except OSError:  # unwritable: Numba's own default (and its fallbacks) apply
        pass
    try:
        yield
    finally:
        config.CACHE_DIR = old


def resolve(op: str, backend: str, device, order: tuple[str, ...] | None = None) -> str:
    """The backend that serves ``op`` for tensors on ``device``; records it as the last one.

    ``backend="auto"`` defers to ``SLIFMR_BACKEND`` when set, then to the automatic order
    (``order`` when the op passes one for this call, else the device's default order).
    A named backend that cannot run raises :class:`BackendUnavailable`.
    """
    if not isinstance(backend, str):
        raise InputTypeError(f"backend must be a str, got {type(backend).__name__}")
    source = "backend"
    if backend == "auto" and os.environ.get("SLIFMR_BACKEND", "auto") not in ("", "auto"):
        backend, source = os.environ["SLIFMR_BACKEND"], "SLIFMR_BACKEND"
    device = torch.device(device)
    if backend != "auto":
        if backend not in BACKENDS:
            raise InputError(f"{source} must be one of {('auto',) + BACKENDS}, got {backend!r}")
        reason = _device_ok(backend, device)
        if reason is not None:
            raise BackendUnavailable(f"{source}={backend!r} cannot run {op}: {reason}")
        load(op, backend)
        name = backend
    else:
        for name in order or _AUTO_ORDER.get(device.type, ("torch",)):
            if _device_ok(name, device) is not None:
                continue
            try:
                load(op, name)
                break
            except BackendUnavailable:
                _warn_fallback(op, name)
                continue
    _set_last(op, name)
    return name


def _warn_fallback(op: str, name: str) -> None:
    """Warn once per process when ``auto`` skips numba because it is not installed: the torch
    reference it falls back to is several times slower (3.5x for propagate)."""
    if name != "numba" or name in _warned_missing:
        return
    if _errors.get((op, name), "").startswith(f"op {op!r} has no"):
        return  # an op without a numba kernel: nothing is missing
    _warned_missing.add(name)
    warnings.warn(
        f"slifmr_kernels: numba is not installed, so backend='auto' runs the pure-torch "
        f"reference on CPU (several times slower); install it with `pip install numba` "
        f"(a dependency of `pip install slifmr`). Reason: {_errors.get((op, name), '?')}",
        RuntimeWarning,
        stacklevel=4,
    )


def _set_last(op: str, name: str) -> None:
    if torch.compiler.is_compiling():  # traced code records nothing; the eager call did
        return
    if not hasattr(_last, "by_op"):
        _last.by_op = {}
    _last.by_op[op] = name
    _last.any = name
    log.debug("slifmr_kernels: %s served by %s", op, name)


def last_backend(op: str | None = None) -> str | None:
    """The backend that served the last call of ``op`` (of any op when None) in this thread."""
    if op is None:
        return getattr(_last, "any", None)
    return getattr(_last, "by_op", {}).get(op)


def available_backends(device="cpu", op: str | None = None) -> list[str]:
    """Backends that can run on ``device`` here (for ``op``, or for every op when None).

    >>> "torch" in available_backends()
    True
    """
    if op is not None and op not in OPS:
        raise InputError(f"op must be one of {OPS} or None, got {op!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(
            f"device must name a torch device, got {device!r}: {str(exc).splitlines()[0]}"
        ) from None
    ops = OPS if op is None else (op,)
    out = []
    for name in BACKENDS:
        if _device_ok(name, device) is not None:
            continue
        ok = []
        for o in ops:
            try:
                load(o, name)
                ok.append(True)
            except BackendUnavailable:
                ok.append(False)
        # With no op named, a backend counts when it serves at least one op.
        if any(ok) if op is None else all(ok):
            out.append(name)
    return out
