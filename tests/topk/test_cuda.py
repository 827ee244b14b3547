"""The CUDA top-k kernel (csrc/topk) run on the CPU through the emulator (tests/cuda_emu.py),
behind the real binding and slifmr_kernels/topk/cuda.py, against the float64 reference: ties,
self, padding, k > 32 (multi-step list shift), exclusions, every way of filling the tiles
(resident by 16-byte or one-element asynchronous copies, sliced), and the TF32 tile path whose
candidates the re-rank makes exact."""

import pytest
import torch

from tests.helpers import csr_lists, misaligned, poison, topk_reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_cuda_topk_ties_self_and_padding(emu_ops, dtype):
    _, tc, _ = emu_ops
    gen = torch.Generator().manual_seed(21)
    # integer vectors: exact scores in both dtypes, many exact ties; duplicate columns in a
    # later tile, visited first by the second row block (diagonal tile first)
    x = torch.randint(-2, 3, (70, 5), generator=gen).double()
    y = x.clone()
    y[64:70] = y[0:6]
    k = 40  # > 32: the warp shifts the sorted list in several steps
    idx, val = tc.topk(x.to(dtype), y.to(dtype), k, True, None, None)
    ri, rv = topk_reference(x, y, k, True)
    assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    # k >= candidates: 70 columns minus self = 69 allowed, one pad per row
    idx, val = tc.topk(x.to(dtype), y.to(dtype), 70, True, None, None)
    ri, rv = topk_reference(x, y, 70, True)
    assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    assert bool((idx[:, -1] == -1).all()) and bool(torch.isneginf(val[:, -1]).all())


@pytest.mark.parametrize("ex_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("d", [9, 16])  # resident tiles by one-element / 16-byte copies
def test_emulated_cuda_topk_exclusions(emu_ops, ex_dtype, d):
    _, tc, _ = emu_ops
    gen = torch.Generator().manual_seed(22 + d)
    n, m, k = 40, 150, 6
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64)
    best = torch.topk(x @ y.T, 45, dim=1).indices  # exclude the winners: > 32 per row
    lists = [best[i, : int(torch.randint(0, 45, (1,), generator=gen))].tolist() for i in range(n)]
    lists[0] = list(range(m))  # everything excluded: all padding
    ep, ei = csr_lists(lists, ex_dtype)
    idx, val = tc.topk(x, y, k, False, ep, ei)
    ri, rv = topk_reference(x, y, k, False, ep, ei)
    assert torch.equal(idx, ri)
    torch.testing.assert_close(val, rv, rtol=1e-13, atol=1e-13)
    assert bool((idx[0] == -1).all())


