"""Input validation of slifmr_kernels: every constructor and op
rejects bad input with the project's own error, naming the argument, before any kernel or
foreign C/C++ code reads it; documented edge cases keep working."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import slifmr_kernels as sk
from slifmr_kernels.graph import _INFER_FACTOR, _INFER_MIN
from slifmr_kernels.testing import random_graph

CPU_BACKENDS = {op: sk.available_backends("cpu", op=op) for op in ("propagate", "topk", "fuse", "refine")}


def scipy_csr(fmt="csr", seed=0):
    m = sp.random(20, 30, density=0.2, format="csr", random_state=seed, dtype=np.float64)
    return m.asformat(fmt) if fmt != "bsr" else m.tobsr(blocksize=(2, 3))


# --------------------------------------------------------------------------- error classes


# --------------------------------------------------------------------------- from_scipy


@pytest.mark.parametrize("fmt", ["csr", "csc", "bsr"])
@pytest.mark.parametrize(
    "corrupt, msg",
    [
        (lambda m: m.indptr.__setitem__(-1, m.indptr[-1] + 500), r"m.indptr\[-1\] = \d+ must equal"),
        (lambda m: m.indptr.__setitem__(-1, m.indptr[-1] + 2**30), r"m.indptr\[-1\]"),
        (lambda m: m.indptr.__setitem__(3, m.indptr[4] + 7), "m.indptr must be non-decreasing"),
        (lambda m: m.indptr.__setitem__(0, 1), r"m.indptr\[0\] must be 0"),
        (lambda m: setattr(m, "indptr", m.indptr[:-1]), "m.indptr must have"),
        (lambda m: setattr(m, "indptr", np.concatenate([m.indptr, m.indptr[-1:]])), "m.indptr must have"),
        (lambda m: m.indices.__setitem__(2, 10**6), "m.indices has an entry 1000000"),
        (lambda m: m.indices.__setitem__(2, -1), "m.indices has an entry -1"),
        (lambda m: setattr(m, "data", m.data[:-1]), "m.data must have one entry"),
        (lambda m: setattr(m, "indptr", m.indptr.astype(np.float64)), "m.indptr must hold integers"),
        (lambda m: setattr(m, "data", m.data.astype(np.complex128)), "m.data must hold real"),
        (lambda m: m.data.__setitem__(0, np.inf), r"m.data contains \d+ NaN"),
    ],
)
def test_from_scipy_refuses_corrupted_compressed_arrays(fmt, corrupt, msg):
    """indptr[-1] += 500 on a valid CSR used to kill the process (SIGSEGV / malloc invalid
    size) or hang inside scipy's C++ code; non-monotone indptr gave a wrong matrix."""
    m = scipy_csr(fmt)
    corrupt(m)
    with pytest.raises(sk.GraphError, match=msg):
        sk.CSRGraph.from_scipy(m)


def test_from_scipy_coo_and_shape_and_every_format():
    m = scipy_csr("coo")
    m.row[0] = 25
    with pytest.raises(sk.GraphIndexError, match="src has an entry 25 outside"):
        sk.CSRGraph.from_scipy(m)
    m = scipy_csr("csr")
    m.data[0] = np.nan
    with pytest.raises(sk.GraphError, match="NaN"):
        sk.CSRGraph.from_scipy(m)
    m = scipy_csr("csr")
    m._shape = (-1, 30)
    with pytest.raises(sk.GraphError, match="m.shape must be non-negative"):
        sk.CSRGraph.from_scipy(m)
    with pytest.raises(sk.GraphTypeError, match="m must be a scipy.sparse matrix"):
        sk.CSRGraph.from_scipy(np.eye(3))
    dense = scipy_csr("csr").toarray()
    for fmt in ("csr", "csc", "coo", "bsr", "lil", "dok", "dia"):
        m = sp.csr_matrix(dense)
        m = m.tobsr(blocksize=(2, 3)) if fmt == "bsr" else m.asformat(fmt)
        g = sk.CSRGraph.from_scipy(m, dtype=torch.float64)
        np.testing.assert_allclose(g.to_dense().numpy(), dense, err_msg=fmt)
    # unsorted indices and duplicates are fine (summed), as scipy's own semantics say
    m = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 3))
    assert sk.CSRGraph.from_scipy(m).to_dense().tolist() == [[2.0, 0.0, 4.0]]
    # uint64 / int32 index arrays and bool / int data are accepted
    m = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=bool))
    m.indices = m.indices.astype(np.uint64)
    assert sk.CSRGraph.from_scipy(m).to_dense().tolist() == [[0.0, 1.0], [1.0, 0.0]]


