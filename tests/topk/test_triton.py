"""The Triton top-k kernel (slifmr_kernels/topk/triton.py) under TRITON_INTERPRET=1 (set by
conftest) against the dense float64 reference: ties, k larger than the candidates, exclusion
lists longer than one block, int32 and int64 lists, float32 (packed keys and pair lists) and
float64, the k-sliced path for wide rows; and the kernel lowers to sm_90 code.
"""

import pytest
import torch

from tests.helpers import KERNEL_TOL, cast, compile_triton_for_sm90, topk_reference

triton = pytest.importorskip("triton")
tl = triton.language

from slifmr_kernels.topk import triton as ttopk  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _check_topk(x, y, k, exclude_self=False, excl=None, dtype=torch.float64, exact_idx=True):
    ep, ei = excl if excl is not None else (None, None)
    ref_i, ref_v = topk_reference(x, y, k, exclude_self, ep, ei)
    xx, yy = cast(DEVICE, dtype, x, y)
    epd, eid = cast(DEVICE, dtype, ep, ei) if excl is not None else (None, None)
    idx, val = ttopk.topk(xx, yy, k, exclude_self, epd, eid)
    assert idx.shape == (x.shape[0], k) and idx.dtype == torch.int64 and val.dtype == dtype
    idx, val = idx.cpu(), val.cpu().double()
    pad = ref_i == -1
    assert torch.equal(idx == -1, pad)
    assert torch.isneginf(val[pad]).all()
    tol = KERNEL_TOL[dtype]
    torch.testing.assert_close(val[~pad], ref_v[~pad], **tol)
    if exact_idx:
        assert torch.equal(idx, ref_i)
    else:  # float32 scores may reorder near-ties: the returned ids must score like the ref's
        s = x.double() @ y.double().T
        got = torch.gather(s, 1, idx.clamp(min=0))
        torch.testing.assert_close(got[~pad], ref_v[~pad], rtol=1e-5, atol=1e-5)
    # sorted: score descending, ties by index ascending
    v = val
    for p in range(k - 1):
        a, b = v[:, p], v[:, p + 1]
        live = idx[:, p + 1] >= 0
        assert bool((a[live] >= b[live]).all())
        tie = live & (a == b)
        assert bool((idx[tie, p] < idx[tie, p + 1]).all())
    return idx, val


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "n,m,d,k", [(37, 150, 7, 5), (20, 70, 33, 10), (65, 65, 16, 3), (70, 200, 130, 4)]
)  # d > BLOCK_K: the k-sliced path
def test_topk_random(n, m, d, k, dtype):
    gen = torch.Generator().manual_seed(n * 1000 + m + d + k)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64)
    _check_topk(x, y, k, dtype=dtype, exact_idx=dtype == torch.float64)