# d = 21: resident tiles by one-element copies (depth padded to 24); 64: by 16-byte copies;
# 136: above the residency limit, k-major slices
@pytest.mark.parametrize("d", [21, 64, 136])
def test_emulated_cuda_topk_tf32_candidates_and_rerank(emu_ops, emu_probe, d):
    """The TF32 (wmma) tile path: its candidates carry TF32 scores; through rerank.py the
    answer is exact, with self and exclusion lists honoured and ties (integer data) resolved
    by the exact fallback."""
    _, tc, _ = emu_ops
    from slifmr_kernels.testing import round_tf32
    from slifmr_kernels.topk import rerank

    gen = torch.Generator().manual_seed(23 + d)
    n, m = 70, 150  # two row blocks, three column tiles
    x = torch.randn(n, d, generator=gen)
    y = torch.randn(m, d, generator=gen)
    ci, cv = tc.topk_candidates(x, y, 16, False, None, None)
    assert emu_probe.path(torch.float32, d) == ("sliced" if d > 128 else "resident")
    want = (round_tf32(x).double() @ round_tf32(y).double().T).gather(1, ci)
    torch.testing.assert_close(cv.double(), want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(cv, (x @ y.T).gather(1, ci))  # the tile really was TF32
    lists = [list(range(i % 7)) for i in range(n)]
    ep, ei = csr_lists(lists, torch.int32)
    idx, val = tc.topk_tf32(x, y, 10, False, ep, ei)
    ri, rv = topk_reference(x, y, 10, False, ep, ei)
    assert torch.equal(idx, ri)
    torch.testing.assert_close(val.double(), rv, rtol=1e-5, atol=1e-5)
    if d != 21:
        return
    # two distinct integer vectors, ~35 copies each: the 12th best ties the 32nd (the last
    # candidate), so the certificates fail and the exact kernel breaks the ties
    base = torch.randint(-2, 3, (2, 6), generator=gen).float()
    xi = base[torch.arange(n) % 2]
    idx, val = tc.topk_tf32(xi, xi, 12, True, None, None)
    ri, rv = topk_reference(xi, xi, 12, True)
    assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    assert rerank.last_fallback_rows() > 0


def _int_rows_with_late_duplicates(gen, d, dtype):
    """x (70, d) and y (150, d) of small integers (exact scores in both dtypes, many exact
    ties), y[:70] = x (so exclude_self matters) and y[100:120] = y[:20]: the second row block
    visits its diagonal tile (columns 64-127) first, so it meets those duplicates before their
    lower-indexed originals."""
    y = torch.randint(-2, 3, (150, d), generator=gen).double()
    y[100:120] = y[:20]
    return y[:70].clone().to(dtype), y.to(dtype)


# (dtype, d, path, bytes per asynchronous copy): the residency limit is a 512-byte padded row
_TOPK_PATHS = [
    (torch.float32, 64, "resident", 16),
    (torch.float64, 64, "resident", 16),
    (torch.float32, 6, "resident", 4),  # 24-byte rows: one element per copy
    (torch.float64, 6, "resident", 16),  # 48-byte rows; the depth padded to 8 with zeros
    (torch.float32, 128, "resident", 16),  # the largest resident fp32 row
    (torch.float32, 132, "sliced", None),
    (torch.float64, 72, "sliced", None),
]


@pytest.mark.parametrize("dtype,d,path,copy_bytes", _TOPK_PATHS)
def test_emulated_cuda_topk_tile_paths(emu_ops, emu_probe, dtype, d, path, copy_bytes):
    """Each way of filling the tiles against the float64 reference, exactly: N = 70 and
    M = 150 (partial row block and column tile), ties and late duplicates, self exclusion,
    k > 32 and k = M (padding)."""
    _, tc, _ = emu_ops
    gen = torch.Generator().manual_seed(31 + d + (dtype == torch.float64))
    x, y = _int_rows_with_late_duplicates(gen, d, dtype)
    for k in (40, 150):
        poison((70, k), dtype=dtype)
        idx, val = tc.topk(x, y, k, True, None, None)
        assert emu_probe.path(dtype, d) == path
        if copy_bytes is not None:
            copies = emu_probe.copies()
            assert copies[copy_bytes] > 0 and sum(copies.values()) == copies[copy_bytes]
        ri, rv = topk_reference(x, y, k, True)
        assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    assert bool((idx[:, -1] == -1).all()) and bool(torch.isneginf(val[:, -1]).all())


@pytest.mark.parametrize(
    "dtype,tf32", [(torch.float32, False), (torch.float64, False), (torch.float32, True)]
)
def test_emulated_cuda_topk_same_bits_every_way(emu_ops, emu_probe, dtype, tf32):
    """Random data (no ties), d = 64: resident tiles by 16-byte copies, by one-element copies
    (x and y one element off a 16-byte boundary) and, on a device with 48 KB of shared
    memory, the sliced path give the same bits: every path sums each score over the depth in
    the same order."""
    _, tc, _ = emu_ops
    gen = torch.Generator().manual_seed(32)
    n, m, d = 70, 150, 64
    x = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64).to(dtype)
    run = tc.topk_candidates if tf32 else tc.topk_exact

    want = run(x, y, 12, True, None, None)
    assert emu_probe.path(dtype, d) == "resident" and emu_probe.copies()[16] > 0
    xs, ys = misaligned(x), misaligned(y)
    assert xs.data_ptr() % 16 != 0 and ys.data_ptr() % 16 != 0
    got = run(xs, ys, 12, True, None, None)
    assert emu_probe.path(dtype, d) == "resident" and emu_probe.copies()[16] == 0
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    old = emu_probe.lib.slifmr_emu_set_smem_optin(48 * 1024)
    try:
        got = run(x, y, 12, True, None, None)
    finally:
        emu_probe.lib.slifmr_emu_set_smem_optin(old)
    assert emu_probe.path(dtype, d) == "sliced"
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if not tf32:
        ri, rv = topk_reference(x, y, 12, True)
        assert torch.equal(want[0], ri)
        torch.testing.assert_close(
            want[1].double(),
            rv,
            rtol=1e-5 if dtype == torch.float32 else 1e-13,
            atol=1e-5 if dtype == torch.float32 else 1e-13,
        )