# --------------------------------------------------------------------------- CSRGraph(...)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(indptr=[0, 1, 5], indices=[0, 1], shape=(2, 2)), sk.GraphError, r"indptr\[-1\] = 5"),
        (dict(indptr=[0, 2, 1, 2], indices=[0, 1], shape=(3, 2)), sk.GraphError, "non-decreasing"),
        (dict(indptr=[0, 1], indices=[0], shape=(2, 2)), sk.GraphError, "n_rows \\+ 1 = 3"),
        (dict(indptr=[[0, 1]], indices=[0], shape=(1, 2)), sk.GraphError, "indptr must be 1-D"),
        (
            dict(indptr=torch.tensor([0.0, 1.0]), indices=[0], shape=(1, 2)),
            sk.GraphTypeError,
            "indptr must have dtype",
        ),
        (dict(indptr=[0, 1], indices=[2**40], shape=(1, 2)), sk.GraphIndexError, "indices"),
        (
            dict(indptr=[0, 1], indices=[0], values=torch.tensor([1.0], dtype=torch.float16), shape=(1, 2)),
            sk.GraphTypeError,
            "values must have dtype",
        ),
        (dict(indptr=[0, 1], indices=[0], shape=(-1, 2)), sk.GraphError, "non-negative"),
        (dict(indptr=[0, 1], indices=[0], shape=(1.0, 2)), sk.GraphTypeError, r"shape\[0\]"),
        (dict(indptr=[0, 1], indices=[0], shape=(1, 2, 3)), sk.GraphError, "shape must be a pair"),
        (dict(indptr=[0, 1], indices=[0], shape="ab"), sk.GraphTypeError, "shape must be a pair"),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation=torch.tensor([2**32]), num_relations=2),
            sk.GraphIndexError,
            "relation has an entry 4294967296",
        ),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation=[0], num_relations=0),
            sk.GraphError,
            "num_relations",
        ),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation=[0], num_relations=True),
            sk.GraphTypeError,
            "num_relations",
        ),
        (
            dict(
                indptr=[0, 1], indices=[0], shape=(1, 1), relation=[0], num_relations=2, relation_names=["a"]
            ),
            sk.GraphError,
            "relation_names has 1 names for 2",
        ),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation=[0], relation_names="a"),
            sk.GraphTypeError,
            "relation_names must be a sequence",
        ),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation_weight=[1.0]),
            sk.GraphError,
            "relation_weight needs relation ids",
        ),
        (
            dict(indptr=[0, 1], indices=[0], shape=(1, 1), relation=[0], relation_weight=[float("nan")]),
            sk.GraphError,
            "relation_weight contains",
        ),
        (
            dict(indptr=[0, 1], indices=[0], values=torch.ones(1, device="meta"), shape=(1, 1)),
            sk.GraphError,
            "one device",
        ),
        (
            dict(indptr=torch.tensor([0, 1], device="meta"), indices=torch.tensor([0], device="meta")),
            sk.GraphError,
            "meta device",
        ),
        (dict(indptr=[0, 1], indices=[2**40]), sk.GraphError, "pass shape="),
    ],
)
def test_constructor_refuses(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        sk.CSRGraph(**kwargs)


def test_lazy_graph_is_checked_by_the_first_reader_and_in_place_edits_are_seen():
    bad = sk.CSRGraph([0, 1, 500], [0, 1], shape=(2, 2), validate=False)  # no O(nnz) check yet
    for read in (
        bad.ensure_valid,
        bad.transpose,
        bad.degrees,
        bad.row_ids,
        bad.to_dense,
        bad.normalize,
        bad.to_scipy,
        lambda: sk.propagate(bad, torch.ones(2, 1)),
        lambda: sk.topk_scores(torch.ones(2, 1), torch.ones(2, 1), 1, exclude=bad),
        lambda: sk.knn_refine(torch.randn(2, 2), bad, 1),
    ):
        with pytest.raises(sk.GraphError, match=r"indptr\[-1\] = 500"):
            read()
    g = sk.CSRGraph.from_edges([0, 1, 2], [1, 2, 0], shape=(3, 3))
    x = torch.randn(3, 2)
    sk.propagate(g, x)
    g.indices[1] = 7  # in place: the version counter moves
    with pytest.raises(sk.GraphIndexError, match="indices has an entry 7"):
        sk.propagate(g, x)
    g = sk.CSRGraph.from_edges([0, 1, 2], [1, 2, 0], shape=(3, 3))
    g.indices = g.indices[:2]  # a view with the same data pointer and version
    with pytest.raises(
        sk.GraphError,
        match=r"indptr\[-1\] = 3 must equal the number of "
        r"indices \(2\)",
    ):
        sk.propagate(g, x)
    g = sk.CSRGraph.from_edges([0, 1, 2], [1, 2, 0], shape=(3, 3))
    g.shape = (4, 3)  # attributes count too
    with pytest.raises(sk.GraphError, match="n_rows"):
        g.transpose()


def test_unchanged_graph_is_not_revalidated(monkeypatch):
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], shape=(2, 2))
    calls = []
    monkeypatch.setattr(sk.CSRGraph, "validate", lambda self: calls.append(1) or self)
    x = torch.randn(2, 4)
    for _ in range(3):
        sk.propagate(g, x)
    assert calls == []


