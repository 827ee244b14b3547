"""Numba CPU backend of the top-k kernel (docs/ARCHITECTURE.md, docs/PERFORMANCE.md).

Work is cut into row tiles of ``TR`` rows (a function of the problem size only) processed in
parallel with ``prange``. For each row tile the columns of ``y`` are visited in tiles of ``TC``
columns, in increasing order:

1. one single-threaded BLAS GEMM writes the ``TR x TC`` score tile into a buffer that stays in
   the core's L2 cache (``np.dot`` on contiguous slices calls BLAS inside Numba);
2. disallowed entries (self, the row's exclusion list) are overwritten with -inf;
3. each row of the tile is first tested as a whole against the row's current k-th best
   score (one packed compare per score); only a row with a hit is scanned in chunks of
   ``CHUNK`` scores, where a chunk maximum that can beat the k-th score sends the chunk to
   an element-by-element walk inserting winners into the row's sorted k-list.

Expected inserts per row are about k·(1 + ln(M / k)), so almost all the work after the GEMM
is the one compare per score of step 3. The result does not depend on the thread count: every
score is produced by the same GEMM call on the same tile whatever thread runs it, and the
k-list comparison is a total order (score descending, then column ascending), so the kept
set is a function of the candidate set only.

BLAS must run single-threaded inside the parallel region (two threads each asking a 2-thread
OpenBLAS for a GEMM contend for the same pool); :func:`_blas_single_thread` pins it for the
duration of a call. ``topk_outer`` is the other plausible CPU structure (2-thread GEMMs
issued from Python, selection parallel in Numba); ``bench/compare_topk.py`` measures both.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numpy as np

# Numba's np.dot calls scipy's BLAS, which is otherwise loaded lazily at the first call, i.e.
# after _blas_single_thread has looked for BLAS libraries to pin: load it now.
import scipy.linalg.cython_blas  # noqa: F401
import torch
from numba import njit, prange

from .op import scaled_rows

__all__ = ["topk", "topk_fp32", "topk_outer", "tile_shape"]

CHUNK = 16  # scores per chunk-max test: one AVX-512 register of fp32


# ----------------------------------------------------------------------------- BLAS threads


def _find_openblas_setters():
    """ctypes handles to ``*_set_num_threads`` / ``*_get_num_threads`` of every OpenBLAS that
    numpy and scipy ship (Numba's ``np.dot`` calls scipy's). Used when threadpoolctl is
    absent."""
    import numpy

    roots = [os.path.dirname(numpy.__file__) + "/../numpy.libs"]
    try:
        import scipy

        roots.append(os.path.dirname(scipy.__file__) + "/../scipy.libs")
    except ImportError:  # pragma: no cover - scipy is a Numba BLAS prerequisite
        pass
    found = []
    for root in roots:
        for path in glob.glob(os.path.join(root, "*openblas*.so*")):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in ("scipy_openblas", "scipy_openblas64_", "openblas", "openblas64_"):
                try:
                    set_fn = getattr(lib, f"{prefix}_set_num_threads")
                    get_fn = getattr(lib, f"{prefix}_get_num_threads")
                except AttributeError:
                    continue
                set_fn.argtypes, get_fn.restype = [ctypes.c_int], ctypes.c_int
                found.append((set_fn, get_fn))
                break
    return found


_SETTERS = None


@contextlib.contextmanager
def _blas_single_thread():
    """Pin BLAS to one thread while a Numba parallel region issues GEMMs (restored after)."""
    global _SETTERS
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    if _SETTERS is None:
        _SETTERS = _find_openblas_setters()
    saved = [get_fn() for _, get_fn in _SETTERS]
    for set_fn, _ in _SETTERS:
        set_fn(1)
    try:
        yield
    finally:
        for (set_fn, _), n in zip(_SETTERS, saved):
            set_fn(n)


# ----------------------------------------------------------------------------- tiling


def tile_shape(n: int, m: int, d: int, itemsize: int) -> tuple[int, int]:
    """(rows, cols) of a score tile: a function of the problem size only (determinism).

    ~512 KiB of scores (half the 1 MiB L2 of this class of core). Tall tiles: every row
    tile re-packs each y tile inside BLAS, so more rows per tile amortise that packing over
    more scores; 512 x 256 (float32) was 1-6 % faster than the previous shapes (256 x 512 at
    d = 64, 256 x 256 at d = 384) in two runs; 512 x 512 and 1024 x 128 were within the
    run-to-run noise of it (docs/PERFORMANCE.md, "GEMM ceilings, and the tile shape"). Small
    N gets shorter row tiles so that both cores still find work.
    """
    tr = 512
    while tr > 16 and n < 8 * tr:
        tr //= 2
    tc = (512 * 1024 // itemsize) // tr
    if d > 512:  # keep the packed y panel (TC x d) at <= 512 KiB beside the tile
        tc //= 2
    tc = max(CHUNK, min(tc, 4096))
    return tr, tc


# ----------------------------------------------------------------------------- kernels


@njit(inline="always", cache=True)
def _better(s, j, ts, tj):
    # Total order: higher score first, then lower column. (-inf, -1) padding loses to all.
    return s > ts or (s == ts and j < tj)


@njit(inline="always", cache=True)
def _insert(vals, idxs, k, s, j):
    p = k - 1
    while p > 0 and _better(s, j, vals[p - 1], idxs[p - 1]):
        vals[p] = vals[p - 1]
        idxs[p] = idxs[p - 1]
        p -= 1
    vals[p] = s
    idxs[p] = j


@njit(fastmath={"nnan", "nsz"}, boundscheck=False, cache=True)
def _scan_row(row, nc, c0, vals, idxs, k):
    """Merge the scores ``row[:nc]`` (columns c0 ...) into the sorted k-list (vals, idxs)."""
    ts = vals[k - 1]
    tj = idxs[k - 1]
    # Row-wide test first: this count loop compiles to packed compares (about 0.1 ns per
    # score), and once the list has settled most rows of most tiles have no score that can
    # enter. The chunk-max walk below is a scalar max chain (~2 cycles per score), so it
    # only runs on rows with at least one hit.
    hits = 0
    for t in range(nc):
        hits += row[t] >= ts
    if hits == 0:
        return
    nfull = nc - nc % CHUNK
    for c in range(0, nfull, CHUNK):
        mx = row[c]
        for t in range(c + 1, c + CHUNK):
            v = row[t]
            mx = v if v > mx else mx
        if mx >= ts:  # >=: an equal score with a lower column than the k-th may still enter
            for t in range(c, c + CHUNK):
                s = row[t]
                j = c0 + t
                if _better(s, j, ts, tj):
                    _insert(vals, idxs, k, s, j)
                    ts = vals[k - 1]
                    tj = idxs[k - 1]
    for t in range(nfull, nc):
        s = row[t]
        j = c0 + t
        if _better(s, j, ts, tj):
            _insert(vals, idxs, k, s, j)
            ts = vals[k - 1]
            tj = idxs[k - 1]


@njit(boundscheck=False, cache=True)
def _sorted_exclusions(excl_indptr, excl_indices, r0, r1):
    """The exclusion lists of rows r0..r1, each sorted (input rows need not be), plus cursors."""
    a = excl_indptr[r0]
    b = excl_indptr[r1]
    buf = np.empty(b - a, dtype=np.int64)
    for t in range(b - a):
        buf[t] = excl_indices[a + t]
    ptr = np.empty(r1 - r0, dtype=np.int64)
    end = np.empty(r1 - r0, dtype=np.int64)
    for r in range(r1 - r0):
        lo = excl_indptr[r0 + r] - a
        hi = excl_indptr[r0 + r + 1] - a
        if hi - lo > 1:
            buf[lo:hi] = np.sort(buf[lo:hi])
        ptr[r] = lo
        end[r] = hi
    return buf, ptr, end


@njit(boundscheck=False, cache=True)
def _mask_tile(tile, nr, r0, c0, c1, exclude_self, has_excl, buf, ptr, end):
    """-inf on the disallowed entries of a tile: self (by index) and the exclusion lists.
    ``ptr`` advances through each row's sorted list as column tiles go left to right."""
    ninf = -np.inf
    if exclude_self:
        for r in range(nr):
            i = r0 + r
            if c0 <= i < c1:
                tile[r, i - c0] = ninf
    if has_excl:
        for r in range(nr):
            p = ptr[r]
            e = end[r]
            while p < e and buf[p] < c1:
                tile[r, buf[p] - c0] = ninf  # buf[p] >= c0: earlier tiles consumed the rest
                p += 1
            ptr[r] = p


