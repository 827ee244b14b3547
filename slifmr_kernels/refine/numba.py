"""Numba CPU backend of the incremental kNN refresh.

NN-descent seeded by the previous graph, in a *pull* form that needs no locks and gives the
same bits for any thread count:

* init: every row's previous neighbours are rescored with the new vectors (random nodes fill
  rows with fewer than k seeds); all entries are marked "new";
* each iteration reads a snapshot of the lists and writes fresh ones. For node u the joined
  neighbourhood is C(u) = its k forward neighbours plus at most ``max_candidates`` reverse
  neighbours (sampled by a seeded hash priority, so hubs cannot blow up the work). u scores
  every q in C(v) for v in C(u) — all of C(v) when v is new to u, only C(v)'s new entries
  otherwise (pairs both old were already compared) — plus C(u) itself and
  ``sample_random`` random nodes, and keeps the k best of old list ∪ candidates;
* it stops when fewer than ``delta * N * k`` entries changed, or after ``max_iters``.

Each u writes only its own row, and the kept set is the top-k under a total order (score
descending, then index ascending) of a candidate set that depends only on the snapshot, the
seed and the iteration: hence determinism. Random numbers come from a counter-based hash of
(seed, iteration, node, slot), never from a shared generator.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

__all__ = ["refine"]

_N_CHUNKS = 256  # fixed work split (independent of the thread count)


@njit(inline="always", cache=True)
def _mix(z):
    # splitmix64 finaliser: a counter-based generator (uint64 arithmetic wraps)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always", cache=True)
def _hash(seed, a, b, c):
    z = _mix(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(a + 1))
    z = _mix(z + np.uint64(0x9E3779B97F4A7C15) * np.uint64(b + 1))
    return _mix(z + np.uint64(0x9E3779B97F4A7C15) * np.uint64(c + 1))


@njit(inline="always", cache=True)
def _better(s, j, ts, tj):
    return s > ts or (s == ts and j < tj)


@njit(inline="always", cache=True)
def _insert(vals, idxs, flags, k, s, j):
    p = k - 1
    while p > 0 and _better(s, j, vals[p - 1], idxs[p - 1]):
        vals[p] = vals[p - 1]
        idxs[p] = idxs[p - 1]
        flags[p] = flags[p - 1]
        p -= 1
    vals[p] = s
    idxs[p] = j
    flags[p] = True


@njit(fastmath={"nnan", "nsz", "reassoc", "contract"}, boundscheck=False, cache=True)
def _dot(x, a, b):
    d = x.shape[1]
    acc = x.dtype.type(0)
    for t in range(d):
        acc += x[a, t] * x[b, t]
    return acc


@njit(parallel=True, boundscheck=False, cache=True)
def _init(x, k, seed, p_indptr, p_indices, idx, val, flag):
    """Rescore the previous neighbours of every row; pad short rows with random nodes."""
    n = x.shape[0]
    step = (n + _N_CHUNKS - 1) // _N_CHUNKS
    for ch in prange(_N_CHUNKS):
        a = ch * step
        b = min(n, a + step)
        stamp = np.full(n, -1, dtype=np.int64)
        for u in range(a, b):
            vals = val[u]
            idxs = idx[u]
            flags = flag[u]
            stamp[u] = u
            for e in range(p_indptr[u], p_indptr[u + 1]):
                q = p_indices[e]
                if stamp[q] == u:
                    continue
                stamp[q] = u
                s = _dot(x, u, q)
                if _better(s, q, vals[k - 1], idxs[k - 1]):
                    _insert(vals, idxs, flags, k, s, q)
            # Rows with fewer than k seeds: random distinct nodes (n > k is guaranteed).
            r = 0
            while idxs[k - 1] < 0:
                q = np.int64(_hash(seed, 0x7FFF, u, r) % np.uint64(n))
                r += 1
                if stamp[q] == u:
                    continue
                stamp[q] = u
                _insert(vals, idxs, flags, k, _dot(x, u, q), q)


@njit(boundscheck=False, cache=True)
def _joined_lists(idx, flag, k, max_cand, seed, it):
    """C(u) = forward list + at most max_cand reverse neighbours, as CSR with "new" flags.

    Reverse neighbours are chosen by the smallest hash priority of (seed, it, v, u): a fixed
    random sample. Sequential counting sort: O(N k), negligible beside the join.
    """
    n = idx.shape[0]
    rcount = np.zeros(n + 1, dtype=np.int64)
    for u in range(n):
        for t in range(k):
            rcount[idx[u, t] + 1] += 1
    rptr = np.cumsum(rcount)
    rsrc = np.empty(rptr[n], dtype=np.int64)
    rnew = np.empty(rptr[n], dtype=np.bool_)
    fill = rptr[:n].copy()
    for u in range(n):
        for t in range(k):
            v = idx[u, t]
            rsrc[fill[v]] = u
            rnew[fill[v]] = flag[u, t]
            fill[v] += 1
    cptr = np.empty(n + 1, dtype=np.int64)
    cptr[0] = 0
    for v in range(n):
        cptr[v + 1] = cptr[v] + k + min(max_cand, rptr[v + 1] - rptr[v])
    cidx = np.empty(cptr[n], dtype=np.int64)
    cnew = np.empty(cptr[n], dtype=np.bool_)
    for v in range(n):
        o = cptr[v]
        for t in range(k):
            cidx[o + t] = idx[v, t]
            cnew[o + t] = flag[v, t]
        o += k
        a = rptr[v]
        deg = rptr[v + 1] - a
        if deg <= max_cand:
            for t in range(deg):
                cidx[o + t] = rsrc[a + t]
                cnew[o + t] = rnew[a + t]
        else:
            pri = np.empty(deg, dtype=np.uint64)
            for t in range(deg):
                pri[t] = _hash(seed, it, v, rsrc[a + t])
            keep = np.argsort(pri)[:max_cand]
            keep.sort()
            for t in range(max_cand):
                cidx[o + t] = rsrc[a + keep[t]]
                cnew[o + t] = rnew[a + keep[t]]
    return cptr, cidx, cnew


@njit(parallel=True, boundscheck=False, cache=True)
def _join(x, k, idx, val, cptr, cidx, cnew, n_random, seed, it, idx_out, val_out, flag_out, changed):
    n = x.shape[0]
    step = (n + _N_CHUNKS - 1) // _N_CHUNKS
    max_c = 0
    for v in range(n):
        max_c = max(max_c, cptr[v + 1] - cptr[v])
    for ch in prange(_N_CHUNKS):
        a = ch * step
        b = min(n, a + step)
        stamp = np.full(n, -1, dtype=np.int32)
        cand = np.empty(max_c * (max_c + 1) + n_random, dtype=np.int64)
        score = np.empty(cand.shape[0], dtype=x.dtype)
        n_changed = 0
        for u in range(a, b):
            for t in range(k):
                stamp[idx[u, t]] = u
            stamp[u] = u
            # Gather the distinct candidates first, score them in a tight loop second: the
            # independent row loads then overlap (this loop is bound by cache misses on x).
            nc = 0
            for e in range(cptr[u], cptr[u + 1]):
                v = cidx[e]
                v_new = cnew[e]
                if stamp[v] != u:  # a reverse neighbour not yet in u's list
                    stamp[v] = u
                    cand[nc] = v
                    nc += 1
                for f in range(cptr[v], cptr[v + 1]):
                    q = cidx[f]
                    if (v_new or cnew[f]) and stamp[q] != u:
                        stamp[q] = u
                        cand[nc] = q
                        nc += 1
            for r in range(n_random):
                q = np.int64(_hash(seed, it, u, r) % np.uint64(n))
                if stamp[q] != u:
                    stamp[q] = u
                    cand[nc] = q
                    nc += 1
            for c in range(nc):
                score[c] = _dot(x, u, cand[c])
            vals = val_out[u]
            idxs = idx_out[u]
            flags = flag_out[u]
            for t in range(k):
                vals[t] = val[u, t]
                idxs[t] = idx[u, t]
                flags[t] = False
            for c in range(nc):
                if _better(score[c], cand[c], vals[k - 1], idxs[k - 1]):
                    _insert(vals, idxs, flags, k, score[c], cand[c])
            for t in range(k):
                n_changed += flags[t]
        changed[ch] = n_changed


def refine(x, p_indptr, p_indices, k, max_iters, sample_random, max_candidates, delta, seed):
    """Refresh a kNN graph (backend contract of the ``refine`` op).

    Args:
        x: (N, d) float32/float64 contiguous CPU tensor (rows L2-normalised for cosine).
        p_indptr: (N + 1,) int64; p_indices: (nnz,) int32/int64 — the previous graph's
            neighbours of each row (any count per row; self loops and duplicates ignored).
        k: 1 <= k < N. max_iters >= 0, sample_random >= 0, max_candidates >= 0, delta >= 0.
        seed: int, the only source of randomness.

    Returns:
        (idx, val, updates): (N, k) int64 neighbours sorted by score descending (ties by
        lower index), (N, k) scores of x's dtype, and a list with the number of changed
        entries per iteration.
    """
    xn = x.detach().cpu().contiguous().numpy()
    n = xn.shape[0]
    seed = int(seed) & 0x7FFFFFFFFFFFFFFF
    idx = np.full((n, k), -1, dtype=np.int64)
    val = np.full((n, k), -np.inf, dtype=xn.dtype)
    flag = np.zeros((n, k), dtype=np.bool_)
    # int64 seeds whatever the graph's index dtype: one JIT signature less to compile.
    _init(xn, k, seed, p_indptr.cpu().numpy(), p_indices.cpu().numpy().astype(np.int64), idx, val, flag)
    updates = []
    idx2, val2, flag2 = np.empty_like(idx), np.empty_like(val), np.empty_like(flag)
    changed = np.zeros(_N_CHUNKS, dtype=np.int64)
    for it in range(1, max_iters + 1):
        cptr, cidx, cnew = _joined_lists(idx, flag, k, max_candidates, seed, it)
        _join(xn, k, idx, val, cptr, cidx, cnew, sample_random, seed, it, idx2, val2, flag2, changed)
        idx, idx2, val, val2, flag, flag2 = idx2, idx, val2, val, flag2, flag
        n_changed = int(changed.sum())
        updates.append(n_changed)
        if n_changed <= delta * n * k:
            break
    return torch.from_numpy(idx), torch.from_numpy(val), updates
