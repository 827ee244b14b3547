"""Graph assembly and the feedback insertion (which graph S(t) enters, with which weight),
against dense formulas."""

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import slifmr_kernels as sk
from slifmr.data import make_synthetic
from slifmr.graphs import GraphBuilder, degree_sensitive_sample, feedback_knn, row_normalize, sym_normalize


def _dense_sym(m):
    m = np.asarray(m, dtype=np.float64)
    r, c = m.sum(1), m.sum(0)
    ir = np.where(r > 0, 1 / np.sqrt(np.where(r > 0, r, 1)), 0)
    ic = np.where(c > 0, 1 / np.sqrt(np.where(c > 0, c, 1)), 0)
    return ir[:, None] * m * ic[None, :]


@pytest.fixture(scope="module")
def small():
    return make_synthetic(
        60,
        40,
        num_clusters=4,
        mean_interactions=6,
        min_interactions=2,
        modalities={"image": 8, "text": 5},
        kg_relations=2,
        seed=11,
    )


def test_normalizers_match_dense():
    m = sp.random(30, 20, density=0.2, random_state=1, format="lil", dtype=np.float64)
    m[3, :] = 0  # an empty row stays empty, no NaN
    m = m.tocsr()
    np.testing.assert_allclose(sym_normalize(m).toarray(), _dense_sym(m.toarray()), rtol=1e-5, atol=1e-7)
    d = m.toarray()
    rs = d.sum(1, keepdims=True)
    np.testing.assert_allclose(
        row_normalize(m).toarray(), np.divide(d, rs, out=np.zeros_like(d), where=rs > 0), rtol=1e-5, atol=1e-7
    )
    assert np.isfinite(sym_normalize(m).data).all()
    assert sym_normalize(m)[3].nnz == 0 and row_normalize(m)[3].nnz == 0


def test_feedback_knn_properties():
    h = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    S, raw, raw_graph = feedback_knn(h, 5)
    Sd, rawd = S.toarray(), raw.toarray()
    assert np.allclose(Sd, Sd.T, atol=1e-6)  # symmetrised
    assert np.all(np.diag(rawd) == 0) and np.all(Sd >= 0)  # self excluded, no negative weights
    assert np.all((rawd > 0).sum(1) <= 5)
    # the kept neighbours are the top cosine similarities (clipped at 0)
    hn = torch.nn.functional.normalize(h, dim=1).numpy()
    cos = hn @ hn.T
    np.fill_diagonal(cos, -np.inf)
    for i in range(50):
        top = np.sort(cos[i])[::-1][:5]
        got = np.sort(rawd[i][rawd[i] > 0])[::-1]
        np.testing.assert_allclose(got, top[top > 0][: got.size], rtol=1e-5)
    np.testing.assert_allclose(Sd, _dense_sym(rawd + rawd.T), rtol=1e-4, atol=1e-6)
    # tiny catalogues: k larger than the number of other items, and a single item
    S1, _, _ = feedback_knn(torch.randn(3, 4), 10)
    assert S1.shape == (3, 3)
    S0, _, _ = feedback_knn(torch.randn(1, 4), 10)
    assert S0.nnz == 0


