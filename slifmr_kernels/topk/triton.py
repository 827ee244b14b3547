"""Triton backend of the batched top-k similarity (docs/GPU.md).

Contract: docs/ARCHITECTURE.md, "topk".  ``x`` [N, d] and ``y`` [M, d] share a float dtype
(float32 or float64); scores are inner products (the op layer normalised the rows for cosine).

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (how CI tests it).

Design
------
One program owns ``BLOCK_M`` query rows and sweeps every column tile of ``y``:

* the score tile ``x_blk @ y_tile^T`` comes from ``tl.dot`` and never leaves registers: in
  full precision (``ieee``) for the exact kernel, or on TF32 tensor cores (``TF32``) for the
  candidate pass of rerank.py, which re-scores the candidates in fp32 and certifies each row
  (float32 inputs take that path: see :func:`topk`);
* each row keeps its running top-k as an unsorted list of ``KP = next_pow2(k)`` slots (slots
  ``>= k`` are disabled) and a threshold = the list's worst entry.  For float32 scores (both
  the TF32 candidate pass and the exact fp32 kernel) an entry is one int64 key, the score's
  order-preserving bits above ``2^32 - 1 - j`` (:func:`_key`), so "better" is one signed
  compare, a row's best candidate one max and its worst entry one min; float64 lists keep
  (score, index) pairs (and so do float32 joins with more than 2^31 columns);
* a tile costs one compare per score against the row thresholds (no masks: padding, self and
  excluded columns are dealt with on the rare path); only when some score reaches its row's
  threshold does the program build the exact "beats" mask and enter the merge loop, which
  extracts the best beating candidate of every row at once, checks it against the row's
  exclusion list, replaces the row's worst slot and re-filters the tile against the new
  threshold (with keys: the next candidate is the best key above the new threshold and
  below the previous candidate, one masked max over the tile per step).  In the steady state
  almost no tile has hits (expected inserts per row ~ k (1 + ln(M / k))), so there is no sort
  of every tile;
* order is lexicographic on (score desc, index asc) everywhere, so ties break by the lower
  index and the result does not depend on the tiling or on the tile visiting order;
* the tile holding the block's diagonal is visited first, so for kNN graphs (y = x) the
  thresholds start high and later tiles rarely merge; the other tiles follow in increasing
  order, so the programs resident at one time sweep y together and share its tiles in L2;
* at the end the list is written out in sorted order by ``k`` extractions; rows with fewer
  than k allowed candidates are padded with (-1, -inf).

Memory: O(N * k) for the outputs plus one tile per program; the N x M score matrix is never
materialised.
"""

from __future__ import annotations

import torch

from .._triton import check_launchable, tl, triton
from .rerank import tf32_enabled, topk_from_candidates

__all__ = ["topk", "topk_exact", "topk_candidates", "topk_tf32"]

#: Index sentinel of an empty slot: larger than any real index, so it loses every tie.
_EMPTY = tl.constexpr(2**62)


@triton.jit
def _beats(s, j, thr_v, thr_j):
    """(s, j) is better than the row threshold (thr_v, thr_j): higher score, or equal score
    and lower index."""
    return (s > thr_v[:, None]) | ((s == thr_v[:, None]) & (j < thr_j[:, None]))


@triton.jit
def _worst(lv, lj, real):
    """Worst entry of each row's list: lowest score, ties -> highest index."""
    inf = float("inf")
    thr_v = tl.min(tl.where(real, lv, inf), axis=1)
    thr_j = tl.max(tl.where(real & (lv == thr_v[:, None]), lj, -1), axis=1)
    return thr_v, thr_j


