"""Batched top-k similarity: one op behind kNN graphs, masked full ranking and serving.

For every row of X (N, d) the k most similar rows of Y (M, d) by inner product or cosine,
optionally excluding the row itself (by index) and a per-row exclusion list (a CSR graph),
sorted by score with ties broken by the lower index, in memory O(N·k + block) — never N×M.
Not differentiable: the outputs are indices and detached scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_bool, check_choice, check_finite, check_float, check_int, check_same_device
from .._library import define_op
from ..backends import load, resolve
from ..errors import InputError, InputTypeError
from ..graph import CSRGraph

__all__ = ["topk_similarity", "knn_graph", "topk_scores", "normalize_rows", "topk_as_graph"]


#: Automatic backend order of a CUDA similarity join (no exclusion lists).
_CUDA_JOIN_ORDER = ("triton", "cuda", "torch")

_METRICS = ("cosine", "ip")

#: k may exceed the candidate count M (the extra columns are padding: idx -1, val -inf) by at
#: most max(M, MAX_PAD): a larger k would only allocate padding (topk_similarity(x, 2**31)
#: asked for 120 GB of it).
MAX_PAD = 1024


def check_k(k, m: int) -> int:
    """k as an int in [0, M + max(M, MAX_PAD)]."""
    k = check_int("k", k, 0)
    if k > m + max(m, MAX_PAD):
        raise InputError(
            f"k = {k} exceeds the M = {m} candidates by more than max(M, "
            f"{MAX_PAD}): the (N, k) result would be almost all padding "
            f"(idx -1, val -inf); pass k <= {m + max(m, MAX_PAD)} (k = min(k, M) "
            f"returns every candidate)"
        )
    return k


def _topk_kernel(
    x: Tensor,
    y: Tensor,
    k: int,
    exclude_self: bool,
    excl_indptr: Tensor | None,
    excl_indices: Tensor | None,
    backend: str,
    x_norm: Tensor | None = None,
    y_norm: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``x_norm`` / ``y_norm`` (cosine only): the rows' clamped L2 norms, x and y being the raw
    rows. A backend with ``SCALED_COSINE`` takes them as they are; any other gets the rows
    divided by them here, which is exactly what ``normalize_rows`` computes."""
    mod = load("topk", backend)
    if x_norm is None:
        return mod.topk(x, y, k, exclude_self, excl_indptr, excl_indices)
    if getattr(mod, "SCALED_COSINE", False):
        return mod.topk(x, y, k, exclude_self, excl_indptr, excl_indices, x_norm=x_norm, y_norm=y_norm)
    xs, ys = scaled_rows(x, y, x_norm, y_norm)
    return mod.topk(xs, ys, k, exclude_self, excl_indptr, excl_indices)


def scaled_rows(x: Tensor, y: Tensor, x_norm: Tensor, y_norm: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x / x_norm, y / y_norm) row-wise: the normalised copies a backend without
    ``SCALED_COSINE`` ranks; one copy when ``y is x`` (its norms are then x_norm)."""
    xs = x / x_norm[:, None]
    if y is x:
        return xs, xs
    assert y_norm is not None  # passed with x_norm
    return xs, y / y_norm[:, None]


def _topk_fake(x, y, k, exclude_self, excl_indptr, excl_indices, backend, x_norm=None, y_norm=None):
    n = x.shape[0]
    return x.new_empty(n, k, dtype=torch.int64), x.new_empty(n, k)


_topk_op = define_op("topk", _topk_kernel, _topk_fake)


#: Cosine scores are computed from the raw rows and their norms (no normalised copy) only
#: while every clamped row norm is at most this: x.y then stays far from overflow (and from
#: underflow, the norms being clamped at 1e-12 from below) in float32 as in float64.
_SCALED_NORM_MAX = 2.0**40


def _scaling_norms(x: Tensor, eps: float = 1e-12) -> Tensor | None:
    """The rows' L2 norms clamped at ``eps`` (the divisors of :func:`normalize_rows`), or None
    where some norm exceeds ``_SCALED_NORM_MAX`` (then the rows are normalised by copy)."""
    nrm = x.norm(dim=1).clamp_min(eps)
    if nrm.numel() and not bool(nrm.max() <= _SCALED_NORM_MAX):  # also catches inf
        return None
    return nrm


def normalize_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows scaled to unit L2 norm; zero rows stay zero (the norm is clamped by ``eps``).

    A row whose norm overflows (float32 entries beyond ~1e19) is first divided by its largest
    magnitude, so it still comes out as a unit vector instead of zeros. ``x``: (N, d) float32 /
    float64."""
    check_float("x", x, ndim=2)
    nrm = x.norm(dim=1, keepdim=True)
    if nrm.numel() and not torch.compiler.is_compiling() and bool(torch.isinf(nrm).any()):
        big = torch.isinf(nrm)
        x = torch.where(big, x / x.abs().amax(1, keepdim=True).clamp_min(eps), x)
        nrm = x.norm(dim=1, keepdim=True)
    return x / nrm.clamp_min(eps)