def test_non_contiguous_and_zero_stride_arrays_are_stored_contiguous():
    idx = torch.tensor([[0, 9], [1, 9], [0, 9]])[:, 0]  # stride 2
    g = sk.CSRGraph([0, 2, 3], idx, torch.ones(1).expand(3), shape=(2, 2))
    assert g.indices.is_contiguous() and g.values.is_contiguous()
    assert g.to_dense().tolist() == [[1.0, 1.0], [1.0, 0.0]]


# --------------------------------------------------------------------------- from_edges


def test_from_edges_does_not_infer_a_huge_shape():
    with pytest.raises(sk.GraphError, match=r"src has id 1099511627776: .*pass shape="):
        sk.CSRGraph.from_edges([0, 2**40], [0, 1])
    with pytest.raises(sk.GraphError, match="num_nodes"):
        sk.CSRGraph.from_edge_index(torch.tensor([[0, 1], [2**40, 0]]))
    # inference is fine while the ids are O(edges)
    lim = max(_INFER_MIN, _INFER_FACTOR * 2)
    g = sk.CSRGraph.from_edges([0, lim - 1], [0, 1])
    assert g.shape == (lim, 2)


def test_from_edges_explicit_huge_shape_without_key_overflow():
    """(2**10, 2**62) used to overflow the int64 (row, column) sort key."""
    src = torch.tensor([1000, 0, 1000, 3, 0])
    dst = torch.tensor([2**62 - 1, 2**61, 5, 2**62 - 1, 2**61])
    g = sk.CSRGraph.from_edges(src, dst, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), shape=(2**10, 2**62))
    assert g.indices.dtype == torch.int64
    got = list(zip(g.row_ids().tolist(), g.indices.tolist(), g.values.tolist()))
    assert got == [(0, 2**61, 7.0), (3, 2**62 - 1, 4.0), (1000, 5, 3.0), (1000, 2**62 - 1, 1.0)]
    # with relations: the key would also overflow through num_relations
    rel = torch.tensor([1, 0, 1, 0, 1])
    h = sk.CSRGraph.from_edges(
        src % 4, dst % 5, relation=rel * (2**30 - 1), shape=(4, 5), num_relations=2**30
    )
    small = sk.CSRGraph.from_edges(src % 4, dst % 5, relation=rel, shape=(4, 5))
    assert torch.equal(h.indptr, small.indptr) and torch.equal(h.indices, small.indices)
    assert torch.equal(h.relation // (2**30 - 1), small.relation)
    # the slow path (stable sorts) and the key path agree
    gen = torch.Generator().manual_seed(0)
    s, d, r = (torch.randint(0, 6, (200,), generator=gen) for _ in range(3))
    w = torch.rand(200, generator=gen, dtype=torch.float64)
    a = sk.CSRGraph.from_edges(s, d, w, relation=r, shape=(6, 6), num_relations=6, dtype=torch.float64)
    b = sk.CSRGraph.from_edges(
        s, d * 2**59, w, relation=r, shape=(6, 2**62), num_relations=6, dtype=torch.float64
    )
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.relation, b.relation)
    assert torch.equal(a.indices.long() * 2**59, b.indices)
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(src=[0], dst=[0], shape=(-1, 3)), sk.GraphError, "shape must be non-negative"),
        (dict(src=[0], dst=[0], shape=(2**40, 2)), sk.GraphError, "cannot allocate"),
        (dict(src=[0, 1], dst=[0]), sk.GraphError, "same length"),
        (dict(src=[0.5], dst=[0]), sk.GraphTypeError, "src must hold integer ids"),
        (dict(src=[-1], dst=[0], shape=(2, 2)), sk.GraphIndexError, "src has an entry -1"),
        (
            dict(src=[0], dst=[0], relation=[0], num_relations=2, relation_names=["a"]),
            sk.GraphError,
            "relation_names has 1 names for 2",
        ),
        (
            dict(src=[0], dst=[0], relation=[0], relation_weight=[1.0, 2.0]),
            sk.GraphError,
            "relation_weight must have num_relations = 1",
        ),
        (dict(src=[0], dst=[0], weight=[float("nan")]), sk.GraphError, "weight contains"),
        (
            dict(src=[0], dst=[0], weight=[1e300], dtype=torch.float32),
            sk.GraphError,
            "weight contains",
        ),  # finite in float64, inf once cast to float32
        (
            dict(src=[0], dst=[0], weight=torch.ones(1, dtype=torch.complex64)),
            sk.GraphTypeError,
            "weight must be real",
        ),
        (dict(src=[0], dst=[0], dtype=torch.float16), sk.GraphTypeError, "dtype"),
        (dict(src=[0], dst=[0], index_dtype=torch.float32), sk.GraphTypeError, "index_dtype"),
        (dict(src=[0], dst=[0], relation=[2**31]), sk.GraphIndexError, "relation"),
        (
            dict(src=torch.tensor([0], device="meta"), dst=torch.tensor([0], device="meta")),
            sk.GraphError,
            "meta",
        ),
    ],
)
def test_from_edges_refuses(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        sk.CSRGraph.from_edges(**kwargs)


def test_from_edges_accepts_any_integer_dtype_and_real_weights():
    for dt in (torch.int8, torch.int16, torch.int32, torch.uint8, torch.int64):
        g = sk.CSRGraph.from_edges(
            torch.tensor([1, 0], dtype=dt), torch.tensor([0, 1], dtype=dt), torch.tensor([True, True])
        )
        assert g.to_dense().tolist() == [[0.0, 1.0], [1.0, 0.0]]
    g = sk.CSRGraph.from_edges(np.array([0, 0], dtype=np.uint32), np.array([1, 1]), [2, 3])
    assert g.to_dense().tolist() == [[0.0, 5.0]]


def test_from_torch_sparse_refuses_corrupted_arrays():
    t = torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]), torch.ones(2), (3, 3), check_invariants=False)
    with pytest.raises(sk.GraphIndexError, match="src has an entry 5"):
        sk.CSRGraph.from_torch_sparse(t)
    c = torch.eye(3).to_sparse_csr()
    crow = c.crow_indices().clone()
    crow[-1] += 500
    bad = torch.sparse_csr_tensor(crow, c.col_indices(), c.values(), (3, 3), check_invariants=False)
    with pytest.raises(sk.GraphError, match=r"t.crow_indices\(\)\[-1\]"):
        sk.CSRGraph.from_torch_sparse(bad)