# float32 lists as one int64 key per entry: (order-preserving score bits) << 32 | (2^32 - 1 - j),
# so that "better" is one signed compare, a row's best candidate one max and its worst entry
# one min (the lexicographic pair form needs two reductions and two compares for each)
_LOW32 = tl.constexpr(0xFFFFFFFF)
_SIGN_FREE = tl.constexpr(0x7FFFFFFF)
_NO_KEY = tl.constexpr(-(2**63))  # below every key: invalid column, no candidate
_FULL_KEY = tl.constexpr(2**63 - 1)  # above every key: disabled slot, padding row
#: key of empty slot 0 (slot p holds _EMPTY_KEY - p): score -inf and a column index >= 2^31,
#: so below every real candidate, (-inf, j) included
_EMPTY_KEY = tl.constexpr(-2139095041 * 2**32 + 2**31 - 1)  # ordered(-inf) << 32 | 2^31 - 1


@triton.jit
def _flip_negative(b):
    """Flip the magnitude bits of negative int32s: maps a float32's bits to an int32 whose
    signed order is the float order, and back (the map is its own inverse)."""
    return b ^ ((b >> 31) & _SIGN_FREE)


@triton.jit
def _ordered(s):
    """float32 -> int32 whose signed order is the float order (-0.0 and +0.0 both map to 0)."""
    return tl.where(s == 0, 0, _flip_negative(s.to(tl.int32, bitcast=True)))


@triton.jit
def _key(s, j):
    """Packed (score, index) key of int64 columns j < 2^31; NaN scores get _NO_KEY."""
    k = (_ordered(s).to(tl.int64) << 32) | (-j + _LOW32)  # (tensor first: see _key_index)
    return tl.where(s == s, k, _NO_KEY)


@triton.jit
def _key_score(key):
    """The float32 score of a key (its high 32 bits, back through the order map)."""
    return _flip_negative((key >> 32).to(tl.int32)).to(tl.float32, bitcast=True)


@triton.jit
def _key_index(key):
    """The column of a key; >= 2^31 for an empty slot."""
    # the tensor on the left: `constexpr - tensor` stays a constexpr under the interpreter
    return -(key & _LOW32) + _LOW32


@triton.jit
def _excluded(EXI, ex_lo, ex_len, ex_max, cj, take, BLOCK_M: tl.constexpr, BLOCK_X: tl.constexpr):
    """Whether each row's candidate column cj is on the row's exclusion list (rows with take).

    Only candidates that would enter a list are checked: O(list length) per insertion, never
    per score."""
    hit = tl.zeros([BLOCK_M], dtype=tl.int32)
    for l0 in range(0, ex_max, BLOCK_X):
        ll = l0 + tl.arange(0, BLOCK_X)
        lm = (ll[None, :] < ex_len[:, None]) & take[:, None]
        ex = tl.load(EXI + ex_lo[:, None] + ll[None, :], mask=lm, other=-1)
        hit += tl.sum((lm & (ex.to(tl.int64) == cj[:, None])).to(tl.int32), axis=1)
    return hit > 0


@triton.jit
def _tile_dot(xa, yb, TF32: tl.constexpr):
    """xa @ yb^T: TF32 tensor cores (candidate pass) or full fp32/fp64 (exact kernel)."""
    if TF32:
        r = tl.dot(xa, tl.trans(yb), input_precision="tf32")
    else:
        r = tl.dot(xa, tl.trans(yb), input_precision="ieee")
    return r