@njit(parallel=True, boundscheck=False, cache=True)
def _topk_fused(
    x, y, k, exclude_self, has_excl, excl_indptr, excl_indices, tr, tc, out_idx, out_val, scaled, inv_x, inv_y
):
    """Scores <x[i], y[j]>, times ``inv_x[i] * inv_y[j]`` when ``scaled`` (cosine from the raw
    rows: the tile is scaled after its GEMM, while it is in cache, so no normalised copy of x
    or y is ever made)."""
    n = x.shape[0]
    m = y.shape[0]
    n_tiles = (n + tr - 1) // tr
    for rt in prange(n_tiles):
        r0 = rt * tr
        r1 = min(n, r0 + tr)
        nr = r1 - r0
        xb = x[r0:r1]
        space = np.empty(tr * tc, dtype=x.dtype)
        if has_excl:
            buf, ptr, end = _sorted_exclusions(excl_indptr, excl_indices, r0, r1)
        else:
            buf = np.empty(0, dtype=np.int64)
            ptr = np.empty(0, dtype=np.int64)
            end = np.empty(0, dtype=np.int64)
        vals = out_val[r0:r1]
        idxs = out_idx[r0:r1]
        for c0 in range(0, m, tc):
            c1 = min(m, c0 + tc)
            nc = c1 - c0
            tile = space[: nr * nc].reshape((nr, nc))
            np.dot(xb, y[c0:c1].T, tile)
            if scaled:
                for r in range(nr):
                    a = inv_x[r0 + r]
                    for t in range(nc):
                        tile[r, t] *= a * inv_y[c0 + t]
            _mask_tile(tile, nr, r0, c0, c1, exclude_self, has_excl, buf, ptr, end)
            for r in range(nr):
                _scan_row(tile[r], nc, c0, vals[r], idxs[r], k)