def test_graph_methods_refuse_bad_arguments():
    g = random_graph(6, 6, 20)
    with pytest.raises(sk.InputError, match="kind"):
        g.normalize("cols")
    with pytest.raises(sk.InputError, match="eps"):
        g.normalize("sym", eps=float("nan"))
    with pytest.raises(sk.GraphError, match="values must have one entry per edge"):
        g.with_values(torch.ones(g.nnz + 1))
    with pytest.raises(sk.GraphError, match="values contains"):
        g.with_values(torch.full((g.nnz,), float("inf")))
    with pytest.raises(sk.InputError, match="device"):
        g.to("gpu")
    with pytest.raises(sk.InputError, match="meta"):
        g.to("meta")
    with pytest.raises(sk.GraphTypeError, match="dtype"):
        g.to(dtype=torch.float16)
    tiny = sk.CSRGraph.from_edges([0, 0], [0, 1], torch.tensor([1e-38, -0.99e-38]), shape=(1, 2))
    with pytest.raises(sk.GraphError, match="overflow .* pass eps > 0"):
        tiny.normalize("row")
    assert tiny.normalize("row", eps=1e-30).values.tolist() == [0.0, 0.0]
    with pytest.raises(sk.InputError, match="weights"):
        sk.stack_relations({"a": g}, [float("nan")])
    with pytest.raises(sk.InputTypeError, match="graphs must be a mapping"):
        sk.stack_relations([g])


