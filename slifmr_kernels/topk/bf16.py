"""Exact CPU top-k from bfloat16 candidates: bf16 GEMM tiles, fp32 re-rank, per-row certificate.

On CPUs with AVX-512 BF16 (or AMX), ``torch.mm`` in bfloat16 runs the oneDNN bf16 GEMM, about
2-3x the fp32 OpenBLAS rate per core on this machine (docs/PERFORMANCE.md, "bf16 candidates").
bf16 keeps 8 significant bits, so its scores reorder near-ties; the result is made exact the way
:mod:`slifmr_kernels.topk.rerank` does it for TF32 on GPUs:

1. **Candidates.** Two worker threads (one core each: ``torch.set_num_threads(1)`` for the
   duration of the call, the GIL released by ``torch.mm`` and the Numba selection) take row tiles
   of ``x``; for each column tile of ``y`` one bf16 ``torch.mm`` writes a ``TR x TC`` bf16 score
   tile, a Numba ``nogil`` kernel maps each bf16 score to an order-preserving int16 key, masks
   self / exclusions and merges the keys into the rows' sorted lists of the ``C`` best columns
   (the fp32 kernel's selection code, on 16-bit keys: half the bytes, twice the lanes).
2. **Re-rank + certificate** (:func:`rerank.topk_from_candidates`): the C candidates are
   re-scored in fp32, the first k kept, and row i is proved exact when

       s~[C - 1] + ulp_bf16(s~[C - 1]) / 2 + eps_i  <  e_k

   (``e_k`` the k-th re-scored score). Rows that fail are recomputed by the exact fp32 kernel.

Error bound. Let ``xb = bf16(x)``, ``xr = x - xb`` (round to nearest even, computed exactly in
fp32) and likewise for y. The GEMM multiplies bf16 values exactly in fp32 and accumulates in
fp32 (AVX-512 ``vdpbf16ps`` / AMX), then rounds the sum ``a_ij`` to bf16 (monotone), so:

* ``|x_i.y_j - xb_i.yb_j| = |xr_i.y_j + xb_i.yr_j| <= |xr_i| max|y| + |xb_i| max|yr|``
  (Cauchy-Schwarz on the *measured* residual norms, about 2.5x tighter than the worst-case
  ``2^-7 |x||y|``);
* fp32 accumulation adds at most ``d 2^-23 |xb_i| max|yb|`` (and as much again in the fp32
  re-score and the exact kernel: the ``2 d 2^-23`` term of rerank.py);
* the final bf16 rounding is monotone, so a column with ``s~_j <= s~[C - 1]`` has
  ``a_j <= s~[C - 1] + ulp/2``: that term is added to the candidate bound, not to eps;
* bf16 arithmetic flushes denormals: an absolute ``2^-120 d`` covers it, and inputs whose norms
  leave ``[2^-40, 2^40]`` take the fp32 kernel (:func:`usable`).

Memory: the candidate lists (N x C int64 + fp32), the bf16 copies of x and y (half of the
inputs), one fp32 + one bf16 tile per worker, and the re-rank chunk of rerank.py.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch
from numba import njit, prange

from . import rerank
from .numba import _excl_arrays, _scan_row, _sorted_exclusions

__all__ = [
    "topk",
    "candidates",
    "error_bound",
    "usable",
    "cpu_has_bf16",
    "candidate_count",
    "last_fallback_rows",
]

#: Rows x columns of a bf16 score tile: 1024 x 2048 reached 118-175 GFLOP/s on one core for
#: d = 64 / 384 where 512 x 1024 reached 47-168 (torch.mm call overhead dominates small tiles).
TR, TC = 1024, 2048

#: Minimum N * M * d for the automatic choice (below it the fp32 kernel's lower overhead wins).
MIN_WORK = 1 << 32
#: Minimum d for the automatic choice: at d = 64 the bf16 path was slower than the fp32 kernel,
#: at d = 128 within the noise (1.06x CPU time), at d = 384 1.4x faster (docs/PERFORMANCE.md).
MIN_D = 192

_U = 2.0**-8  # bf16 unit roundoff (round to nearest even)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX-512 BF16 or AMX): elsewhere a bf16
    ``torch.mm`` is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


_HAS_BF16 = None


def usable(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the bf16 path can certify this input at all: float32, norms inside
    [2^-40, 2^40] (no bf16 overflow, denormal flushing negligible)."""
    if x.dtype != torch.float32 or x.shape[0] == 0 or y.shape[0] == 0:
        return False
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    hi = float(torch.maximum(nx.max(), ny.max()))
    lo = float(
        torch.minimum(
            nx[nx > 0].min() if bool((nx > 0).any()) else nx.new_tensor(1.0),
            ny[ny > 0].min() if bool((ny > 0).any()) else ny.new_tensor(1.0),
        )
    )
    return hi <= 2.0**40 and lo >= 2.0**-40