def _check_exclude(exclude, n: int, m: int, device) -> tuple[Tensor | None, Tensor | None]:
    if exclude is None:
        return None, None
    if not isinstance(exclude, CSRGraph):
        raise InputTypeError(
            f"exclude must be a CSRGraph of (row, column) pairs, got {type(exclude).__name__}"
        )
    if exclude.shape != (n, m):
        raise InputError(f"exclude must have shape (N, M) = ({n}, {m}), got {exclude.shape}")
    if exclude.device != torch.device(device):
        raise InputError(f"exclude is on {exclude.device} but x is on {device}")
    if not torch.compiler.is_compiling():
        exclude.ensure_valid()
    return exclude.indptr, exclude.indices


def topk_similarity(
    x: Tensor,
    k: int,
    y: Tensor | None = None,
    metric: str = "cosine",
    exclude_self: bool | None = None,
    exclude: CSRGraph | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """The k most similar rows of ``y`` (default: ``x`` itself) for every row of ``x``.

    Args:
        x: (N, d) float32/float64 queries.
        k: number of neighbours, an int >= 0; k larger than the candidate count M is padded
            (at most max(M, 1024) padding columns: a larger k raises InputError).
        y: (M, d) candidates of x's dtype; None means x (a self-join).
        metric: "cosine" (scores of the L2-normalised rows; zero rows score 0) or "ip" (inner
            product). For cosine the numba backend divides each score by the two row norms
            (equal to the normalised rows' score to rounding) instead of normalising copies of
            x and y first, so it needs no (N, d) or (M, d) copy (rows with norms above 2^40,
            and the bf16 path, still use normalised copies).
        exclude_self: skip j == i; default True for a self-join, False otherwise.
        exclude: optional CSRGraph (N, M) whose (i, j) pairs may not be returned.
        backend: "auto", "torch", "numba", "triton" or "cuda".

    Returns:
        (idx, val): (N, k) int64 indices and (N, k) scores (x's dtype), sorted by score
        descending, ties by lower index. Missing entries (fewer than k candidates) are
        idx = -1, val = -inf. Not differentiable (inputs are detached).

    Raises:
        InputError (TypeError / IndexError variants) naming the argument: NaN or inf in x or
        y, a wrong dtype (only float32 / float64), shape or device, a bad k, metric or
        exclusion graph; BackendUnavailable for a named backend that cannot run here.

    Ties: equal scores are ordered by the lower index on every backend (see below).
    On CPU, ``backend="auto"`` / ``"numba"`` score large float32 calls with bf16 candidates, an
    fp32 re-rank and a per-row certificate (slifmr_kernels/topk/bf16.py): same result as fp32.

    >>> import torch, slifmr_kernels as sk
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> sk.topk_similarity(x, 1, backend="torch")[0].tolist()
    [[1], [0], [1]]
    """
    check_float("x", x, ndim=2)
    check_choice("metric", metric, _METRICS)
    if exclude_self is not None:
        exclude_self = check_bool("exclude_self", exclude_self)
    self_join = y is None
    if y is None:
        y = x
    else:
        check_float("y", y, ndim=2)
        if y.shape[1] != x.shape[1]:
            raise InputError(f"y must have x's dimension d = {x.shape[1]}, got {y.shape[1]}")
        if y.dtype != x.dtype:
            raise InputTypeError(f"y must have x's dtype {x.dtype}, got {y.dtype}")
    k = check_k(k, y.shape[0])
    check_same_device(x=x, y=y)
    if exclude_self is None:
        exclude_self = self_join
    x, y = x.detach(), y.detach()
    check_finite("x", x)
    if not self_join:
        check_finite("y", y)
    n, m = x.shape[0], y.shape[0]
    excl_indptr, excl_indices = _check_exclude(exclude, n, m, x.device)
    # On CUDA, similarity joins (no exclusion lists) are fastest on the triton backend's TF32
    # path and ranking with exclusion lists on the cuda backend (docs/GPU.md, measured on an
    # H200), so the automatic order depends on the call.
    order = _CUDA_JOIN_ORDER if x.device.type == "cuda" and excl_indptr is None else None
    name = resolve("topk", backend, x.device, order=order)
    x_norm = y_norm = None
    if metric == "cosine":
        if (
            name == "numba"
            and not torch.compiler.is_compiling()
            and getattr(load("topk", name), "SCALED_COSINE", False)
        ):
            # The kernel divides the scores by the row norms: no normalised (N, d) copy of x
            # (and y). Out-of-range norms (or, while tracing, the data-dependent test
            # itself) fall back to the copies.
            x_norm = _scaling_norms(x)
            y_norm = x_norm if self_join else _scaling_norms(y)
            if x_norm is None or y_norm is None:
                x_norm = y_norm = None
        if x_norm is None:
            x = normalize_rows(x)
            y = x if self_join else normalize_rows(y)
    kk = min(k, m)
    x = x.contiguous()
    y = x if self_join else y.contiguous()
    idx, val = _topk_op(x, y, kk, bool(exclude_self), excl_indptr, excl_indices, name, x_norm, y_norm)
    if kk < k:  # more neighbours asked for than there are candidates: pad
        idx = torch.cat([idx, idx.new_full((n, k - kk), -1)], 1)
        val = torch.cat([val, val.new_full((n, k - kk), float("-inf"))], 1)
    return idx, val


def topk_as_graph(idx: Tensor, val: Tensor, n_cols: int) -> CSRGraph:
    """A CSRGraph (N, n_cols) with one edge i -> idx[i, t] of weight val[i, t] per valid
    (idx >= 0) entry of a top-k result (``idx`` (N, k) int64, ``val`` (N, k)); columns sorted
    per row; values float32 (the graph containers' value dtype)."""
    n, k = idx.shape
    valid = idx >= 0
    counts = valid.sum(1)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=idx.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    # Rows come sorted by score; the container wants them sorted by column.
    key = torch.where(valid, idx, torch.full_like(idx, n_cols))
    order = torch.sort(key, dim=1, stable=True).indices
    idx_s = torch.gather(idx, 1, order)
    val_s = torch.gather(val, 1, order)
    keep = torch.gather(valid, 1, order)
    indices = idx_s[keep].to(torch.int32 if n_cols < 2**31 else torch.int64)
    return CSRGraph._trusted(indptr, indices, val_s[keep].to(torch.float32), (n, n_cols))


def knn_graph(
    x: Tensor,
    k: int,
    metric: str = "cosine",
    exclude: CSRGraph | None = None,
    backend: str = "auto",
    exclude_self: bool = True,
    method: str = "exact",
    seed: int = 0,
) -> CSRGraph:
    """k-nearest-neighbour graph of the rows of ``x`` (self excluded by default): exact, or
    approximate with ``method="approx"``.

    Args:
        x: (N, d) float32/float64.
        k: neighbours per row, an int >= 0 (k is clamped to the N - 1 other rows, N with
            ``exclude_self=False``, so any k is accepted).
        metric: "cosine" or "ip".
        exclude: optional CSRGraph (N, N) of pairs that may not become edges.
        exclude_self: False keeps each row among its own candidates (FREEDOM / LATTICE build
            their item graphs that way: with cosine the row itself is its first neighbour).
        method: "exact" (the top-k join, O(N² d)) or "approx": random-projection block
            candidates refined by NN-descent (slifmr_kernels/topk/approx.py), for large N
            with no previous graph; recall is measured, not guaranteed (docs/PERFORMANCE.md);
            ``exclude`` is not supported there.
        seed: int seed of the "approx" sampling (same inputs + seed -> same graph).

    Returns:
        CSRGraph (N, N) with up to k edges per row, columns sorted. Values = similarity, always
        float32 (the graph containers' value dtype), also for float64 ``x``: the neighbour
        *selection* is made in x's precision, only the stored weights are rounded. Not
        symmetric: symmetrise and normalise with ``.symmetrize().normalize()``.

    Ties: equal scores are ordered by the lower index, on every backend and thread count
    (the reference is a *stable* descending sort). ``torch.topk`` makes no such promise (its
    order among equal values is unspecified and differs between CPU and CUDA), so code ported
    from ``torch.topk(x @ y.T, k)`` can differ from these ops exactly where scores tie —
    duplicate rows, zero rows, integer-valued embeddings.

    >>> import torch, slifmr_kernels as sk
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> sk.knn_graph(x, 1, backend="torch", exclude_self=False).indices.tolist()
    [0, 1, 2]
    """
    check_float("x", x, ndim=2)
    exclude_self = check_bool("exclude_self", exclude_self)
    check_choice("method", method, ("exact", "approx"))
    k = min(check_int("k", k, 0), max(x.shape[0] - int(exclude_self), 0))
    if method == "approx":
        check_choice("metric", metric, _METRICS)
        if exclude is not None:
            raise InputError('exclude is not supported with method="approx"')
        seed = check_int("seed", seed, 0)
        check_finite("x", x)
        from .approx import knn_graph_approx

        return knn_graph_approx(
            x.detach(), k, metric=metric, exclude_self=exclude_self, seed=seed, backend=backend
        )
    idx, val = topk_similarity(
        x, k, metric=metric, exclude_self=exclude_self, exclude=exclude, backend=backend
    )
    return topk_as_graph(idx, val, x.shape[0])


def topk_scores(
    user_emb: Tensor, item_emb: Tensor, k: int, exclude: CSRGraph | None = None, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Full-ranking recommendation: the k best items per user by inner product.

    Args:
        user_emb: (U, d) float32/float64.
        item_emb: (I, d) of the same dtype.
        k: items per user, an int >= 0; more than the I items pads (at most max(I, 1024)
            padding columns).
        exclude: optional CSRGraph (U, I): each user's training (and validation) items, never
            returned.

    Returns:
        (idx, val): (U, k) int64 item ids and (U, k) scores, best first, ties by lower item id;
        -1 / -inf where a user has fewer than k candidate items.

    Ties: equal scores are ordered by the lower index, on every backend and thread count
    (the reference is a *stable* descending sort). ``torch.topk`` makes no such promise (its
    order among equal values is unspecified and differs between CPU and CUDA), so code ported
    from ``torch.topk(x @ y.T, k)`` can differ from these ops exactly where scores tie —
    duplicate rows, zero rows, integer-valued embeddings.
    """
    return topk_similarity(
        user_emb, k, y=item_emb, metric="ip", exclude_self=False, exclude=exclude, backend=backend
    )
