"""Pure-torch backend of the kNN refresh: simple, vectorised, runs on any device.

The same idea as the Numba kernel without its bookkeeping: every round, each row's candidates
are its current list, its neighbours' lists (k² ids) and a few random ids; the k best of them
(ties by lower index) become the new list. No "new/old" flags and no reverse lists, so a
round costs N·(k + k² + r)·d multiply-adds; memory stays O(block) by scoring row blocks.
"""
from __future__ import annotations

import torch

__all__ = ["refine"]

_BLOCK_ELEMS = 1 << 23  # gathered candidate coordinates per block (32 MiB in fp32)


def _padded_seeds(indptr: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    deg = indptr[1:] - indptr[:-1]
    w = int(deg.max()) if n and indices.numel() else 0
    out = torch.full((n, w), -1, dtype=torch.int64, device=indices.device)
    if w:
        rows = torch.repeat_interleave(torch.arange(n, device=indices.device), deg)
        pos = torch.arange(indices.numel(), device=indices.device) - indptr[:-1].repeat_interleave(deg)
        out[rows, pos] = indices.long()
    return out


def _best(x: torch.Tensor, cand: torch.Tensor, k: int):
    """Top-k of each row's candidate ids (-1 = none), self and duplicates removed."""
    n, d = x.shape
    cand = torch.sort(cand, dim=1).values  # ascending ids: a stable score sort then breaks
    rows = torch.arange(n, device=x.device)[:, None]  # ties by the lower id
    ok = (cand >= 0) & (cand != rows)
    ok[:, 1:] &= cand[:, 1:] != cand[:, :-1]
    idx = torch.full((n, k), -1, dtype=torch.int64, device=x.device)
    val = torch.full((n, k), float("-inf"), dtype=x.dtype, device=x.device)
    c = cand.shape[1]
    block = max(1, _BLOCK_ELEMS // max(1, c * d))
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        cb, okb = cand[r0:r1], ok[r0:r1]
        s = torch.einsum("nd,ncd->nc", x[r0:r1], x[cb.clamp_min(0)])
        s = s.masked_fill(~okb, float("-inf"))
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        kk = order.shape[1]
        top_ok = torch.gather(okb, 1, order)
        idx[r0:r1, :kk] = torch.where(top_ok, torch.gather(cb, 1, order), -1)
        val[r0:r1, :kk] = torch.where(top_ok, torch.gather(s, 1, order),
                                      torch.full_like(s[:, :kk], float("-inf")))
    return idx, val


def refine(x, p_indptr, p_indices, k, max_iters, sample_random, max_candidates, delta, seed):
    """Backend contract of the ``refine`` op (see refine/numba.py); ``max_candidates`` is
    unused here (no reverse lists). Deterministic for a given seed."""
    n = x.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def rand(cols):
        return torch.randint(0, n, (n, cols), generator=gen).to(x.device)

    seeds = _padded_seeds(p_indptr, p_indices, n)
    # Random fill so that every row has k candidates even with no seeds.
    idx, val = _best(x, torch.cat([seeds, rand(k + 1)], 1), k)
    updates = []
    for _ in range(max_iters):
        two_hop = idx[idx.clamp_min(0)].reshape(n, -1)
        two_hop = torch.where((idx < 0).repeat_interleave(k, 1), -1, two_hop)
        new_idx, new_val = _best(x, torch.cat([idx, two_hop, rand(sample_random)], 1), k)
        same = (new_idx[:, :, None] == idx[:, None, :]).any(2)
        n_changed = int((~same & (new_idx >= 0)).sum())
        idx, val = new_idx, new_val
        updates.append(n_changed)
        if n_changed <= delta * n * k:
            break
    return idx, val, updates