def enabled(x: torch.Tensor, y: torch.Tensor, k: int, check_range: bool = True) -> bool:
    """Whether the numba backend routes this call through bf16 candidates.
    ``SLIFMR_TOPK_BF16=1`` / ``=0`` forces it on / off (on still needs :func:`usable`);
    otherwise: a bf16-capable CPU, d >= MIN_D, N*M*d >= MIN_WORK, k <= 256.
    ``check_range=False`` leaves out the :func:`usable` test (for rows not yet normalised:
    the caller tests the normalised rows)."""
    global _HAS_BF16
    env = os.environ.get("SLIFMR_TOPK_BF16", "")
    if env == "0" or x.dtype != torch.float32:
        return False
    if env == "":
        if _HAS_BF16 is None:
            _HAS_BF16 = cpu_has_bf16()
        n, d = x.shape
        if not _HAS_BF16 or d < MIN_D or k > 256 or n * y.shape[0] * d < MIN_WORK:
            return False
    return usable(x, y) if check_range else True


def candidate_count(k: int, m: int) -> int:
    """C = k + max(k, 22) candidates, at most M: the bf16 error (~0.4 % of |x||y| with measured
    residuals) is much larger than TF32's, so the margin between the k-th and the C-th score
    must be wider; a long list costs little (inserts are rare, the re-rank is C·d per row)."""
    return min(m, k + max(k, 22))


def error_bound(x: torch.Tensor, y: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor):
    """eps_i [N] float32: bound on |bf16-GEMM accumulator - exact score| over the columns of
    row i, plus the fp32 rounding of the re-score and of the exact kernel (see module doc)."""
    d = x.shape[1]
    xr = (x - xb.float()).norm(dim=1).double()
    xbn = xb.float().norm(dim=1).double()
    ymax = y.norm(dim=1).max().double()
    ybf = yb.float()
    yrmax = (y - ybf).norm(dim=1).max().double()
    ybmax = ybf.norm(dim=1).max().double()
    acc = 3 * d * 2.0**-23
    eps = xr * ymax + xbn * yrmax + acc * (xbn * ybmax + x.norm(dim=1).double() * ymax)
    eps = eps * (1 + 2.0**-20) + d * 2.0**-120
    return eps.float()


#: Key of a masked entry and of list padding: below the key of every finite bf16 score.
_KEY_MIN = -32768


@njit(nogil=True, boundscheck=False, cache=True)
def _select_tile(tile16, nr, nc, r0, c0, exclude_self, has_excl, buf, ptr, end, keys, vals, idxs, c):
    """Merge a bf16 score tile (int16 bit patterns) into the rows' sorted C-lists without
    widening it: each score becomes the order-preserving int16 key ``b ^ ((b >> 15) & 0x7fff)``
    (negative bf16 values have their magnitude bits flipped), so the selection compares 32
    keys per AVX-512 register; ``vals`` holds keys (as float32) until :func:`_keys_to_bf16`."""
    c1 = c0 + nc
    for r in range(nr):
        src = tile16[r]
        row = keys[:nc]
        for t in range(nc):
            b = src[t]
            row[t] = b ^ ((b >> 15) & np.int16(0x7FFF))
        i = r0 + r
        if exclude_self and c0 <= i < c1:
            row[i - c0] = _KEY_MIN
        if has_excl:
            p = ptr[r]
            e = end[r]
            while p < e and buf[p] < c1:
                row[buf[p] - c0] = _KEY_MIN
                p += 1
            ptr[r] = p
        _scan_row(row, nc, c0, vals[r], idxs[r], c)


@njit(parallel=True, boundscheck=False, cache=True)
def _keys_to_bf16(vals, idxs):
    """Keys back to the bf16 scores they order (as float32); padding -> (-1, -inf)."""
    n, c = vals.shape
    for i in prange(n):
        for t in range(c):
            kk = np.int32(vals[i, t])
            if kk == _KEY_MIN:
                vals[i, t] = -np.inf
                idxs[i, t] = -1
            else:
                b = kk ^ ((kk >> 15) & 0x7FFF)  # the key map is an involution
                vals[i, t] = np.array([np.uint32(b & 0xFFFF) << np.uint32(16)], dtype=np.uint32).view(
                    np.float32
                )[0]


@njit(parallel=True, fastmath={"reassoc", "contract", "nnan", "ninf"}, boundscheck=False, cache=True)
def _rescore_kernel(x, y, cand, out):
    n, c = cand.shape
    d = x.shape[1]
    for i in prange(n):
        for t in range(c):
            j = cand[i, t]
            if j < 0:
                out[i, t] = -np.inf
            else:
                acc = np.float32(0.0)
                for u in range(d):
                    acc += x[i, u] * y[j, u]
                out[i, t] = acc


def rescore(x, y, cand):
    """fp32 scores <x[i], y[cand[i, t]]> [B, C] (-inf where cand < 0), any summation order
    (the certificate's d 2^-23 term covers it)."""
    out = np.empty(tuple(cand.shape), dtype=np.float32)
    _rescore_kernel(x.numpy(), y.numpy(), cand.numpy(), out)
    return torch.from_numpy(out)


