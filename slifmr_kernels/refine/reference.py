"""Pure-torch backend of the kNN refresh: simple, vectorised, runs on any device.

The same idea as the Numba kernel without its bookkeeping: every round, each row's joined
list J(u) is its current k neighbours plus up to ``max_candidates`` (c) sampled reverse
neighbours; its candidates are J(u), the joined lists of those nodes ((k + c)² ids) and a few
random ids, and the k best of them (ties by lower index) become the new list. No "new/old"
flags, so a round costs N·(k + c)²·d multiply-adds; memory stays O(block) by scoring row
blocks.
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


def _best(x: torch.Tensor, cand: torch.Tensor, k: int, rows=None):
    """Top-k of each row's candidate ids (-1 = none), self and duplicates removed.
    ``rows``: the node of each candidate row (default: all nodes in order)."""
    d = x.shape[1]
    if rows is None:
        rows = torch.arange(x.shape[0], device=x.device)
    n = rows.numel()
    cand = torch.sort(cand, dim=1).values  # ascending ids: a stable score sort then breaks
    ok = (cand >= 0) & (cand != rows[:, None])  # ties by the lower id
    ok[:, 1:] &= cand[:, 1:] != cand[:, :-1]
    idx = torch.full((n, k), -1, dtype=torch.int64, device=x.device)
    val = torch.full((n, k), float("-inf"), dtype=x.dtype, device=x.device)
    c = cand.shape[1]
    block = max(1, _BLOCK_ELEMS // max(1, c * d))
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        cb, okb = cand[r0:r1], ok[r0:r1]
        s = torch.einsum("nd,ncd->nc", x[rows[r0:r1]], x[cb.clamp_min(0)])
        s = s.masked_fill(~okb, float("-inf"))
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        kk = order.shape[1]
        top_ok = torch.gather(okb, 1, order)
        idx[r0:r1, :kk] = torch.where(top_ok, torch.gather(cb, 1, order), -1)
        val[r0:r1, :kk] = torch.where(
            top_ok, torch.gather(s, 1, order), torch.full_like(s[:, :kk], float("-inf"))
        )
    return idx, val


def _reverse(idx: torch.Tensor, cap: int, gen: torch.Generator) -> torch.Tensor:
    """(N, cap) ids of nodes that list each node, -1 padded; a random sample of at most
    ``cap`` when more do (hubs would otherwise dominate the cost)."""
    n, k = idx.shape
    out = torch.full((n, cap), -1, dtype=torch.int64, device=idx.device)
    if cap == 0:
        return out
    src = torch.arange(n, device=idx.device).repeat_interleave(k)
    dst = idx.reshape(-1)
    keep = dst >= 0
    src, dst = src[keep], dst[keep]
    pri = torch.randperm(src.numel(), generator=gen).to(idx.device)
    order = torch.argsort(dst * (src.numel() + 1) + pri)  # by target, random within
    src, dst = src[order], dst[order]
    first = torch.searchsorted(dst, dst, right=False)
    rank = torch.arange(dst.numel(), device=idx.device) - first
    sel = rank < cap
    out[dst[sel], rank[sel]] = src[sel]
    return out


def refine(x, p_indptr, p_indices, k, max_iters, sample_random, max_candidates, delta, seed):
    """Backend contract of the ``refine`` op (see refine/numba.py). Deterministic for a
    given seed (one torch generator drives all sampling)."""
    n = x.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def rand(rows, cols):
        return torch.randint(0, n, (rows, cols), generator=gen).to(x.device)

    idx, val = _best(x, _padded_seeds(p_indptr, p_indices, n), k)
    # Rows with fewer than k distinct seeds: random fill until full (n > k, so this ends).
    short = (idx[:, k - 1] < 0).nonzero().squeeze(1)
    while short.numel():
        i2, v2 = _best(x, torch.cat([idx[short], rand(short.numel(), k)], 1), k, short)
        idx[short], val[short] = i2, v2
        short = short[i2[:, k - 1] < 0]
    updates = []
    for _ in range(max_iters):
        joined = torch.cat([idx, _reverse(idx, max_candidates, gen)], 1)
        w = joined.shape[1]
        two_hop = joined[joined.clamp_min(0)].reshape(n, -1)
        two_hop = torch.where((joined < 0).repeat_interleave(w, 1), -1, two_hop)
        new_idx, new_val = _best(x, torch.cat([joined, two_hop, rand(n, sample_random)], 1), k)
        same = (new_idx[:, :, None] == idx[:, None, :]).any(2)
        n_changed = int((~same & (new_idx >= 0)).sum())
        idx, val = new_idx, new_val
        updates.append(n_changed)
        if n_changed <= delta * n * k:
            break
    return idx, val, updates
