"""The fuse_views op: Z = z + sum_k alpha[k] * v_k / max(|v_k|, eps), row by row.

Multi-view recommenders fuse every node's per-view representations this way on every forward
pass (SLIF-MR's Z = Z^cf + sum_v alpha_v normalize(Z^v); LATTICE and FREEDOM do the same with
fixed weights). Written as torch operations that is several passes over an (N, d) tensor per
view and direction, and autograd keeps V normalised (N, d) copies for alpha's gradient. The
op reads z and the views once and writes Z and the (N, V) clamped norms: all that backward
needs besides the views, which the caller holds anyway.

Backward (vhat_k = v_k / den_k, den_k = max(|v_k|, eps), g = dL/dZ):
    dz       = g
    dalpha_k = sum_i <vhat_ik, g_i>
    dv_k     = alpha_k / den_k * (g - vhat_k <vhat_k, g>)   where |v_k| > eps
             = alpha_k / eps * g                             where the norm was clamped
Backend contract (every backend module): ``fuse_forward(z, alpha, views, eps) -> (out, den)``
and ``fuse_backward(g, alpha, views, den, eps, need_alpha, need_views) -> (dalpha, dviews)``
with empty tensors for what is not needed; the op has checked shapes, dtypes and devices and
made every tensor contiguous.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_float, check_same_device
from .._library import define_op
from ..backends import load, resolve
from ..errors import InputError, InputTypeError

__all__ = ["fuse_views", "NORM_EPS"]

#: F.normalize's default eps: a row with a smaller norm is divided by this instead.
NORM_EPS = 1e-12


def _fuse_kernel(z: Tensor, alpha: Tensor, views: Tensor, eps: float, backend: str) -> tuple[Tensor, Tensor]:
    return load("fuse", backend).fuse_forward(z, alpha, views, eps)


def _fuse_fake(z, alpha, views, eps, backend):
    return z.new_empty(z.shape), z.new_empty(z.shape[0], alpha.shape[0])


def _fuse_backward_kernel(
    g: Tensor,
    alpha: Tensor,
    views: Tensor,
    den: Tensor,
    eps: float,
    need_alpha: bool,
    need_views: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return load("fuse", backend).fuse_backward(g, alpha, views, den, eps, need_alpha, need_views)


def _fuse_backward_fake(g, alpha, views, den, eps, need_alpha, need_views, backend):
    dalpha = g.new_empty(alpha.shape[0] if need_alpha else 0)
    dviews = g.new_empty(views.shape) if need_views else g.new_empty(0)
    return dalpha, dviews


_fuse_backward_op = define_op("fuse_views_backward", _fuse_backward_kernel, _fuse_backward_fake)


def _setup_context(ctx, inputs, output):
    _, alpha, views, eps, backend = inputs
    ctx.eps, ctx.backend = eps, backend
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(alpha, views, output[1])


def _backward(ctx, g, _g_den):
    alpha, views, den = ctx.saved_tensors
    need_alpha, need_views = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    dalpha = dviews = None
    if need_alpha or need_views:
        if g.layout != torch.strided:  # a sparse gradient (a row gather with sparse=True)
            g = g.to_dense()
        dalpha, dviews = _fuse_backward_op(
            g.contiguous(), alpha, views, den, ctx.eps, need_alpha, need_views, ctx.backend
        )
    return (
        g if ctx.needs_input_grad[0] else None,
        dalpha if need_alpha else None,
        dviews if need_views else None,
        None,
        None,
    )


_fuse_op = define_op("fuse_views", _fuse_kernel, _fuse_fake, _backward, _setup_context)


def fuse_views(z: Tensor, alpha: Tensor, views: Tensor, backend: str = "auto") -> Tensor:
    """Z = z + sum_k alpha[k] * normalize(v_k): view-weighted fusion of L2-normalised rows.

    Args:
        z: (N, d) float32/float64 base representations; differentiable.
        alpha: (V,) view weights (a parameter or a buffer); differentiable; cast to z's dtype.
        views: (N, V*d) of z's dtype: the V views side by side (view k in columns
            k*d .. (k+1)*d-1); differentiable. Each row of each view is divided by
            max(its L2 norm, 1e-12), as ``torch.nn.functional.normalize`` does.
        backend: "auto", "torch", "numba", "triton" or "cuda" (see ``backends``; CUDA
            tensors use cuda, then triton, then torch).

    Returns:
        (N, d) tensor of z's dtype. Autograd keeps the views and their (N, V) norms, nothing
        of size (N, d) per view. Deterministic on every backend. NaN / inf in z, alpha or the
        views are not checked (a pass per call): they reach the rows (and, in backward, the
        gradients) that read them, as the same torch formula would.

    >>> import torch, slifmr_kernels as sk
    >>> z = torch.zeros(1, 2); v = torch.tensor([[3.0, 4.0, 0.0, 2.0]])
    >>> sk.fuse_views(z, torch.tensor([1.0, 0.5]), v, backend="torch")
    tensor([[0.6000, 1.3000]])
    """
    check_float("z", z, ndim=2)
    check_float("alpha", alpha, ndim=1)
    check_float("views", views, ndim=2)
    check_same_device(z=z, alpha=alpha, views=views)
    n, d = z.shape
    V = alpha.numel()
    if views.shape[0] != n or views.shape[1] != V * d:
        raise InputError(
            f"views must be (N, V*d) = ({n}, {V * d}) for z of shape {tuple(z.shape)} "
            f"and {V} view weights, got {tuple(views.shape)}"
        )
    if views.dtype != z.dtype:
        raise InputTypeError(f"views must have z's dtype {z.dtype}, got {views.dtype}")
    name = resolve("fuse", backend, z.device)
    if V == 0 or n == 0 or d == 0:
        # Nothing to normalise: keep autograd's view of alpha and the views (zero gradients).
        return z + alpha.sum().to(z.dtype) * 0 + views.sum() * 0
    out, _ = _fuse_op(z.contiguous(), alpha.to(z.dtype).contiguous(), views.contiguous(), NORM_EPS, name)
    return out