def candidates(x, y, c, exclude_self, excl_indptr, excl_indices, xb=None, yb=None, threads: int = 2):
    """The c best allowed columns per row by bf16 score (idx int64 [N, c], val fp32 [N, c]:
    the bf16-rounded scores), sorted, padded with (-1, -inf)."""
    n, m = x.shape[0], y.shape[0]
    xb = x.to(torch.bfloat16) if xb is None else xb
    yb = y.to(torch.bfloat16) if yb is None else yb
    out_idx = np.full((n, c), -1, dtype=np.int64)
    out_val = np.full((n, c), float(_KEY_MIN), dtype=np.float32)
    has_excl, ip, ind = _excl_arrays(excl_indptr, excl_indices)
    tr = TR
    while tr > 64 and n < threads * 2 * tr:
        tr //= 2
    tiles = list(range(0, n, tr))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work():
        tile = torch.empty(tr, TC, dtype=torch.bfloat16)
        keys = np.empty(TC, dtype=np.int16)
        while True:
            with lock:
                if not tiles or errors:
                    return
                r0 = tiles.pop(0)
            try:
                r1 = min(n, r0 + tr)
                nr = r1 - r0
                if has_excl:
                    buf, ptr, end = _sorted_exclusions(ip, ind, r0, r1)
                else:
                    buf = ptr = end = np.empty(0, dtype=np.int64)
                xt = xb[r0:r1]
                for c0 in range(0, m, TC):
                    c1 = min(m, c0 + TC)
                    nc = c1 - c0
                    t = tile.view(-1)[: nr * nc].view(nr, nc)
                    torch.mm(xt, yb[c0:c1].T, out=t)
                    _select_tile(
                        t.view(torch.int16).numpy(),
                        nr,
                        nc,
                        r0,
                        c0,
                        bool(exclude_self),
                        has_excl,
                        buf,
                        ptr,
                        end,
                        keys,
                        out_val[r0:r1],
                        out_idx[r0:r1],
                        c,
                    )
            except BaseException as e:  # pragma: no cover - re-raised below
                with lock:
                    errors.append(e)
                return

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workers = [threading.Thread(target=work, daemon=True) for _ in range(max(1, threads) - 1)]
        for w in workers:
            w.start()
        work()
        for w in workers:
            w.join()
    finally:
        torch.set_num_threads(saved)
    if errors:
        raise errors[0]
    _keys_to_bf16(out_val, out_idx)
    return torch.from_numpy(out_idx), torch.from_numpy(out_val)


_fallback_stats: list = []


def last_fallback_rows() -> list:
    """Rows of the last bf16 call that failed their certificate at each level: [rows retried
    with 4x the candidates, rows then recomputed by the fp32 kernel] (diagnostics)."""
    return list(_fallback_stats)


def topk(
    x, y, k, exclude_self, excl_indptr, excl_indices, exact_fn=None, c=None, retries: int = 1, _level: int = 0
):
    """The numba backend contract (see numba.topk), exact, through bf16 candidates.
    ``x``, ``y`` float32 CPU, :func:`usable`. ``exact_fn``: the fp32 fallback (numba.topk_fp32).
    Rows whose certificate fails are retried ``retries`` times with 4x the candidates (a bf16
    pass over those rows only), then recomputed by ``exact_fn``."""
    from . import numba as nbk

    exact_fn = nbk.topk_fp32 if exact_fn is None else exact_fn
    if _level == 0:
        _fallback_stats.clear()
    if x.shape[0] == 0 or y.shape[0] == 0 or int(k) == 0:  # nothing to rank
        return exact_fn(x, y, k, exclude_self, excl_indptr, excl_indices)
    x = x.contiguous()
    y = y.contiguous()
    xb = x.to(torch.bfloat16)
    yb = xb if y is x else y.to(torch.bfloat16)
    m = y.shape[0]
    c = candidate_count(int(k), m) if c is None else min(m, int(c))

    def cand_fn(x_, y_, c_, es, ip, ind):
        return candidates(x_, y_, c_, es, ip, ind, xb=xb, yb=yb)

    def fallback(x_, y_, k_, es, ip, ind):
        while len(_fallback_stats) <= _level:
            _fallback_stats.append(0)
        _fallback_stats[_level] += x_.shape[0]
        if retries > 0 and c < m:
            return topk(
                x_, y_, k_, es, ip, ind, exact_fn=exact_fn, c=4 * c, retries=retries - 1, _level=_level + 1
            )
        return exact_fn(x_, y_, k_, es, ip, ind)

    eps = error_bound(x, y, xb, yb)
    return rerank.topk_from_candidates(
        cand_fn,
        fallback,
        x,
        y,
        k,
        exclude_self,
        excl_indptr,
        excl_indices,
        c=c,
        eps=eps,
        bf16_output=True,
        rescore_fn=rescore,
    )