def test_builder_static_and_feedback_graphs(small):
    ds = small
    U, I = ds.num_users, ds.num_items
    b = GraphBuilder(ds, modalities=["image", "text"], use_kg=True, knn_k=4, beta=0.3, gamma=0.5)
    R = ds.interaction_matrix("train").toarray()
    g0 = b.build(None)
    bip = np.block([[np.zeros((U, U)), R], [R.T, np.zeros((I, I))]])
    np.testing.assert_allclose(g0.adj.to_dense().numpy(), _dense_sym(bip), rtol=1e-5, atol=1e-7)
    rs = R.sum(1, keepdims=True)
    np.testing.assert_allclose(
        g0.user_item.to_dense().numpy(),
        np.divide(R, rs, out=np.zeros_like(R), where=rs > 0),
        rtol=1e-5,
        atol=1e-7,
    )
    assert g0.feedback_edges == 0

    h = torch.randn(I, 8, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    S, raw, _, secs = b.feedback(h, 3)
    assert 0 < secs <= time.perf_counter() - t0  # the refresh's own time, in seconds
    g = b.build(S, raw)
    Sd = S.toarray()
    bipS = bip.copy()
    bipS[U:, U:] += 0.5 * Sd
    np.testing.assert_allclose(g.adj.to_dense().numpy(), _dense_sym(bipS), rtol=1e-4, atol=1e-6)
    for m in ("image", "text"):
        K = b.modality_knn[m].toarray()
        np.testing.assert_allclose(g.modality[m].to_dense().numpy(), 0.7 * K + 0.3 * Sd, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g0.modality[m].to_dense().numpy(), K, rtol=1e-5, atol=1e-7)
    # KG view: forward relations r, inverses r + R, feedback relation 2R; rows sum to 1
    kg = g.kg
    R_kg = ds.num_relations
    assert kg.num_relations == 2 * R_kg + 1
    rel = kg.relation.numpy()
    rows = kg.row_ids().numpy()
    cols = kg.indices.numpy().astype(np.int64)
    fb = rel == 2 * R_kg
    rawd = raw.toarray()
    assert fb.sum() == (rawd > 0).sum()
    assert np.all(rows[fb] < I) and np.all(cols[fb] < I)
    assert np.all(rawd[rows[fb], cols[fb]] > 0)
    fwd = set(map(tuple, ds.kg[:, [0, 1, 2]].tolist()))
    for r_, c_, l_ in zip(rows[rel < R_kg], cols[rel < R_kg], rel[rel < R_kg]):
        assert (r_, l_, c_) in fwd
    inv = (rel >= R_kg) & ~fb
    for r_, c_, l_ in zip(rows[inv], cols[inv], rel[inv]):
        assert (c_, l_ - R_kg, r_) in fwd
    sums = np.bincount(rows, weights=kg.values.numpy(), minlength=ds.num_entities)
    has = np.bincount(rows, minlength=ds.num_entities) > 0
    np.testing.assert_allclose(sums[has], 1.0, rtol=1e-5)
    # the feedback edges of a row carry the similarity, relative to the KG edges' weight 1
    i = int(rows[fb][0])
    row = rows == i
    w = kg.values.numpy()[row]
    fbrow = rel[row] == 2 * R_kg
    expect = np.ones(w.size)
    expect[fbrow] = rawd[i, cols[row][fbrow]]
    np.testing.assert_allclose(w, expect / expect.sum(), rtol=1e-5)


def test_builder_feedback_targets_switch(small):
    b = GraphBuilder(small, modalities=["image"], use_kg=True, knn_k=4, feedback_in=["modality"])
    S, raw, _, _ = b.feedback(torch.randn(small.num_items, 4), 3)
    g, g0 = b.build(S, raw), b.build(None)
    assert torch.equal(g.adj.values, g0.adj.values)  # interaction graph untouched
    assert g.kg is g0.kg or torch.equal(g.kg.values, g0.kg.values)
    assert not torch.allclose(g.modality["image"].to_dense(), g0.modality["image"].to_dense())
    with pytest.raises(ValueError, match="feedback_in"):
        GraphBuilder(small, feedback_in=["nope"])
    with pytest.raises(ValueError, match="num_items"):
        b.build(sp.csr_matrix((3, 3)))


def test_builder_without_kg_or_features_and_cold_users():
    ds = make_synthetic(30, 20, num_clusters=2, modalities={}, kg_relations=0, seed=1)
    import dataclasses

    ds = dataclasses.replace(ds, num_users=33)  # three users without any interaction
    b = GraphBuilder(ds, modalities=[], use_kg=True)
    g = b.build(*b.feedback(torch.randn(20, 4), 3)[:2])
    assert g.kg is None and g.modality == {}
    dense = g.adj.to_dense()
    assert torch.isfinite(dense).all() and dense[30:33].abs().sum() == 0


def test_incremental_refresh_tracks_exact_knn():
    gen = torch.Generator().manual_seed(4)
    h0 = torch.randn(300, 8, generator=gen)
    _, _, raw0 = feedback_knn(h0, 6)
    h1 = h0 + 0.05 * torch.randn(300, 8, generator=gen)  # one epoch of drift
    S_ref, raw_ref, _ = feedback_knn(h1, 6)
    S_inc, raw_inc, _ = feedback_knn(h1, 6, previous=raw0)
    exact = raw_ref.toarray() > 0
    got = raw_inc.toarray() > 0
    assert (exact & got).sum() / exact.sum() > 0.95
    assert np.allclose(S_inc.toarray(), S_inc.toarray().T, atol=1e-6)


def test_symmetric_graphs_are_their_own_transpose_and_backward_matches(small):
    """A(t) and A_m(t) carry no transposed copy; their gradient equals the dense A^T one."""
    b = GraphBuilder(small, modalities=["image"], use_kg=False, knn_k=4)
    S, raw, _, _ = b.feedback(torch.randn(small.num_items, 6, generator=torch.Generator().manual_seed(2)), 3)
    g = b.build(S, raw)
    for graph in (g.adj, g.modality["image"]):
        assert graph.transpose() is graph
        dense = graph.to_dense().double()
        np.testing.assert_allclose(dense.numpy(), dense.T.numpy(), rtol=1e-6, atol=1e-7)
        x = torch.randn(graph.shape[1], 3, dtype=torch.float64, requires_grad=True)
        w = torch.randn(graph.shape[0], 3, dtype=torch.float64)
        (sk.propagate(graph, x) * w).sum().backward()
        torch.testing.assert_close(x.grad, dense.T @ w, rtol=1e-5, atol=1e-7)


def test_static_graphs_on_demand_and_approximate_knn(small):
    """cache_static=False builds the no-feedback graphs per call and keeps none; above
    knn_exact_max the modality graphs come from bucketed kNN + knn_refine and keep a seed."""
    exact = GraphBuilder(small, modalities=["image", "text"], use_kg=True, knn_k=4)
    assert exact.knn_exact and exact.build(None).adj is exact.build(None).adj  # cached
    lazy = GraphBuilder(small, modalities=["image", "text"], use_kg=True, knn_k=4, cache_static=False)
    g1, g2 = lazy.build(None), lazy.build(None)
    assert g1.adj is not g2.adj and torch.equal(g1.adj.values, g2.adj.values)
    assert not lazy._static_cache
    assert lazy._kg_src.dtype == np.int32
    approx = GraphBuilder(small, modalities=["image", "text"], use_kg=True, knn_k=4, knn_exact_max=10)
    assert not approx.knn_exact and approx.seed_graph is not None
    assert approx.seed_graph.shape == (small.num_items, small.num_items)
    for m in ("image", "text"):
        K = approx.modality_knn[m]
        assert K.shape == (small.num_items,) * 2 and abs(K - K.T).max() < 1e-6
    with pytest.raises(ValueError, match="knn_exact_max"):
        GraphBuilder(small, knn_exact_max=-1)


def test_degree_sensitive_sample():
    rng = np.random.default_rng(0)
    w = np.array([10.0, 1.0, 1.0, 1.0, 0.1])
    keep = degree_sensitive_sample(w, 2, rng)
    assert keep.size == 2 and np.all(np.diff(keep) > 0)
    counts = np.zeros(5)
    for _ in range(2000):
        counts[degree_sensitive_sample(w, 2, rng)] += 1
    assert counts[0] > 1900 and counts[4] < counts[1]  # kept in proportion to the weights
    assert np.array_equal(degree_sensitive_sample(w, 9, rng), np.arange(5))