@njit(parallel=True, boundscheck=False, cache=True)
def _select_block(tile, r0, c0, k, exclude_self, has_excl, buf, ptr, end, n_sub, out_idx, out_val):
    """Selection over a precomputed (nr, nc) score block, rows split into n_sub fixed parts."""
    nr, nc = tile.shape
    c1 = c0 + nc
    step = (nr + n_sub - 1) // n_sub
    for part in prange(n_sub):
        a = part * step
        b = min(nr, a + step)
        ninf = -np.inf
        for r in range(a, b):
            i = r0 + r
            row = tile[r]
            if exclude_self and c0 <= i < c1:
                row[i - c0] = ninf
            if has_excl:
                p = ptr[r]
                e = end[r]
                while p < e and buf[p] < c1:
                    row[buf[p] - c0] = ninf
                    p += 1
                ptr[r] = p
            _scan_row(row, nc, c0, out_val[i], out_idx[i], k)


# ----------------------------------------------------------------------------- entry points


def _prepare(x, y, k):
    n, m = x.shape[0], y.shape[0]
    xn = x.detach().cpu().contiguous().numpy()
    yn = y.detach().cpu().contiguous().numpy()
    out_idx = np.full((n, k), -1, dtype=np.int64)
    out_val = np.full((n, k), -np.inf, dtype=xn.dtype)
    return n, m, xn, yn, out_idx, out_val


def _excl_arrays(excl_indptr, excl_indices):
    if excl_indptr is None:
        return False, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # One index dtype for the kernels: halves the JIT signatures (compile time) for a copy of
    # the exclusion list that is tiny beside the GEMM.
    return True, excl_indptr.cpu().numpy(), excl_indices.cpu().numpy().astype(np.int64)


#: This backend takes cosine's row norms instead of normalised rows (``topk(..., x_norm=,
#: y_norm=)``); the op layer passes them only to a backend that says so.
SCALED_COSINE = True


def topk(x, y, k, exclude_self, excl_indptr, excl_indices, x_norm=None, y_norm=None):
    """The backend entry: :func:`topk_fp32`, or on a bf16-capable CPU for large float32 calls
    the exact bf16-candidate path of topk/bf16.py (same result; ``SLIFMR_TOPK_BF16=0/1``
    forces it off / on, see ``bf16.enabled``).

    ``x_norm`` / ``y_norm`` (cosine, passed by the op layer): the rows' L2 norms, clamped as
    ``normalize_rows`` clamps them; x and y are then the raw rows. The fp32 kernel scales each
    score tile by the inverse norms; the bf16 path, which certifies its candidates from the
    rows it ranks, gets normalised copies, as the other backends do."""
    if x_norm is not None and k and bf16.enabled(x, y, int(k), check_range=False):
        x, y = scaled_rows(x, y, x_norm, y_norm)
        x_norm = y_norm = None
    if x_norm is None and k and bf16.enabled(x, y, int(k)):
        return bf16.topk(x, y, k, exclude_self, excl_indptr, excl_indices, exact_fn=topk_fp32)
    return topk_fp32(x, y, k, exclude_self, excl_indptr, excl_indices, x_norm, y_norm)