def test_topk_float32_pair_lists(monkeypatch):
    """float32 with the (score, index) pair lists, which serve joins with more than 2^31
    columns: forced through the config on a small join with ties, exclusions and self."""
    base = ttopk._config
    monkeypatch.setattr(ttopk, "_config", lambda d, k: dict(base(d, k), PACKED=False))
    gen = torch.Generator().manual_seed(12)
    x = torch.randint(-2, 3, (70, 5), generator=gen).double()
    x[60:] = x[:10]  # exact duplicates: ties broken by the lower index
    ep = torch.arange(0, 3 * 70 + 1, 3, dtype=torch.int64)
    ei = torch.randint(0, 70, (3 * 70,), generator=gen, dtype=torch.int64)
    _check_topk(x, x, 7, exclude_self=True, excl=(ep, ei), dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_knn_self_excluded_with_duplicates(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(90, 12, generator=gen, dtype=torch.float64)
    x[40] = x[3]  # a duplicate item is a valid neighbour; only the row itself is excluded
    x = x / x.norm(dim=1, keepdim=True)
    idx, _ = _check_topk(x, x, 6, exclude_self=True, dtype=dtype, exact_idx=dtype == torch.float64)
    assert not bool((idx == torch.arange(90)[:, None]).any())
    assert int(idx[3, 0]) == 40 and int(idx[40, 0]) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_ties_break_by_lower_index(dtype):
    # integer-valued vectors: many exactly equal scores, exact in both dtypes
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(-2, 3, (130, 5), generator=gen).double()
    y = torch.randint(-2, 3, (140, 5), generator=gen).double()
    # exact duplicate columns in another tile; row blocks >= 2 visit their diagonal tile
    # (columns 64..127) first, so the duplicates are seen before the lower-indexed originals
    y[100:] = y[:40]
    _check_topk(x, y, 9, dtype=dtype, exact_idx=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_k_at_least_candidates_and_exclusions(dtype):
    gen = torch.Generator().manual_seed(6)
    n, m = 18, 11
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(m, 4, generator=gen, dtype=torch.float64)
    # per-row exclusion lists of varying length (row 0 excludes every column; row 5 none;
    # the list is unsorted and has a duplicate)
    lists = [list(range(m))] + [
        torch.randperm(m, generator=gen)[: int(torch.randint(0, 8, (1,), generator=gen))].tolist()
        for _ in range(n - 1)
    ]
    lists[5] = []
    lists[7] = [3, 3, 9, 0]
    ep = torch.zeros(n + 1, dtype=torch.int64)
    ep[1:] = torch.cumsum(torch.tensor([len(a) for a in lists]), 0)
    ei = torch.tensor([j for a in lists for j in a], dtype=torch.int32)
    idx, val = _check_topk(
        x, y, m, exclude_self=True, excl=(ep, ei), dtype=dtype, exact_idx=dtype == torch.float64
    )
    assert bool((idx[0] == -1).all()) and bool(torch.isneginf(val[0]).all())
    for i, a in enumerate(lists):
        got = set(idx[i][idx[i] >= 0].tolist())
        assert got == set(range(m)) - set(a) - {i}


def test_topk_long_exclusion_list_int64():
    gen = torch.Generator().manual_seed(8)
    n, m = 16, 200
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(m, 6, generator=gen, dtype=torch.float64)
    # exclude each row's 70 best columns: longer than one exclusion block, and exactly the
    # candidates that would otherwise win
    best = torch.topk(x @ y.T, 70, dim=1).indices
    ep = torch.arange(0, n * 70 + 1, 70, dtype=torch.int64)
    _check_topk(x, y, 4, excl=(ep, best.flatten().to(torch.int64)))


@triton.jit
def _key_roundtrip_kernel(S, J, KEY, S_OUT, J_OUT, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    key = ttopk._key(tl.load(S + o), tl.load(J + o))
    tl.store(KEY + o, key)
    tl.store(S_OUT + o, ttopk._key_score(key))
    tl.store(J_OUT + o, ttopk._key_index(key))


def test_packed_keys_order_like_score_then_lower_index():
    """The float32 lists' int64 keys: key order = (score desc, index asc) over edge values
    (signed zeros, denormals, infinities, ties), exact round trip, NaN below everything."""
    tiny = float(torch.finfo(torch.float32).tiny)
    vals = [
        float("-inf"),
        -3e38,
        -1.5,
        -1.0,
        -tiny,
        -tiny / 4,
        -0.0,
        0.0,
        tiny / 4,
        tiny,
        1e-30,
        1.0,
        1.0,
        1.0,
        2.5,
        3e38,
        float("inf"),
        float("nan"),
    ]
    n = 32
    gen = torch.Generator().manual_seed(11)
    s = torch.tensor(vals + [0.0] * (n - len(vals)), dtype=torch.float32)
    j = torch.randint(0, 2**31 - 1, (n,), generator=gen, dtype=torch.int64)
    j[-3:] = torch.tensor([0, 2**31 - 1, 5])  # the extreme column ids
    key = torch.empty(n, dtype=torch.int64)
    s_out, j_out = torch.empty_like(s), torch.empty_like(j)
    _key_roundtrip_kernel[(1,)](s, j, key, s_out, j_out, BLOCK=n)
    nan = torch.isnan(s)
    assert bool((key[nan] == -(2**63)).all()) and bool((key[~nan] > -(2**63)).all())
    live = (~nan).nonzero().flatten().tolist()
    assert torch.equal(s_out[~nan], s[~nan])  # -0.0 comes back as +0.0: equal as floats
    assert torch.equal(j_out[~nan], j[~nan])
    for a in live:
        for b in live:
            better = s[a] > s[b] or (s[a] == s[b] and j[a] < j[b])
            assert bool(key[a] > key[b]) == bool(better), (s[a], j[a], s[b], j[b])


def test_topk_k_zero_and_empty():
    x = torch.randn(5, 3, dtype=torch.float64)
    idx, val = ttopk.topk(*cast(DEVICE, torch.float64, x, x), 0, False, None, None)
    assert idx.shape == (5, 0) and val.shape == (5, 0)
    idx, val = ttopk.topk(*cast(DEVICE, torch.float64, x[:0], x), 2, False, None, None)
    assert idx.shape == (0, 2)


def test_kernels_compile_for_sm90_ahead_of_time():
    builds = """
from slifmr_kernels.topk import triton as tt
for fdt in ("fp32", "fp64"):
    P = "*" + fdt
    # fp32: the packed-key lists (and the pair lists kept for > 2^31 columns); fp64: pairs
    variants = (((False, False, True), (True, True, True), (True, True, False))
                if fdt == "fp32" else ((False, True, False),))
    for tf32, single, packed in variants:
        build(tt._topk_kernel,
              dict(X=P, Y=P, OUT_I="*i64", OUT_V=P, EXP="*i64", EXI="*i32", N="i32", M="i32",
                   D="i32", K="i32"),
              dict(EXCL_SELF=True, HAS_EXCL=True, DIAG_FIRST=True, TF32=tf32, BLOCK_M=32,
                   BLOCK_N=64, BLOCK_K=64, KP=16, BLOCK_X=32, SINGLE_K=single,
                   PACKED=packed))
"""
    assert compile_triton_for_sm90(builds) == 4
