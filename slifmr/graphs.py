"""The graphs SLIF-MR propagates over, and the per-epoch feedback insertion.

Static parts (built once): the user-item interactions R, the modality kNN graphs kNN_k(F_m),
the KG triples (with inverse relations). Per epoch, :meth:`GraphBuilder.build` takes the
feedback graph S(t) = kNN_k(H(t-1)) over the previous epoch's item representations and returns

* ``adj``      A(t)   (U+I) x (U+I): sym-normalised [[0, R], [R^T, gamma * S(t)]]
* ``modality`` A_m(t) I x I per modality: (1 - beta) * kNN_k(F_m) + beta * S(t)
* ``kg``       KG(t)  E x E with relation ids: triples h -> t (relation r), inverses t -> h
  (relation r + R_kg) and the feedback relation r_fb = 2 R_kg: i -> j for j in kNN_k(H)(i),
  weight = similarity; each row normalised to sum 1 (mean aggregation over the neighbours,
  feedback edges weighted by similarity).
* ``user_item`` R~     U x I row-normalised R (users read item-side views through it)

Assembly is linear in the number of edges (scipy CSR addition, counting-sort CSR construction):
no dense N x N matrix and no Python loop over nodes, so it scales to millions of items.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import scipy.sparse as sp
import torch

import slifmr_kernels as sk

from .data import Dataset

__all__ = [
    "Graphs",
    "GraphBuilder",
    "sym_normalize",
    "row_normalize",
    "to_csr_graph",
    "knn_scipy",
    "feedback_knn",
    "bucket_knn",
    "approx_knn_scipy",
    "DEFAULT_KNN_EXACT_MAX",
]

# Up to this many items a kNN graph is computed exactly (O(N^2 d), seconds at 20k); above,
# bucketed kNN + knn_refine (O(N d)) (see GraphBuilder's ``knn_exact_max``).
DEFAULT_KNN_EXACT_MAX = 20000


def _row_ids(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def sym_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    """D_r^{-1/2} M D_c^{-1/2} (row/column sums of the values); zero-degree nodes stay zero."""
    m = m.tocsr()
    rs = np.asarray(m.sum(1)).ravel()
    cs = np.asarray(m.sum(0)).ravel()
    with np.errstate(divide="ignore"):
        ir = np.where(rs > 0, 1.0 / np.sqrt(np.maximum(rs, 1e-30)), 0.0)
        ic = np.where(cs > 0, 1.0 / np.sqrt(np.maximum(cs, 1e-30)), 0.0)
    out = m.copy()
    out.data = (m.data * ir[_row_ids(m)] * ic[m.indices]).astype(np.float32)
    return out


def row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    """D_r^{-1} M; empty rows stay empty."""
    m = m.tocsr()
    rs = np.asarray(m.sum(1)).ravel()
    inv = np.where(rs > 0, 1.0 / np.maximum(rs, 1e-30), 0.0)
    out = m.copy()
    out.data = (m.data * inv[_row_ids(m)]).astype(np.float32)
    return out


def to_csr_graph(m: sp.csr_matrix, device="cpu", symmetric: bool = False) -> sk.CSRGraph:
    """scipy CSR -> CSRGraph without re-sorting (duplicates summed, columns sorted in place).

    ``symmetric=True`` declares ``m == m.T`` (a symmetrised, sym-normalised graph, equal to its
    transpose up to float32 rounding): the graph then serves as its own transpose in the
    backward pass, instead of a cached transposed copy (16 B per edge: at a million items the
    copies of A(t) and the A_m(t) cost 2 GiB). Only for graphs without relation ids.
    """
    m = m.tocsr()
    m.sum_duplicates()  # also sorts the column indices of every row
    idx_dtype = torch.int32 if m.shape[1] < 2**31 else torch.int64
    g = sk.CSRGraph(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices).to(idx_dtype),
        torch.from_numpy(m.data.astype(np.float32, copy=False)),
        shape=m.shape,
        validate=False,
    )
    g = g.to(device) if str(device) != "cpu" else g
    return g.mark_symmetric() if symmetric else g


def _sym_from_raw(raw: sk.CSRGraph) -> tuple:
    """(S, m): the clipped directed kNN similarities ``m`` (scipy) and S = sym_normalize(m + m^T)."""
    m = raw.to("cpu").to_scipy().astype(np.float32)
    m.data = np.maximum(m.data, 0.0)  # a negative cosine is "unrelated", not an edge weight
    m.eliminate_zeros()
    return sym_normalize(m + m.T), m


def knn_scipy(x: torch.Tensor, k: int, backend: str = "auto", previous: sk.CSRGraph | None = None) -> tuple:
    """Cosine kNN graph of the rows of ``x`` (N, d), self excluded.

    Returns ``(S, raw, raw_graph)``: ``S`` the scipy CSR (N, N) with negative similarities
    clipped to 0, symmetrised (S + S^T) and symmetric-normalised; ``raw`` the directed kNN
    similarities (scipy, negatives clipped); ``raw_graph`` the directed kNN CSRGraph as the
    kernel returned it, kept to seed the next incremental refresh. With ``previous`` the graph
    is refreshed incrementally (``sk.knn_refine``) instead of recomputed.
    """
    x = x.detach().float().contiguous()
    k = int(min(k, max(x.shape[0] - 1, 0)))
    if k <= 0:
        n = x.shape[0]
        empty = sp.csr_matrix((n, n), dtype=np.float32)
        return empty, empty, to_csr_graph(empty)
    if previous is not None:
        raw = sk.knn_refine(x, previous, k, backend=backend)
    else:
        raw = sk.knn_graph(x, k, metric="cosine", backend=backend)
    S, m = _sym_from_raw(raw)
    return S, m, raw


def bucket_knn(
    x: torch.Tensor, k: int, block: int = 2048, bits: int = 16, seed: int = 0, backend: str = "auto"
) -> sk.CSRGraph:
    """Approximate cosine kNN graph: exact kNN (``sk.topk_similarity``) inside blocks of
    similar rows.

    Rows are ordered by a random-hyperplane hash (``bits`` sign bits, then the first
    projection as a tie-break), so rows with a small angle between them tend to land in the
    same run of the order; the order is cut into blocks of ``block`` rows and each block gets
    an exact kNN. Cost O(N * block * d) instead of O(N^2 d); memory O(block^2 + N k). It is
    the seed of ``sk.knn_refine`` in :func:`approx_knn_scipy`. Returns a directed CSRGraph
    (N, N), k edges per row (fewer only in a block of at most k rows).
    """
    x = sk.normalize_rows(x.detach().float())
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(x.shape[1], bits, generator=gen)
    proj = x @ planes
    code = ((proj > 0).to(torch.int64) << torch.arange(bits, dtype=torch.int64)).sum(1)
    # Sort by (hash code, first projection): int64 key, code in the high bits.
    p0 = proj[:, 0]
    rank0 = torch.empty(n, dtype=torch.int64)
    rank0[torch.argsort(p0)] = torch.arange(n)
    order = torch.argsort(code * n + rank0)
    del proj, code, rank0
    src_parts, dst_parts, val_parts = [], [], []
    nblocks = max(1, math.ceil(n / block))
    bounds = np.linspace(0, n, nblocks + 1).astype(np.int64)  # equal blocks, none tiny
    for b in range(nblocks):
        ids = order[bounds[b] : bounds[b + 1]]
        kk = min(k, ids.numel() - 1)
        if kk <= 0:
            continue
        idx, val = sk.topk_similarity(x[ids], kk, metric="ip", backend=backend)
        ok = idx >= 0
        src_parts.append(ids[:, None].expand(-1, kk)[ok])
        dst_parts.append(ids[idx.clamp_min(0)][ok])
        val_parts.append(val[ok])
    if not src_parts:
        return sk.CSRGraph.from_edges(
            torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), shape=(n, n)
        )
    src, dst, val = torch.cat(src_parts), torch.cat(dst_parts), torch.cat(val_parts)
    return sk.CSRGraph.from_edges(src, dst, val, shape=(n, n))


def approx_knn_scipy(x: torch.Tensor, k: int, backend: str = "auto") -> tuple:
    """:func:`knn_scipy` without an O(N^2 d) exact kNN: :func:`bucket_knn` seeds one
    ``sk.knn_refine`` pass. Same return value ``(S, raw, raw_graph)``; the graph is approximate
    (recall@10 against exact kNN 0.2-0.4 on the scale benchmark's clustered features)."""
    x = x.detach().float().contiguous()
    k = int(min(k, max(x.shape[0] - 1, 0)))
    if k <= 0:
        return knn_scipy(x, k, backend=backend)
    return knn_scipy(x, k, backend=backend, previous=bucket_knn(x, k, backend=backend))


def feedback_knn(
    h: torch.Tensor, k: int, backend: str = "auto", previous: sk.CSRGraph | None = None
) -> tuple:
    """The feedback graph S(t) from item representations H (I, d) (an alias of :func:`knn_scipy`
    that documents the role)."""
    return knn_scipy(h, k, backend=backend, previous=previous)


@dataclasses.dataclass
class Graphs:
    """The graphs of one epoch (see module docstring); ``None`` for a switched-off view."""

    adj: sk.CSRGraph
    user_item: sk.CSRGraph
    modality: dict
    kg: sk.CSRGraph | None
    feedback_edges: int = 0
    # A(t) with a share of the user-item edges dropped (GraphBuilder's ``edge_dropout``): the
    # interaction view's graph in training; evaluation and the feedback graph use ``adj``.
    train_adj: sk.CSRGraph | None = None


def degree_weights(u: np.ndarray, i: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    """1 / sqrt(d_u d_i) (E,) float64 of the (user, item) edges ``u``, ``i``, degrees counted
    over those edges: the keep probabilities of :func:`degree_sensitive_sample`."""
    du = np.bincount(u, minlength=num_users).astype(np.float64)
    di = np.bincount(i, minlength=num_items).astype(np.float64)
    return 1.0 / np.sqrt(du[u] * di[i])


def degree_sensitive_sample(weights: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """``keep`` distinct indices of ``weights`` (E,), drawn without replacement with probability
    proportional to the weights (exponential keys: the ``keep`` smallest -log(u) / w), sorted."""
    if keep >= weights.size:
        return np.arange(weights.size)
    keys = -np.log(rng.random(weights.size)) / weights
    return np.sort(np.argpartition(keys, keep)[:keep])


class GraphBuilder:
    """Holds the static structures of a dataset and assembles the per-epoch graphs.

    Args:
        ds: the dataset (its ``train`` split defines R).
        modalities: names of the features to build kNN graphs for.
        use_kg: include the KG view.
        knn_k: neighbours per item in the modality kNN graphs.
        beta: weight of S(t) in the modality graphs.
        gamma: weight of S(t) in the interaction graph (item-item block).
        feedback_in: subset of {"interaction", "kg", "modality"} that receive S(t).
        device: where the graphs live.
        backend: kernel backend for the kNN graphs.
        knn_exact_max: modality kNN graphs over at most this many items are exact; above, they
            are :func:`approx_knn_scipy` (bucketed kNN + ``sk.knn_refine``): exact kNN is
            O(I^2 d), hours at a million items.
        cache_static: keep the no-feedback graphs of ``build(None)`` after the first call. A
            run with feedback calls it at most once (or never), so the trainer turns this off
            there and those graphs are freed after use.
        edge_dropout: share of the user-item edges left out of ``Graphs.train_adj`` when
            ``build`` is given an ``rng``: kept edges are drawn with probability proportional to
            1 / sqrt(d_u d_i) (FREEDOM's degree-sensitive pruning), then A is re-normalised by
            the kept degrees (with the epoch's S(t) block, as ``adj``). 0: no ``train_adj``.

    What it holds: R~ (``user_item``), [[0, R], [R^T, 0]] (scipy), the sym-normalised modality
    kNN graphs (scipy, ``modality_knn``), the directed kNN graph of the first modality
    (``seed_graph``: the seed of the first incremental feedback refresh, which
    :class:`~slifmr.selfloop.SelfLoop` takes over), and the KG edge
    arrays (int32). The static CSRGraphs of ``build(None)`` are built on demand.
    """

    def __init__(
        self,
        ds: Dataset,
        modalities=(),
        use_kg: bool = True,
        knn_k: int = 10,
        beta: float = 0.3,
        gamma: float = 0.1,
        feedback_in=("interaction", "kg", "modality"),
        device="cpu",
        backend="auto",
        knn_exact_max: int = DEFAULT_KNN_EXACT_MAX,
        cache_static: bool = True,
        edge_dropout: float = 0.0,
    ):
        self.num_users, self.num_items = ds.num_users, ds.num_items
        if not 0.0 <= float(edge_dropout) < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout!r}")
        self.edge_dropout = float(edge_dropout)
        self.device, self.backend = device, backend
        self.beta, self.gamma = float(beta), float(gamma)
        self.feedback_in = set(feedback_in)
        bad = self.feedback_in - {"interaction", "kg", "modality"}
        if bad:
            raise ValueError(f"feedback_in: unknown targets {sorted(bad)}")
        if isinstance(knn_exact_max, bool) or not isinstance(knn_exact_max, int) or knn_exact_max < 0:
            raise ValueError(f"knn_exact_max must be a non-negative integer, got {knn_exact_max!r}")
        self.knn_exact_max = knn_exact_max
        self.cache_static = bool(cache_static)
        self._static_cache: dict = {}
        U, I = self.num_users, self.num_items
        R = ds.interaction_matrix("train")
        # [[0, R], [R^T, 0]] once; the feedback block is added per epoch.
        self._bip = (
            sp.bmat([[None, R], [R.T, None]], format="csr", dtype=np.float32)
            if U + I
            else sp.csr_matrix((0, 0), dtype=np.float32)
        )
        if self._bip.shape != (U + I, U + I):  # bmat drops all-empty blocks' sizes when U or I is 0
            self._bip = sp.csr_matrix((U + I, U + I), dtype=np.float32)
        self.user_item = to_csr_graph(row_normalize(R), device)
        if self.edge_dropout > 0:
            # int32 ids (float64 weights: the sample's keys, as the measured runs drew them)
            pairs = R.tocoo()
            ids = np.int32 if max(U, I) < 2**31 else np.int64
            self._pairs = (pairs.row.astype(ids), pairs.col.astype(ids))
            self._pair_weight = degree_weights(pairs.row, pairs.col, U, I)
            del pairs
        del R

        self.modality_knn = {}
        self.knn_exact = I <= knn_exact_max
        self.seed_graph: sk.CSRGraph | None = None
        for m in modalities:
            feat = torch.from_numpy(ds.features[m])
            S, _, raw_graph = (
                knn_scipy(feat, knn_k, backend=backend)
                if self.knn_exact
                else approx_knn_scipy(feat, knn_k, backend=backend)
            )
            self.modality_knn[m] = S
            if self.seed_graph is None:
                self.seed_graph = raw_graph
            del raw_graph

        self.use_kg = bool(use_kg and ds.has_kg)
        self.num_entities = ds.num_entities
        self.num_kg_relations = ds.num_relations
        # Relations of the KG view: R_kg forward, R_kg inverse, one feedback relation.
        self.num_view_relations = 2 * ds.num_relations + 1
        if self.use_kg:
            # int32 edge arrays (entity and relation ids fit): half of int64's bytes.
            idx = np.int32 if max(self.num_entities, self.num_view_relations) < 2**31 else np.int64
            assert ds.kg is not None  # use_kg needs ds.has_kg
            h, r, t = (ds.kg[:, c].astype(idx) for c in range(3))
            self._kg_src = np.concatenate([h, t])
            self._kg_dst = np.concatenate([t, h])
            # numpy's stubs reject adding a scalar whose type is the union np.int32 | np.int64
            self._kg_rel = np.concatenate([r, r + idx(ds.num_relations)])  # type: ignore[operator]
            del h, r, t

    # ------------------------------------------------------------------ pieces
    def _kg_graph(self, raw_fb: sp.csr_matrix | None) -> sk.CSRGraph:
        src, dst, rel = self._kg_src, self._kg_dst, self._kg_rel
        w = np.ones(src.size, np.float32)
        if raw_fb is not None and raw_fb.nnz:
            fb = raw_fb.tocoo()
            src = np.concatenate([src, fb.row.astype(src.dtype)])
            dst = np.concatenate([dst, fb.col.astype(dst.dtype)])
            rel = np.concatenate([rel, np.full(fb.nnz, 2 * self.num_kg_relations, rel.dtype)])
            w = np.concatenate([w, fb.data.astype(np.float32)])
            del fb
        E = self.num_entities
        g = sk.CSRGraph.from_edges(
            torch.from_numpy(src),
            torch.from_numpy(dst),
            torch.from_numpy(w),
            relation=torch.from_numpy(rel),
            shape=(E, E),
            num_relations=self.num_view_relations,
        )
        g = g.normalize("row")
        return g.to(self.device) if str(self.device) != "cpu" else g

    def _pad_items(self, s: sp.csr_matrix) -> sp.csr_matrix:
        """Place an I x I matrix in the item-item block of a (U+I) x (U+I) one (no copy of the
        user rows: their indptr entries are all zero)."""
        U = self.num_users
        indptr = np.concatenate([np.zeros(U, s.indptr.dtype), s.indptr])
        return sp.csr_matrix((s.data, s.indices + U, indptr), shape=(U + self.num_items,) * 2)

    # ------------------------------------------------------------------ per epoch
    def build(
        self,
        S: sp.csr_matrix | None = None,
        raw: sp.csr_matrix | None = None,
        rng: np.random.Generator | None = None,
    ) -> Graphs:
        """Assemble the graphs of one epoch.

        Args:
            S: I x I sym-normalised feedback graph (from :func:`feedback_knn`), or ``None``
               (no feedback: the static graphs).
            raw: the directed kNN similarities behind S (scipy, I x I, negatives clipped), for
               the KG feedback relation; defaults to S.
            rng: draws the edges of ``train_adj`` (only with ``edge_dropout`` > 0).
        """
        if S is not None and S.shape != (self.num_items, self.num_items):
            raise ValueError(f"S must be num_items x num_items = {self.num_items}, got {S.shape}")
        train_adj = self._dropped_adj(S, rng) if rng is not None and self.edge_dropout > 0 else None
        if S is None:
            return dataclasses.replace(self.static_graphs(), train_adj=train_adj)
        if self._feedback_in_adj:
            adj = to_csr_graph(sym_normalize(self._with_feedback(self._bip, S)), self.device, symmetric=True)
        else:
            adj = self._static_adj()
        modality = {}
        for m, base in self.modality_knn.items():
            if "modality" in self.feedback_in and self.beta > 0:
                modality[m] = to_csr_graph(
                    (1.0 - self.beta) * base + self.beta * S, self.device, symmetric=True
                )
            else:
                modality[m] = self._static_modality(m)
        kg = None
        if self.use_kg:
            kg = (
                self._kg_graph(raw if raw is not None else S)
                if "kg" in self.feedback_in
                else self._static_kg()
            )
        return Graphs(adj, self.user_item, modality, kg, int(S.nnz), train_adj)

    @property
    def _feedback_in_adj(self) -> bool:
        """Whether S(t) enters A(t) (``feedback_in`` and ``gamma``)."""
        return "interaction" in self.feedback_in and self.gamma > 0

    def _with_feedback(self, bip: sp.csr_matrix, S: sp.csr_matrix | None) -> sp.csr_matrix:
        """[[0, R], [R^T, gamma * S]] from the bipartite part, or ``bip`` when S does not enter."""
        if S is None or not self._feedback_in_adj:
            return bip
        return bip + self._pad_items(self.gamma * S)

    def _dropped_adj(self, S: sp.csr_matrix | None, rng: np.random.Generator) -> sk.CSRGraph:
        """sym([[0, R'], [R'^T, gamma * S]]) with R' a degree-sensitive sample of R's edges."""
        u, i = self._pairs
        keep = degree_sensitive_sample(self._pair_weight, int(round(u.size * (1.0 - self.edge_dropout))), rng)
        U, n = self.num_users, self.num_users + self.num_items
        uk, ik = u[keep].astype(np.int64), i[keep].astype(np.int64) + U
        rows, cols = np.concatenate([uk, ik]), np.concatenate([ik, uk])
        bip = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n))
        return to_csr_graph(sym_normalize(self._with_feedback(bip, S)), self.device, symmetric=True)

    # ------------------------------------------------------------------ static graphs
    def _cached(self, name: str, make):
        """``make()``, kept on the builder when ``cache_static`` (else rebuilt per call)."""
        if not self.cache_static:
            return make()
        if name not in self._static_cache:
            self._static_cache[name] = make()
        return self._static_cache[name]

    def _static_adj(self) -> sk.CSRGraph:
        return self._cached(
            "adj", lambda: to_csr_graph(sym_normalize(self._bip), self.device, symmetric=True)
        )

    def _static_modality(self, m: str) -> sk.CSRGraph:
        return self._cached(
            f"modality:{m}", lambda: to_csr_graph(self.modality_knn[m], self.device, symmetric=True)
        )

    def _static_kg(self) -> sk.CSRGraph:
        return self._cached("kg", lambda: self._kg_graph(None))

    def static_graphs(self) -> Graphs:
        """The graphs without feedback: A = sym([[0, R], [R^T, 0]]), the modality kNN graphs, the
        KG with its inverse relations, and R~ (see the module docstring)."""
        return Graphs(
            self._static_adj(),
            self.user_item,
            {m: self._static_modality(m) for m in self.modality_knn},
            self._static_kg() if self.use_kg else None,
            0,
        )

    def feedback(self, h: torch.Tensor, k: int, previous: sk.CSRGraph | None = None):
        """S(t) from item representations ``h`` (I, d): returns (S, raw_scipy, raw_graph, seconds)."""
        t0 = time.perf_counter()
        S, raw, raw_graph = feedback_knn(h, k, backend=self.backend, previous=previous)
        return S, raw, raw_graph, time.perf_counter() - t0