def topk_fp32(x, y, k, exclude_self, excl_indptr, excl_indices, x_norm=None, y_norm=None):
    """The k largest <x[i], y[j]> of every row, over the allowed j (backend contract).

    Args:
        x: (N, d) float32/float64 contiguous CPU tensor; y: (M, d) of the same dtype.
        k: 0 <= k <= M.
        exclude_self: disallow j == i.
        excl_indptr: (N + 1,) int64 or None; excl_indices: (nnz,) int32/int64, the columns
            row i may not return (rows need not be sorted; duplicates are harmless).
        x_norm, y_norm: optional (N,) / (M,) positive row norms (both or neither): the scores
            are then <x[i], y[j]> * (1 / x_norm[i]) * (1 / y_norm[j]) (cosine without
            normalised copies of the rows; equal to the normalised rows' scores to rounding).

    Returns:
        (idx, val): (N, k) int64 and (N, k) x.dtype, sorted by score descending with ties by
        lower column; idx = -1 / val = -inf where fewer than k candidates are allowed.
        Bitwise identical for any Numba thread count.
    """
    n, m, xn, yn, out_idx, out_val = _prepare(x, y, k)
    if n and m and k:
        has_excl, ip, ind = _excl_arrays(excl_indptr, excl_indices)
        tr, tc = tile_shape(n, m, xn.shape[1], xn.itemsize)
        scaled = x_norm is not None
        if scaled:
            inv_x = (1.0 / x_norm.detach().cpu().to(x.dtype)).contiguous().numpy()
            inv_y = (
                inv_x if y_norm is x_norm else (1.0 / y_norm.detach().cpu().to(x.dtype)).contiguous().numpy()
            )
        else:
            inv_x = inv_y = np.empty(0, dtype=xn.dtype)
        with _blas_single_thread():
            _topk_fused(
                xn,
                yn,
                k,
                bool(exclude_self),
                has_excl,
                ip,
                ind,
                tr,
                tc,
                out_idx,
                out_val,
                scaled,
                inv_x,
                inv_y,
            )
    return torch.from_numpy(out_idx), torch.from_numpy(out_val)


def topk_outer(x, y, k, exclude_self, excl_indptr, excl_indices, rows=4096, cols=4096):
    """Same contract as :func:`topk`, other structure: (rows x cols) score blocks from one
    multi-threaded ``torch.mm`` each, then a parallel Numba selection over the block.
    Kept for the comparison in bench/compare_topk.py (the fused :func:`topk` is faster on
    this machine: the big blocks leave L2, so selection reads them back from DRAM)."""
    n, m, xn, yn, out_idx, out_val = _prepare(x, y, k)
    if not (n and m and k):
        return torch.from_numpy(out_idx), torch.from_numpy(out_val)
    has_excl, ip, ind = _excl_arrays(excl_indptr, excl_indices)
    xt, yt = torch.from_numpy(xn), torch.from_numpy(yn)
    block = torch.empty(rows, cols, dtype=xt.dtype)
    n_sub = 2 * 8  # fixed split of a block's rows: independent of the thread count
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        if has_excl:
            buf, ptr, end = _sorted_exclusions(ip, ind, r0, r1)
        else:
            buf = ptr = end = np.empty(0, dtype=np.int64)
        for c0 in range(0, m, cols):
            c1 = min(m, c0 + cols)
            tile = block.view(-1)[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
            torch.mm(xt[r0:r1], yt[c0:c1].T, out=tile)
            _select_block(
                tile.numpy(), r0, c0, k, bool(exclude_self), has_excl, buf, ptr, end, n_sub, out_idx, out_val
            )
    return torch.from_numpy(out_idx), torch.from_numpy(out_val)


# Imported here, at the end (it uses the helpers above), rather than at its first use: the
# backend is loaded with Numba's cache pointed at the user cache directory
# (backends.numba_cache_dir), and the bf16 kernels must compile into that cache too.
from . import bf16  # noqa: E402
