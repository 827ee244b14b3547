"""Argument validation shared by the ops: every message names the argument and the problem.

Each check raises the project's own errors (``slifmr_kernels.errors``): the ``Input*`` family
for op arguments, the ``Graph*`` family (``kind=GRAPH``) for the arrays of a graph. Every
check is O(1) or one pass over the tensor, with no temporaries of the tensor's size beyond a
boolean mask where a decreasing ``indptr`` has to be located.
"""

from __future__ import annotations

import builtins
import numbers
from typing import NamedTuple

import torch

from .errors import GraphError, GraphIndexError, GraphTypeError, InputError, InputIndexError, InputTypeError

_INT_DTYPES = (torch.int32, torch.int64)
_FLOAT_DTYPES = (torch.float32, torch.float64)


class Kind(NamedTuple):
    # builtins.type: the field named ``type`` shadows the builtin inside the class body
    value: builtins.type[Exception]
    type: builtins.type[Exception]
    # shadows tuple.index on purpose: the checks call ``kind.index(message)``
    index: builtins.type[Exception]  # type: ignore[assignment]


INPUT = Kind(InputError, InputTypeError, InputIndexError)
GRAPH = Kind(GraphError, GraphTypeError, GraphIndexError)


def _dtype_name(d) -> str:
    return str(d).replace("torch.", "")


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None, kind: Kind = INPUT) -> torch.Tensor:
    """Raise unless ``t`` is a dense tensor of the given rank and dtype (the device is
    :func:`check_same_device`'s business)."""
    if not isinstance(t, torch.Tensor):
        raise kind.type(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise kind.type(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if ndim is not None and t.dim() != ndim:
        raise kind.value(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(_dtype_name(d) for d in dtypes)
        raise kind.type(f"{name} must have dtype in ({names}), got {_dtype_name(t.dtype)}")
    return t


def check_float(name: str, t, *, ndim: int | None = None, kind: Kind = INPUT) -> torch.Tensor:
    return check_tensor(name, t, ndim=ndim, dtypes=_FLOAT_DTYPES, kind=kind)


def check_index(name: str, t, *, ndim: int = 1, kind: Kind = INPUT) -> torch.Tensor:
    return check_tensor(name, t, ndim=ndim, dtypes=_INT_DTYPES, kind=kind)


def check_finite(name: str, t: torch.Tensor, kind: Kind = INPUT) -> None:
    """Reject NaN and +-inf: they would silently poison sums and rankings.

    Data-dependent, so skipped while torch.compile traces (the eager path checks). One
    ``aminmax`` pass with no temporaries (NaN propagates to both ends, an infinity shows at
    one): ``isfinite(t).all()`` would allocate several bytes per element, 512 MiB for a
    200k x 384 float32 input."""
    if _tracing() or t.numel() == 0 or not t.is_floating_point():
        return
    lo, hi = torch.aminmax(t.detach())
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(t.detach())).sum())
        raise kind.value(f"{name} contains {bad} NaN or infinite value(s)")


def check_range(name: str, idx: torch.Tensor, upper: int, kind: Kind = INPUT) -> None:
    """Every entry of ``idx`` must lie in [0, upper): checked before any kernel reads memory."""
    if _tracing() or idx.numel() == 0:
        return
    lo_t, hi_t = torch.aminmax(idx)
    lo, hi = int(lo_t), int(hi_t)
    if lo < 0 or hi >= upper:
        bad = lo if lo < 0 else hi
        raise kind.index(f"{name} has an entry {bad} outside [0, {upper})")


def check_same_device(kind: Kind = INPUT, **tensors) -> torch.device:
    """All given (non-None) tensors must live on one device, one with data (not ``meta``):
    called before any data-dependent check. Returns the device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise kind.value(f"tensors must be on one device, got {listing}")
    device = next(iter(devices.values())) if devices else torch.device("cpu")
    if device.type == "meta" and not _tracing():
        names = ", ".join(devices)
        raise kind.value(f"{names} on the meta device: the kernels need tensors with data")
    return device


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    name: str,
    value,
    minimum: int | None = None,
    maximum: int | None = None,
    kind: Kind = INPUT,
    what: str | None = None,
) -> int:
    """``value`` as an int; a bool, float or other type is a type error, a value outside
    [minimum, maximum] a value error."""
    if what is None:
        what = (
            "a non-negative int"
            if minimum == 0
            else "a positive int"
            if minimum == 1
            else f"an int >= {minimum}"
            if minimum is not None
            else "an int"
        )
    if not is_int(value):
        raise kind.type(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise kind.value(f"{name} must be {what}, got {value!r}")
    if maximum is not None and value > maximum:
        raise kind.value(f"{name} must be at most {maximum}, got {value!r}")
    return value


def check_positive_int(name: str, value) -> int:
    return check_int(name, value, 1)


def check_bool(name: str, value, kind: Kind = INPUT) -> bool:
    """A Python or NumPy bool (0-d tensors and ints are refused: ``bool("no")`` is True)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise kind.type(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_choice(name: str, value, choices: tuple) -> str:
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_shape(name: str, shape, kind: Kind = GRAPH) -> tuple[int, int]:
    """``shape`` as a pair of non-negative ints."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise kind.type(
            f"{name} must be a pair (n_rows, n_cols) of ints, got {type(shape).__name__} {shape!r}"
        )
    if len(shape) != 2:
        raise kind.value(f"{name} must be a pair (n_rows, n_cols), got {tuple(shape)!r}")
    out = []
    for i, s in enumerate(shape):
        if (
            isinstance(s, torch.Tensor)
            and s.dim() == 0
            and not s.is_floating_point()
            and s.dtype != torch.bool
        ):
            s = int(s)
        if not is_int(s):
            raise kind.type(f"{name}[{i}] must be an int, got {type(s).__name__} {s!r}")
        if s < 0:
            shown = tuple(int(v) if is_int(v) else v for v in shape)
            raise kind.value(f"{name} must be non-negative, got {shown}")
        out.append(int(s))
    return out[0], out[1]


def alloc_error(what: str, exc: BaseException, kind: Kind = INPUT) -> Exception:
    """An error for a buffer whose size the caller chose (an explicit shape) that cannot be
    allocated, instead of torch's bare allocator message."""
    return kind.value(f"{what}: cannot allocate it ({str(exc).splitlines()[0][:200]})")


def is_alloc_failure(exc: BaseException) -> bool:
    msg = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("alloc" in msg or "out of memory" in msg or "overflow" in msg)
    )