# --------------------------------------------------------------------------- ops


@pytest.mark.parametrize("backend", CPU_BACKENDS["topk"])
def test_topk_huge_k_refused_and_k_beyond_m_padded(backend):
    x = torch.randn(7, 3)
    with pytest.raises(sk.InputError, match=r"k = 2147483648 exceeds the M = 7 candidates"):
        sk.topk_similarity(x, 2**31, backend=backend)
    with pytest.raises(sk.InputError, match="k = 4611686018427387904"):
        sk.topk_similarity(torch.randn(2**10, 2), 2**62, backend=backend)
    idx, val = sk.topk_similarity(x, 7 + 1024, backend=backend)  # the largest k allowed
    assert idx.shape == (7, 1031) and bool((idx[:, 6:] == -1).all())
    assert bool(torch.isneginf(val[:, 6:]).all())
    idx, _ = sk.topk_similarity(x, 10, backend=backend)  # documented: k > M pads
    assert idx.shape == (7, 10) and bool((idx[:, 6:] == -1).all())
    # knn_graph clamps k to N - 1: any k works, no padding is ever allocated
    g = sk.knn_graph(x, 2**62, backend=backend)
    assert g.nnz == 7 * 6


@pytest.mark.parametrize(
    "k, exc",
    [(-1, sk.InputError), (True, sk.InputTypeError), (2.0, sk.InputTypeError), (None, sk.InputTypeError)],
)
def test_bad_k_everywhere(k, exc):
    x = torch.randn(5, 3)
    g = sk.knn_graph(x, 2)
    for call in (
        lambda: sk.topk_similarity(x, k),
        lambda: sk.topk_scores(x, x, k),
        lambda: sk.knn_graph(x, k),
        lambda: sk.knn_refine(x, g, k),
    ):
        with pytest.raises(exc, match="k must be"):
            call()
    with pytest.raises(sk.InputError, match="k must be"):
        sk.knn_refine(x, g, 0)
    assert sk.topk_similarity(x, 0)[0].shape == (5, 0)
    assert sk.topk_similarity(x, np.int64(2))[0].shape == (5, 2)


