"""Exact top-k from tensor-core candidates: re-score in fp32, certify each row, fall back.

The GPU backends score tiles fastest with TF32 tensor cores, but TF32 keeps 10 mantissa bits,
so its scores can reorder near-ties and would not give the exact top-k. They therefore run in
two steps, both written once here for every backend:

1. **Candidates.** The backend's fused kernel, in TF32 mode, keeps the ``C > k`` best columns
   of each row by approximate score ``s~`` (exclusions applied), sorted, ``C - 1``-th last.
2. **Re-rank.** The candidates are re-scored in fp32 (plain multiply-adds, no tensor cores),
   sorted by (score desc, index asc), and the first k kept. The result of a row is provably the
   exact top-k when

       s~[C - 1] + eps_i  <  e_k                      (the row's certificate)

   where ``e_k`` is the k-th re-scored candidate and ``eps_i`` bounds |s~ - s| for row i: any
   column j outside the candidates has ``s~_j <= s~[C - 1]``, hence ``s_j < e_k``. A row whose
   candidate list is not full holds every allowed column and needs no certificate.
   Rows that fail (near-ties around the k-th score, duplicates, NaN) are recomputed by the
   backend's exact fp32 kernel, so the answer never depends on TF32 rounding.

Error bound: rounding both operands to TF32 changes each product by at most
``2^-9 |x_t y_t|`` (truncation, the worst case; round-to-nearest is half that) and the fp32
sums add at most ``d 2^-23 sum |x_t y_t|`` in either pass, so with Cauchy-Schwarz
``eps_i = (2^-9 + 2^-20 + 2 d 2^-23) |x_i| max_j |y_j|``.

Memory: the candidates (N x C) plus one chunk of gathered rows (``CHUNK_ELEMS`` floats).
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "topk_from_candidates",
    "candidate_count",
    "tf32_enabled",
    "last_fallback_rows",
    "subset_exclusions",
]

#: Floats of gathered candidate rows re-scored at once (256 MiB of float32).
CHUNK_ELEMS = 1 << 26

_last_fallback = [0]


def tf32_enabled(x: torch.Tensor, default: bool) -> bool:
    """Whether a GPU backend scores ``x`` with TF32 candidates + re-rank: float32 inputs only;
    ``SLIFMR_TOPK_TF32=1`` / ``=0`` forces it on / off, else the backend's measured
    ``default`` for the call (docs/GPU.md says which is faster where)."""
    if x.dtype != torch.float32:
        return False
    env = os.environ.get("SLIFMR_TOPK_TF32", "")
    return default if env == "" else env != "0"


def last_fallback_rows() -> int:
    """Rows of the last :func:`topk_from_candidates` call that failed their certificate and
    were recomputed exactly (diagnostics for benchmarks)."""
    return _last_fallback[0]


def candidate_count(k: int, m: int) -> int:
    """C = how many approximate candidates per row to keep for an exact top-k of k: the
    smallest power of two >= 1.5 k (the kernels' lists have power-of-two slots anyway), at most
    M. A larger C makes certificates fail less often but costs list merges on every row."""
    return min(m, 1 << max(1, (k + (k + 1) // 2 - 1).bit_length()))


def error_bound(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """eps_i [N] (dtype of x): bound on |TF32 score - exact score| over the columns of row i."""
    d = x.shape[1]
    rel = 2.0**-9 + 2.0**-20 + 2 * d * 2.0**-23
    ymax = y.norm(dim=1).max() if y.shape[0] else y.new_zeros(())
    return rel * x.norm(dim=1) * ymax


def subset_exclusions(rows: torch.Tensor, excl_indptr, excl_indices, add_self: bool):
    """Exclusion CSR of the sub-problem x[rows] vs y: row r's original list (if any), plus the
    global id ``rows[r]`` itself when ``add_self`` (self exclusion is by global row id, which a
    sub-problem no longer knows). Returns (indptr int64 [len(rows) + 1], indices int64), or
    (None, None) when nothing is excluded."""
    dev = rows.device
    n_sub = rows.numel()
    if excl_indptr is None and not add_self:
        return None, None
    if excl_indptr is not None:
        start = excl_indptr[rows]
        lens = excl_indptr[rows + 1] - start
    else:
        start = lens = torch.zeros(n_sub, dtype=torch.int64, device=dev)
    tot = lens + int(add_self)
    ptr = torch.zeros(n_sub + 1, dtype=torch.int64, device=dev)
    torch.cumsum(tot, 0, out=ptr[1:])
    out = torch.empty(int(ptr[-1]), dtype=torch.int64, device=dev)
    n_old = int(lens.sum())
    if n_old:
        owner = torch.repeat_interleave(torch.arange(n_sub, device=dev), lens, output_size=n_old)
        first = torch.cumsum(lens, 0) - lens
        within = torch.arange(n_old, device=dev) - first[owner]
        out[ptr[:-1][owner] + within] = excl_indices[start[owner] + within].to(torch.int64)
    if add_self:
        out[ptr[1:] - 1] = rows
    return ptr, out


def _rerank_chunk(x, y, cand_i, k, rescore_fn=None):
    """Exact fp32 re-score of the candidates of a chunk of rows; returns the first k by
    (score desc, index asc): (idx int64 [B, k] with -1 padding, val [B, k] with -inf).
    ``rescore_fn(x, y, cand_i) -> s [B, C]`` (-inf where cand_i < 0) replaces the gather +
    multiply-add (the CPU path passes a Numba kernel: torch's gather of [B, C, d] rows was
    most of the time there)."""
    valid = cand_i >= 0
    if rescore_fn is not None:
        s = rescore_fn(x, y, cand_i)
    else:
        yc = y[cand_i.clamp_min(0)]  # [B, C, d]
        # multiply-add on the CUDA cores in the input precision (a bmm could run on TF32)
        s = (yc * x[:, None, :]).sum(dim=2).masked_fill(~valid, float("-inf"))
    key = torch.where(valid, cand_i, torch.iinfo(torch.int64).max)
    order = torch.argsort(key, dim=1, stable=True)  # index asc, then a stable score sort
    s, key = s.gather(1, order), key.gather(1, order)
    s, order = torch.sort(s, dim=1, descending=True, stable=True)
    key = key.gather(1, order)
    val = s[:, :k]
    idx = torch.where(val == float("-inf"), -1, key[:, :k])
    return idx, val


def topk_from_candidates(
    candidates_fn,
    exact_fn,
    x,
    y,
    k,
    exclude_self,
    excl_indptr,
    excl_indices,
    c=None,
    eps=None,
    bf16_output=False,
    rescore_fn=None,
):
    """Exact top-k (the backend contract of ``topk``) through approximate candidates.

    candidates_fn(x, y, c, exclude_self, excl_indptr, excl_indices) -> (idx, val): the c best
    columns per row by approximate score, sorted, padded with (-1, -inf), error within
    :func:`error_bound`. exact_fn: the same signature, exact (the fallback).
    Returns idx int64 [N, k], val [N, k] (dtype of x), sorted (score desc, index asc).

    ``c`` (default :func:`candidate_count`) and ``eps`` [N] (default :func:`error_bound`, the
    TF32 bound) let other candidate generators reuse the certificate (topk/bf16.py);
    ``bf16_output``: the candidate scores were rounded to bf16 after accumulation, so the
    last candidate's score is widened by half its bf16 spacing (<= 2^-8 |s| + 2^-120);
    ``rescore_fn``: see :func:`_rerank_chunk`.
    """
    n, d = x.shape
    m = y.shape[0]
    k = int(k)
    if n == 0 or m == 0 or k == 0:  # nothing to rank: the exact kernel's padding rules
        _last_fallback[0] = 0
        return exact_fn(x, y, k, exclude_self, excl_indptr, excl_indices)
    c = candidate_count(k, m) if c is None else min(int(c), m)
    cand_i, cand_v = candidates_fn(x, y, c, exclude_self, excl_indptr, excl_indices)
    eps = error_bound(x, y) if eps is None else eps
    idx = torch.empty((n, k), dtype=torch.int64, device=x.device)
    val = torch.empty((n, k), dtype=x.dtype, device=x.device)
    ok = torch.empty(n, dtype=torch.bool, device=x.device)
    step = max(1, CHUNK_ELEMS // max(1, c * d))
    for a in range(0, n, step):
        b = min(n, a + step)
        ci = cand_i[a:b]
        ii, vv = _rerank_chunk(x[a:b], y, ci, k, rescore_fn)
        idx[a:b], val[a:b] = ii, vv
        # complete: every allowed column is a candidate (the list is not full, or C = M)
        complete = (ci[:, -1] < 0) | (c >= m)
        last = cand_v[a:b, -1]
        if bf16_output:
            last = last + last.abs() * (2.0**-8 + 2.0**-20) + 2.0**-120
        ok[a:b] = complete | (last + eps[a:b] < vv[:, -1])
    bad = torch.nonzero(~ok).flatten()
    _last_fallback[0] = int(bad.numel())
    if bad.numel():
        sub_ptr, sub_idx = subset_exclusions(bad, excl_indptr, excl_indices, bool(exclude_self))
        bi, bv = exact_fn(x[bad], y, k, False, sub_ptr, sub_idx)
        idx[bad], val[bad] = bi, bv
    return idx, val
