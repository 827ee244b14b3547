"""Numba CPU backend of fuse_views: one pass over the rows forward, one backward.

Per row, forward reads z and the V views once, computes each view's norm (accumulated in
float64) and writes the fused row and the V clamped norms; backward reads g, the views and the
norms once and writes the V view gradients. The plain torch formula makes 3 to 5 passes over
an (N, d) tensor per view and direction (norm, divide, scale, add, dot...).

Rows are cut into fixed blocks of ``BLOCK_ROWS``; ``prange`` runs over the blocks. alpha's
gradient is summed per block in float64 and the block partials are added in block order, so
every result has the same bits with any number of threads.

Importing this module raises ``ImportError`` when numba is missing; the backend registry
turns that into a message that says what to install.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from numba import njit, prange
except ImportError as exc:  # pragma: no cover - exercised only without numba
    raise ImportError("the numba fuse_views backend needs numba (pip install numba)") from exc

__all__ = ["fuse_forward", "fuse_backward"]

# Rows per prange iteration: large enough that the loop overhead vanishes, small enough that
# 2 to 64 threads all get work at the sizes that matter (N >= 10^4).
BLOCK_ROWS = 256


@njit(parallel=True, fastmath=False, cache=True)
def _forward_kernel(z, alpha, views, eps, out, den):
    n, d = z.shape
    V = alpha.shape[0]
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for b in prange(n_blocks):
        for i in range(b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS)):
            for j in range(d):
                out[i, j] = z[i, j]
            for k in range(V):
                base = k * d
                ss = 0.0
                for j in range(d):
                    x = np.float64(views[i, base + j])
                    ss += x * x
                dk = max(np.sqrt(ss), eps)
                den[i, k] = dk
                # alpha[k] * (v / den), rounded as the torch formula rounds it.
                dk_t = den[i, k]
                a = alpha[k]
                for j in range(d):
                    out[i, j] += a * (views[i, base + j] / dk_t)


@njit(parallel=True, fastmath=False, cache=True)
def _backward_kernel(g, alpha, views, den, eps, need_views, dviews, dalpha_part):
    n, d = g.shape
    V = alpha.shape[0]
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for b in prange(n_blocks):
        for k in range(V):
            dalpha_part[b, k] = 0.0
        for i in range(b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS)):
            for k in range(V):
                base = k * d
                dk = den[i, k]
                inv = 1.0 / np.float64(dk)
                dot = 0.0
                for j in range(d):
                    dot += np.float64(views[i, base + j]) * np.float64(g[i, j])
                s = dot * inv  # <vhat, g>
                dalpha_part[b, k] += s
                if need_views:
                    # dv = c * (g - vhat * s) = c * g - (c * s / den) * v, c = alpha / den;
                    # s = 0 where the norm was clamped (the denominator is a constant there).
                    c = alpha[k] * inv
                    cs = 0.0 if dk <= eps else c * s * inv
                    for j in range(d):
                        dviews[i, base + j] = c * g[i, j] - cs * views[i, base + j]


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy numpy view of a contiguous CPU tensor."""
    return t.detach().numpy()


def fuse_forward(z, alpha, views, eps):
    """(out (N, d), den (N, V)) for z (N, d), alpha (V,), views (N, V*d); one dtype, contiguous."""
    n = z.shape[0]
    out = torch.empty_like(z)
    den = z.new_empty(n, alpha.numel())
    _forward_kernel(_np(z), _np(alpha), _np(views), float(eps), _np(out), _np(den))
    return out, den


def fuse_backward(g, alpha, views, den, eps, need_alpha, need_views):
    """(dalpha (V,), dviews (N, V*d)) for the output gradient g (N, d); empty when not needed."""
    n, d = g.shape
    V = alpha.numel()
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    dviews = g.new_empty(n, V * d) if need_views else g.new_empty(0, V * d)
    part = np.empty((n_blocks, V), np.float64)
    if need_views or need_alpha:
        _backward_kernel(
            _np(g), _np(alpha), _np(views), _np(den), float(eps), bool(need_views), _np(dviews), part
        )
    # Block partials added in block order: the same bits with any thread count.
    dalpha = torch.from_numpy(part.sum(0)).to(g.dtype) if need_alpha else g.new_empty(0)
    return dalpha, (dviews if need_views else g.new_empty(0))