def test_topk_other_arguments():
    x = torch.randn(5, 3)
    with pytest.raises(sk.InputError, match="metric"):
        sk.topk_similarity(x, 2, metric="l2")
    with pytest.raises(sk.InputTypeError, match="exclude_self must be a bool"):
        sk.topk_similarity(x, 2, exclude_self=1)
    with pytest.raises(sk.InputError, match="exclude must have shape"):
        sk.topk_scores(x, x, 2, exclude=random_graph(4, 5, 5))
    with pytest.raises(sk.InputError, match="x contains"):
        sk.topk_similarity(torch.tensor([[float("inf"), 0.0]]), 1)
    with pytest.raises(sk.InputTypeError, match="x must have dtype"):
        sk.topk_similarity(x.half(), 1)
    with pytest.raises(sk.InputError, match="one device"):
        sk.topk_scores(x, x.to("meta"), 1)
    with pytest.raises(sk.InputError, match="meta device"):
        sk.topk_similarity(x.to("meta"), 1)
    with pytest.raises(sk.InputError, match="backend must be one of"):
        sk.topk_similarity(x, 1, backend="fortran")
    with pytest.raises(sk.InputTypeError, match="backend must be a str"):
        sk.topk_similarity(x, 1, backend=None)
    with pytest.raises(sk.BackendUnavailable):
        sk.topk_similarity(x, 1, backend="cuda")
    # zero-stride and non-contiguous inputs give the contiguous result; grad inputs detached
    base = torch.randn(1, 3)
    a = sk.topk_similarity(base.expand(4, 3), 2, metric="ip")
    b = sk.topk_similarity(base.expand(4, 3).contiguous(), 2, metric="ip")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    xt = torch.randn(3, 6).t()
    assert torch.equal(sk.topk_similarity(xt, 2)[0], sk.topk_similarity(xt.contiguous(), 2)[0])
    out = sk.topk_similarity(torch.randn(4, 3, requires_grad=True), 2)
    assert not out[1].requires_grad
    # empty inputs
    assert sk.topk_similarity(torch.randn(0, 3), 2)[0].shape == (0, 2)
    assert sk.topk_scores(torch.randn(3, 0), torch.randn(0, 0), 2)[0].tolist() == [[-1, -1]] * 3