@triton.jit
def _topk_kernel(
    X,
    Y,
    OUT_I,
    OUT_V,
    EXP,
    EXI,
    N,
    M,
    D,
    K,
    EXCL_SELF: tl.constexpr,
    HAS_EXCL: tl.constexpr,
    DIAG_FIRST: tl.constexpr,
    TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_X: tl.constexpr,
    SINGLE_K: tl.constexpr,
    PACKED: tl.constexpr,
):
    pid = tl.program_id(0)
    inf = float("inf")
    EMPTY = _EMPTY
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    slots = tl.arange(0, KP)
    real = (slots < K)[None, :] & rmask[:, None]  # [BM, KP]: usable slots
    if PACKED:
        # every slot holds a distinct key (empty slots by slot number), so a row's worst entry
        # is one slot; disabled slots and padding rows (rows >= N) hold _FULL_KEY, so padding
        # rows never accept anything
        lk = tl.where(real, -slots[None, :].to(tl.int64) + _EMPTY_KEY, _FULL_KEY)
        thr_k = tl.min(lk, axis=1)
        thr_v = tl.where(rmask, _key_score(thr_k), inf)
    else:
        lv = tl.full([BLOCK_M, KP], -inf, X.dtype.element_ty)
        lj = tl.full([BLOCK_M, KP], EMPTY, tl.int64)
        thr_v, thr_j = _worst(lv, lj, real)
        # padding rows (rows >= N) never accept anything
        thr_v = tl.where(rmask, thr_v, inf)
        thr_j = tl.where(rmask, thr_j, -1)

    if HAS_EXCL:
        ex_lo = tl.load(EXP + rows64, mask=rmask, other=0)
        ex_len = tl.load(EXP + rows64 + 1, mask=rmask, other=0) - ex_lo
        ex_max = tl.max(ex_len, axis=0)

    n_tiles = tl.cdiv(M, BLOCK_N)
    diag = 0
    if DIAG_FIRST:
        diag = tl.minimum((pid * BLOCK_M) // BLOCK_N, n_tiles - 1)
    if SINGLE_K:
        # d <= BLOCK_K: the block's x rows stay in registers for the whole sweep, and the next
        # y tile is loaded while the current one is filtered (the loop's only long latency)
        kk1 = tl.arange(0, BLOCK_K)
        km1 = kk1 < D
        xa1 = tl.load(X + rows64[:, None] * D + kk1[None, :], mask=rmask[:, None] & km1[None, :], other=0.0)
        c_nx = (diag * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        yb_nx = tl.load(
            Y + c_nx[:, None] * D + kk1[None, :], mask=(c_nx < M)[:, None] & km1[None, :], other=0.0
        )
    for t in range(0, n_tiles):
        # the diagonal tile, then 0, 1, ... skipping it
        tt = tl.where(t == 0, diag, tl.where(t <= diag, t - 1, t))
        cols = tt * BLOCK_N + tl.arange(0, BLOCK_N)
        cmask = cols < M
        cols64 = cols.to(tl.int64)
        if SINGLE_K:
            s = _tile_dot(xa1, yb_nx, TF32)
            t1 = t + 1  # tile t + 1 in visiting order (past the end: all masked)
            c_nx = (tl.where(t1 <= diag, t1 - 1, t1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
            yb_nx = tl.load(
                Y + c_nx[:, None] * D + kk1[None, :], mask=(c_nx < M)[:, None] & km1[None, :], other=0.0
            )
        else:
            s = tl.zeros([BLOCK_M, BLOCK_N], dtype=X.dtype.element_ty)
            for k0 in range(0, D, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                kmask = kk < D
                xa = tl.load(
                    X + rows64[:, None] * D + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0
                )
                yb = tl.load(
                    Y + cols64[:, None] * D + kk[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0
                )
                s += _tile_dot(xa, yb, TF32)
        # Common path, one compare per score: can any score of the tile enter its row's list?
        # (Padding columns, self and excluded columns are sorted out on the rare path.)
        maybe = tl.max(tl.max((s >= thr_v[:, None]).to(tl.int32), axis=1), axis=0)
        if PACKED:
            if maybe > 0:
                ok = cmask[None, :]
                if EXCL_SELF:
                    ok = ok & (cols64[None, :] != rows64[:, None])
                key = tl.where(ok, _key(s, cols64[None, :]), _NO_KEY)
                # each iteration takes every row's best candidate that beats its threshold and
                # lies below the row's previous candidate: one masked max over the tile
                ck = tl.max(tl.where(key > thr_k[:, None], key, _NO_KEY), axis=1)
                while tl.max((ck > thr_k).to(tl.int32), axis=0) > 0:
                    take = ck > thr_k
                    if HAS_EXCL:
                        take = take & ~_excluded(
                            EXI, ex_lo, ex_len, ex_max, _key_index(ck), take, BLOCK_M, BLOCK_X
                        )
                    # keys are distinct, so the worst slot is the one holding the threshold
                    lk = tl.where(take[:, None] & (lk == thr_k[:, None]), ck[:, None], lk)
                    thr_k = tl.min(lk, axis=1)
                    ck = tl.max(tl.where((key > thr_k[:, None]) & (key < ck[:, None]), key, _NO_KEY), axis=1)
                thr_v = tl.where(rmask, _key_score(thr_k), inf)
        else:
            if maybe > 0:
                ok = rmask[:, None] & cmask[None, :]
                if EXCL_SELF:
                    ok = ok & (cols64[None, :] != rows64[:, None])
                beat = ok & _beats(s, cols64[None, :], thr_v, thr_j)
                n_hit = tl.max(tl.sum(beat.to(tl.int32), axis=1), axis=0)
                while n_hit > 0:
                    # best beating candidate of every row (score desc, index asc)
                    cv = tl.max(tl.where(beat, s, -inf), axis=1)
                    best = beat & (s == cv[:, None])
                    cj = tl.min(tl.where(best, cols64[None, :], EMPTY), axis=1)
                    take = cj < EMPTY
                    beat = beat & (cols64[None, :] != cj[:, None])
                    if HAS_EXCL:
                        take = take & ~_excluded(EXI, ex_lo, ex_len, ex_max, cj, take, BLOCK_M, BLOCK_X)
                    # replace the worst slot (the lowest slot number among equal worst entries)
                    is_worst = real & (lv == thr_v[:, None]) & (lj == thr_j[:, None])
                    pos = tl.min(tl.where(is_worst, slots[None, :], KP), axis=1)
                    upd = take[:, None] & (slots[None, :] == pos[:, None])
                    lv = tl.where(upd, cv[:, None], lv)
                    lj = tl.where(upd, cj[:, None], lj)
                    nthr_v, nthr_j = _worst(lv, lj, real)
                    thr_v = tl.where(rmask, nthr_v, inf)
                    thr_j = tl.where(rmask, nthr_j, -1)
                    beat = beat & _beats(s, cols64[None, :], thr_v, thr_j)
                    n_hit = tl.max(tl.sum(beat.to(tl.int32), axis=1), axis=0)

    # write the list sorted by (score desc, index asc); empty slots become (-1, -inf)
    if PACKED:
        lk = tl.where(real, lk, _NO_KEY)  # disabled slots and padding rows: never chosen
        for p in range(0, K):
            bk = tl.max(lk, axis=1)  # the best entry left; taken ones become _NO_KEY
            lk = tl.where(lk == bk[:, None], _NO_KEY, lk)
            bj = _key_index(bk)
            empty = bj >= 2**31
            tl.store(OUT_I + rows64 * K + p, tl.where(empty, -1, bj), mask=rmask)
            tl.store(OUT_V + rows64 * K + p, tl.where(empty, -inf, _key_score(bk)), mask=rmask)
    else:
        avail = real
        for p in range(0, K):
            bv = tl.max(tl.where(avail, lv, -inf), axis=1)
            bj = tl.min(tl.where(avail & (lv == bv[:, None]), lj, EMPTY + 1), axis=1)
            chosen = avail & (lv == bv[:, None]) & (lj == bj[:, None])
            pos = tl.min(tl.where(chosen, slots[None, :], KP), axis=1)
            avail = avail & (slots[None, :] != pos[:, None])
            empty = bj >= EMPTY
            tl.store(OUT_I + rows64 * K + p, tl.where(empty, -1, bj), mask=rmask)
            tl.store(OUT_V + rows64 * K + p, tl.where(empty, -inf, bv), mask=rmask)


def _config(d: int, k: int):
    kp = max(2, triton.next_power_of_2(k))
    # Keep the [BLOCK_M, KP] list registers modest as k grows (64 rows for lists of up to 32
    # slots was the fastest of the shapes bench/gpu_check.py tried on an H200).
    block_m = 64 if kp <= 32 else (32 if kp <= 64 else 16)
    block_k = max(16, min(64, triton.next_power_of_2(max(d, 1))))
    return dict(BLOCK_M=block_m, BLOCK_N=64, BLOCK_K=block_k, KP=kp, BLOCK_X=32, SINGLE_K=d <= block_k)


def _launch(x, y, k, exclude_self, excl_indptr, excl_indices, tf32):
    check_launchable(x)
    n, d = x.shape
    m = y.shape[0]
    k = int(k)
    idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
    val = torch.empty((n, k), dtype=x.dtype, device=x.device)
    if n == 0 or k == 0:
        return idx, val
    if m == 0:
        idx.fill_(-1)
        val.fill_(float("-inf"))
        return idx, val
    has_excl = excl_indptr is not None
    cfg = _config(d, k)
    # packed keys need float32 scores and column ids below 2^31 (a tuning run may force pairs)
    cfg.setdefault("PACKED", x.dtype == torch.float32 and m <= 2**31)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]),)
    _topk_kernel[grid](
        x,
        y,
        idx,
        val,
        excl_indptr if has_excl else idx,
        excl_indices if has_excl else idx,
        n,
        m,
        d,
        k,
        EXCL_SELF=bool(exclude_self),
        HAS_EXCL=has_excl,
        DIAG_FIRST=True,
        TF32=bool(tf32),
        **cfg,
    )
    return idx, val


def topk_exact(x, y, k, exclude_self, excl_indptr, excl_indices):
    """The exact kernel: full-precision (ieee) dot products, float32/float64."""
    return _launch(x, y, k, exclude_self, excl_indptr, excl_indices, False)


def topk_candidates(x, y, c, exclude_self, excl_indptr, excl_indices):
    """The c best columns per row by TF32 score (float32): candidates for
    :func:`slifmr_kernels.topk.rerank.topk_from_candidates`, not an exact answer."""
    return _launch(x, y, c, exclude_self, excl_indptr, excl_indices, True)


def topk_tf32(x, y, k, exclude_self, excl_indptr, excl_indices):
    """Exact top-k through TF32 candidates + fp32 re-rank + per-row certificate (rerank.py)."""
    return topk_from_candidates(topk_candidates, topk_exact, x, y, k, exclude_self, excl_indptr, excl_indices)


def topk(x, y, k, exclude_self, excl_indptr, excl_indices):
    """k largest inner products <x[i], y[j]> per row i, sorted (score desc, index asc).

    x [N, d] and y [M, d] float32/float64 (same dtype); k int (1 <= k <= M, or 0);
    exclude_self: drop j == i; excl_indptr int64 [N + 1] / excl_indices int32/int64: per-row
    disallowed columns (or None).  Returns idx int64 [N, k] and val [N, k] (dtype of x); rows
    with fewer than k allowed candidates are padded with idx -1 and val -inf.
    Exact and deterministic; ties by lower index; memory O(N * k + tile).  Similarity joins
    (no exclusion lists) in float32 go through :func:`topk_tf32`, ranking with exclusion lists
    through the exact kernel: the faster of the two for each on an H200 (docs/GPU.md);
    ``SLIFMR_TOPK_TF32=0/1`` forces one.
    """
    if tf32_enabled(x, default=excl_indptr is None):
        return topk_tf32(x, y, k, exclude_self, excl_indptr, excl_indices)
    return topk_exact(x, y, k, exclude_self, excl_indptr, excl_indices)
