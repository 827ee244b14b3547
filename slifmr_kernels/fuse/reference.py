"""Pure-torch backend of fuse_views: the definition of correct, and the GPU fallback.

One view at a time, so no (N, V, d) temporary: per view it reads the view, computes its
row norms, and adds alpha[k] * v / den into the output; backward writes each view's
normalised rows straight into that view's gradient slot and turns them into the gradient in
place. The same operations as ``z + sum(alpha[k] * F.normalize(v_k))``, so the forward gives
that formula's bits.
"""

from __future__ import annotations

import torch


def _views(views: torch.Tensor, d: int):
    return views.split(d, dim=1)  # d >= 1: the op handles d = 0 before any backend


def fuse_forward(z, alpha, views, eps):
    """(out (N, d), den (N, V)): out = z + sum_k alpha[k] * v_k / den[:, k], den = max(|v_k|, eps)."""
    d = z.shape[1]
    V = alpha.numel()
    out = z.clone()
    den = z.new_empty(z.shape[0], V)
    for k, v in enumerate(_views(views, d)):
        dk = v.norm(2, 1, keepdim=True).clamp_min(eps)
        out.add_(alpha[k] * (v / dk))
        den[:, k : k + 1] = dk
    return out, den


def fuse_backward(g, alpha, views, den, eps, need_alpha, need_views):
    """(dalpha (V,), dviews (N, V*d)) for the output gradient g (N, d); empty when not needed.

    dalpha[k] = sum_i <vhat_ik, g_i>;  dv_k = alpha[k] / den_k * (g - vhat_k <vhat_k, g>) where
    |v_k| > eps, alpha[k] / eps * g where the norm was clamped (the denominator is constant).
    """
    d = g.shape[1]
    V = alpha.numel()
    dalpha = g.new_zeros(V) if need_alpha else g.new_empty(0)
    dviews = g.new_empty(g.shape[0], V * d) if need_views else g.new_empty(0)
    slots = _views(dviews, d) if need_views else [None] * V
    for k, v in enumerate(_views(views, d)):
        dk = den[:, k : k + 1]
        vhat = slots[k] if need_views else torch.empty_like(v)
        torch.div(v, dk, out=vhat)
        s = torch.linalg.vecdot(vhat, g, dim=1).unsqueeze(1)
        if need_alpha:
            dalpha[k] = s.sum()
        if need_views:
            s.masked_fill_(dk <= eps, 0.0)
            vhat.mul_(s.neg_()).add_(g).mul_(alpha[k] / dk)
    return dalpha, dviews
