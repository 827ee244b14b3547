"""Argument validation shared by the ops: every message names the argument and the problem."""
from __future__ import annotations

import torch

_INT_DTYPES = (torch.int32, torch.int64)
_FLOAT_DTYPES = (torch.float32, torch.float64)


def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None) -> torch.Tensor:
    """Raise TypeError/ValueError unless ``t`` is a tensor of the given rank and dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    return t


def check_float(name: str, t, *, ndim: int | None = None) -> torch.Tensor:
    return check_tensor(name, t, ndim=ndim, dtypes=_FLOAT_DTYPES)


def check_index(name: str, t, *, ndim: int = 1) -> torch.Tensor:
    return check_tensor(name, t, ndim=ndim, dtypes=_INT_DTYPES)


def check_finite(name: str, t: torch.Tensor) -> None:
    """Reject NaN and +-inf: they would silently poison sums and rankings.

    Data-dependent, so skipped while torch.compile traces (the eager path checks). One
    ``aminmax`` pass with no temporaries (NaN propagates to both ends, an infinity shows at
    one): ``isfinite(t).all()`` would allocate several bytes per element, 512 MiB for a
    200k x 384 float32 input."""
    if torch.compiler.is_compiling() or t.numel() == 0 or not t.is_floating_point():
        return
    lo, hi = torch.aminmax(t)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")


def check_range(name: str, idx: torch.Tensor, upper: int) -> None:
    """Every entry of ``idx`` must lie in [0, upper): checked before any kernel reads memory."""
    if torch.compiler.is_compiling() or idx.numel() == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= upper:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{name} has an entry {bad} outside [0, {upper})")


def check_same_device(**tensors) -> torch.device:
    """All given (non-None) tensors must live on one device; returns it."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listing}")
    return next(iter(devices.values())) if devices else torch.device("cpu")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
