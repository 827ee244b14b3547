"""What every Triton backend module shares: the import of triton and the launch check.

``from .._triton import triton, tl, check_launchable`` raises ImportError with what to install
when triton is missing; the backend registry turns that into a ``BackendUnavailable`` message.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only without triton
    raise ImportError(
        "the 'triton' backend needs the triton package (pip install triton); on a CPU-only "
        "machine it also needs TRITON_INTERPRET=1"
    ) from exc

__all__ = ["triton", "tl", "interpreted", "check_launchable"]


def interpreted() -> bool:
    """True when TRITON_INTERPRET is set: kernels then run on CPU tensors (how CI tests them)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_launchable(x: torch.Tensor) -> None:
    """Raise unless a Triton kernel can run on ``x``'s device: CUDA, or CPU when interpreted."""
    if x.device.type != "cuda" and not interpreted():
        raise RuntimeError(
            "the triton backend runs on CUDA tensors; for CPU tensors set "
            "TRITON_INTERPRET=1 (interpreter, for tests only)"
        )
