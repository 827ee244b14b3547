"""Triton backend of fuse_views: one program per ``BLOCK_N`` rows, the views in a loop.

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (how CI tests it). Each
program loads its rows of z (or g) once and every view once; norms and dot products are row
reductions inside the tile (d is padded to a power of two and masked). alpha's gradient is one
partial per (program, view), summed by torch in program order afterwards: no atomics, the same
bits on every run.
"""

from __future__ import annotations

import torch

from .._triton import check_launchable, tl, triton

__all__ = ["fuse_forward", "fuse_backward"]

#: Elements of one (rows x d) tile a program holds: BLOCK_N = TILE_ELEMS / BLOCK_D rows.
TILE_ELEMS = 4096


@triton.jit
def _row_tile(pid, n, d, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program ``pid``'s rows (int64), the d-block's columns, the row mask and the tile mask."""
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < n
    return rows.to(tl.int64), cols, rmask, rmask[:, None] & (cols[None, :] < d)


@triton.jit
def _forward_kernel(
    z_ptr, alpha_ptr, v_ptr, out_ptr, den_ptr, n, d, V, eps, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr
):
    pid = tl.program_id(0)
    r64, cols, rmask, mask = _row_tile(pid, n, d, BLOCK_N, BLOCK_D)
    acc = tl.load(z_ptr + r64[:, None] * d + cols[None, :], mask=mask, other=0.0)
    for k in range(V):
        v = tl.load(v_ptr + r64[:, None] * (V * d) + k * d + cols[None, :], mask=mask, other=0.0)
        dk = tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), eps)
        tl.store(den_ptr + r64 * V + k, dk, mask=rmask)
        a = tl.load(alpha_ptr + k)
        acc += a * (v / dk[:, None])
    tl.store(out_ptr + r64[:, None] * d + cols[None, :], acc, mask=mask)


@triton.jit
def _backward_kernel(
    g_ptr,
    alpha_ptr,
    v_ptr,
    den_ptr,
    dv_ptr,
    part_ptr,
    n,
    d,
    V,
    eps,
    NEED_VIEWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    r64, cols, rmask, mask = _row_tile(pid, n, d, BLOCK_N, BLOCK_D)
    g = tl.load(g_ptr + r64[:, None] * d + cols[None, :], mask=mask, other=0.0)
    for k in range(V):
        off = r64[:, None] * (V * d) + k * d + cols[None, :]
        v = tl.load(v_ptr + off, mask=mask, other=0.0)
        dk = tl.load(den_ptr + r64 * V + k, mask=rmask, other=1.0)
        s = tl.sum(v * g, axis=1) / dk  # <vhat, g>, 0 on masked rows
        tl.store(part_ptr + pid * V + k, tl.sum(s, axis=0))
        if NEED_VIEWS:
            c = tl.load(alpha_ptr + k) / dk
            # s = 0 where the norm was clamped: the denominator is a constant there.
            cs = tl.where(dk <= eps, 0.0, c * s / dk)
            tl.store(dv_ptr + off, c[:, None] * g - cs[:, None] * v, mask=mask)


def _blocks(n: int, d: int) -> tuple[int, int, int]:
    block_d = triton.next_power_of_2(max(d, 1))
    block_n = max(1, min(TILE_ELEMS // block_d, triton.next_power_of_2(max(n, 1))))
    return block_n, block_d, triton.cdiv(n, block_n)


def fuse_forward(z, alpha, views, eps):
    """(out (N, d), den (N, V)) for z (N, d), alpha (V,), views (N, V*d); one dtype, contiguous."""
    check_launchable(z)
    n, d = z.shape
    V = alpha.numel()
    out = torch.empty_like(z)
    den = z.new_empty(n, V)
    block_n, block_d, grid = _blocks(n, d)
    _forward_kernel[(grid,)](z, alpha, views, out, den, n, d, V, eps, BLOCK_N=block_n, BLOCK_D=block_d)
    return out, den


def fuse_backward(g, alpha, views, den, eps, need_alpha, need_views):
    """(dalpha (V,), dviews (N, V*d)) for the output gradient g (N, d); empty when not needed."""
    check_launchable(g)
    n, d = g.shape
    V = alpha.numel()
    block_n, block_d, grid = _blocks(n, d)
    dviews = g.new_empty(n, V * d) if need_views else g.new_empty(0)
    part = g.new_empty(grid, V)
    _backward_kernel[(grid,)](
        g,
        alpha,
        views,
        den,
        dviews,
        part,
        n,
        d,
        V,
        eps,
        NEED_VIEWS=bool(need_views),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    # Program partials added in a fixed order (torch's sum, no atomics): the same bits on every run.
    dalpha = part.double().sum(0).to(g.dtype) if need_alpha else g.new_empty(0)
    return dalpha, dviews