def test_normalize_rows_overflowing_norm():
    x = torch.tensor([[3e30, 4e30], [0.0, 0.0]])
    torch.testing.assert_close(sk.normalize_rows(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    with pytest.raises(sk.InputError, match="x must be 2-D"):
        sk.normalize_rows(torch.ones(3))


@pytest.mark.parametrize("backend", CPU_BACKENDS["propagate"])
def test_propagate_relation_grad_without_table_grad(backend):
    """x requires grad, the relation embeddings do not: the backward used to hand the
    backend an empty placeholder for x and the triton (and CUDA) backends sized dx by it."""
    g = random_graph(6, 5, 20, num_relations=2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, requires_grad=True)
    e = torch.randn(2, 3)
    sk.propagate(g, x, e, backend=backend).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    sk.propagate(g, x2, e, backend="torch").sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_propagate_arguments():
    g = random_graph(5, 4, 10, num_relations=2, generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 3)
    with pytest.raises(sk.InputError, match="relation_weight contains"):
        sk.propagate(g, x, relation_weight=torch.tensor([1.0, float("nan")]))
    with pytest.raises(sk.InputError, match="relation_weight must have num_relations = 2"):
        sk.propagate(g, x, relation_weight=torch.ones(3))
    v = g.values.clone().requires_grad_(True)
    gv = sk.CSRGraph(g.indptr, g.indices, v, g.shape, g.relation, g.num_relations)
    # Edge-value gradients are supported: the values get theirs.
    sk.propagate(gv, x).sum().backward()
    assert v.grad is not None and v.grad.shape == v.shape
    with torch.no_grad():
        sk.propagate(gv, x)  # nothing to differentiate: fine
    with pytest.raises(sk.InputTypeError, match="x must have dtype"):
        sk.propagate(g, x.to(torch.int64))
    with pytest.raises(sk.InputError, match="x must have g.shape"):
        sk.propagate(g, torch.randn(5, 3))
    # NaN in x is documented to propagate (no check on the hot path)
    xn = x.clone()
    xn[0, 0] = float("nan")
    assert bool(torch.isnan(sk.propagate(g, xn, backend="torch")).any())
    # zero-stride / non-contiguous x
    xe = torch.randn(1, 3).expand(4, 3)
    torch.testing.assert_close(sk.propagate(g, xe), sk.propagate(g, xe.contiguous()))
    # empty graphs and zero-width features
    e = sk.CSRGraph.from_edges([], [], shape=(0, 4))
    assert sk.propagate(e, x).shape == (0, 3)
    assert sk.propagate(g, torch.randn(4, 0)).shape == (5, 0)


def test_propagate_layers_arguments():
    g = random_graph(4, 4, 10, generator=torch.Generator().manual_seed(2))
    x = torch.randn(4, 2)
    with pytest.raises(sk.InputError, match="num_layers must be at most 1024"):
        sk.propagate_layers(g, x, 2**40)
    with pytest.raises(sk.InputTypeError, match="num_layers"):
        sk.propagate_layers(g, x, 2.0)
    with pytest.raises(sk.InputTypeError, match="g must be a CSRGraph"):
        sk.propagate_layers(g.to_dense(), x, 1)
    with pytest.raises(sk.InputError, match="backend"):  # checked even when L = 0
        sk.propagate_layers(g, x, 0, backend="fortran")
    with pytest.raises(sk.InputError, match="x must have g.shape"):
        sk.propagate_layers(g, torch.randn(3, 2), 0)


def test_knn_refine_huge_counts_are_clamped():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    g0 = sk.knn_graph(x, 5)
    for b in CPU_BACKENDS["refine"]:
        g = sk.knn_refine(x, g0, 5, sample_random=2**40, max_candidates=2**40, max_iters=2**40, backend=b)
        assert g.nnz == 30 * 5
    for kw, msg in [
        (dict(delta=float("nan")), "delta"),
        (dict(seed=2**64), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(metric="l2"), "metric"),
        (dict(return_stats=1), "return_stats"),
        (dict(max_iters=-1), "max_iters"),
    ]:
        with pytest.raises(sk.InputError, match=msg):
            sk.knn_refine(x, g0, 5, **kw)
    with pytest.raises(sk.InputError, match="previous_graph must have shape"):
        sk.knn_refine(x, random_graph(29, 29, 10), 5)


def test_fuse_views_arguments():
    z, a, v = torch.randn(3, 2), torch.randn(2), torch.randn(3, 4)
    with pytest.raises(sk.InputError, match="views must be"):
        sk.fuse_views(z, a, torch.randn(3, 5))
    with pytest.raises(sk.InputTypeError, match="alpha must have dtype"):
        sk.fuse_views(z, a.long(), v)
    with pytest.raises(sk.InputError, match="one device"):
        sk.fuse_views(z, a.to("meta"), v)
    with pytest.raises(sk.InputError, match="backend"):
        sk.fuse_views(z, a, v, backend="nope")
    ze = torch.randn(1, 2).expand(3, 2)
    torch.testing.assert_close(sk.fuse_views(ze, a, v), sk.fuse_views(ze.contiguous(), a, v))


def test_available_backends_arguments():
    assert "torch" in sk.available_backends("cpu", op="topk")
    with pytest.raises(sk.InputError, match="device"):
        sk.available_backends("gpu")
    with pytest.raises(sk.InputError, match="op must be one of"):
        sk.available_backends("cpu", op="sort")
