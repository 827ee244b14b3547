"""slifmr_kernels/topk/rerank.py: exact top-k from approximate candidates, on the CPU.

The GPU backends feed it TF32 tensor-core candidates. Here the candidates come from a stand-in
with the worst error the bound allows: exact scores plus adversarial noise of up to 0.99 eps_i,
or TF32-rounded operands. Whatever the noise, the result must equal the exact reference (ids
within tied scores, values), exclusions and self must never come back, and rows whose
certificate fails must go through the exact fallback.
"""

import pytest
import torch

from slifmr_kernels.testing import allowed_mask, random_graph, round_tf32
from slifmr_kernels.topk import reference as ref
from slifmr_kernels.topk import rerank


def noisy_candidates(gen, mode):
    """A candidates_fn whose scores are wrong by up to the bound: 'noise' adds uniform
    adversarial noise in [-0.99, 0.99] eps_i; 'tf32' scores TF32-rounded operands."""
    calls = []

    def fn(x, y, c, exclude_self, ptr, idx):
        calls.append(c)
        s = x.double() @ y.double().T
        if mode == "noise":
            eps = rerank.error_bound(x, y).double()[:, None]
            s = s + (2 * torch.rand(s.shape, generator=gen, dtype=torch.float64) - 1) * 0.99 * eps
        elif mode == "tf32":
            s = (round_tf32(x) @ round_tf32(y).T).double()
        s = s.masked_fill(~allowed_mask(x.shape[0], y.shape[0], exclude_self, ptr, idx), float("-inf"))
        v, i = torch.sort(s, dim=1, descending=True, stable=True)
        v, i = v[:, :c], i[:, :c]
        i = torch.where(torch.isinf(v), -1, i)
        return i, v.to(x.dtype)

    return fn, calls


def _check_exact(idx, val, x, y, k, exclude_self, ptr, exi):
    r_i, r_v = ref.topk(x, y, k, exclude_self, ptr, exi)
    torch.testing.assert_close(val, r_v, rtol=1e-5, atol=1e-5)
    s = x.double() @ y.double().T
    for i in range(x.shape[0]):
        got = idx[i][idx[i] >= 0]
        assert set(got.tolist()) == set(r_i[i][r_i[i] >= 0].tolist()) or bool(
            # ids may differ only inside a tie at the k-th score
            (s[i, got] >= r_v[i][r_i[i] >= 0].double().min() - 1e-5).all()
        )
    assert bool(
        allowed_mask(x.shape[0], y.shape[0], exclude_self, ptr, exi)
        .gather(1, idx.clamp_min(0))[idx >= 0]
        .all()
    )


@pytest.mark.parametrize("mode", ["noise", "tf32"])
@pytest.mark.parametrize("n, m, d, k", [(97, 97, 16, 10), (40, 300, 7, 1), (33, 41, 64, 20), (12, 9, 5, 9)])
def test_exact_despite_score_error(gen, mode, n, m, d, k):
    x = torch.randn(n, d, generator=gen)
    y = x if n == m else torch.randn(m, d, generator=gen)
    cand, calls = noisy_candidates(gen, mode)
    idx, val = rerank.topk_from_candidates(cand, ref.topk, x, y, k, n == m, None, None)
    assert calls == [rerank.candidate_count(k, m)]
    _check_exact(idx, val, x, y, k, n == m, None, None)


def test_near_duplicates_fall_back_and_stay_exact(gen):
    # 2 distinct vectors, each repeated ~60 times (more than C = 26) with tiny jitter: every
    # row's k-th score is within the error bound of the C-th, so certificates fail and the
    # exact kernel decides.
    base = torch.randn(2, 32, generator=gen)
    x = base[torch.randint(0, 2, (120,), generator=gen)] + 1e-6 * torch.randn(120, 32, generator=gen)
    cand, _ = noisy_candidates(gen, "noise")
    idx, val = rerank.topk_from_candidates(cand, ref.topk, x, x, 10, True, None, None)
    assert rerank.last_fallback_rows() > 0
    _check_exact(idx, val, x, x, 10, True, None, None)


def test_exclusions_and_self_in_fallback_rows(gen, monkeypatch):
    n, m = 50, 80
    x = torch.randn(n, 12, generator=gen)
    y = torch.randn(m, 12, generator=gen)
    excl = random_graph(n, m, n * 6, generator=gen, empty_rows=0.3)
    ptr, exi = excl.indptr, excl.indices
    # force every row through the fallback: an error bound larger than any score gap
    monkeypatch.setattr(rerank, "error_bound", lambda a, b: torch.full((a.shape[0],), 1e9))
    cand, _ = noisy_candidates(gen, "exact")
    for exclude_self in (False, True):
        idx, val = rerank.topk_from_candidates(cand, ref.topk, x, y, 7, exclude_self, ptr, exi)
        assert rerank.last_fallback_rows() == n
        _check_exact(idx, val, x, y, 7, exclude_self, ptr, exi)


def test_complete_lists_need_no_certificate(gen):
    # fewer allowed columns than C: the candidate list holds them all, so no row falls back
    x = torch.randn(10, 4, generator=gen)
    cand, _ = noisy_candidates(gen, "noise")
    idx, val = rerank.topk_from_candidates(cand, ref.topk, x, x, 10, True, None, None)
    assert rerank.last_fallback_rows() == 0
    assert bool((idx[:, 9:] == -1).all()) and bool(torch.isinf(val[:, 9:]).all())
    _check_exact(idx, val, x, x, 10, True, None, None)


def test_subset_exclusions():
    ptr = torch.tensor([0, 2, 2, 5])
    exi = torch.tensor([4, 1, 0, 3, 3], dtype=torch.int32)
    sp, si = rerank.subset_exclusions(torch.tensor([2, 1]), ptr, exi, add_self=True)
    assert sp.tolist() == [0, 4, 5] and si.tolist() == [0, 3, 3, 2, 1]
    sp, si = rerank.subset_exclusions(torch.tensor([0]), None, None, add_self=True)
    assert sp.tolist() == [0, 1] and si.tolist() == [0]
    assert rerank.subset_exclusions(torch.tensor([0]), None, None, add_self=False) == (None, None)
    sp, si = rerank.subset_exclusions(torch.tensor([1, 0]), ptr, exi, add_self=False)
    assert sp.tolist() == [0, 0, 2] and si.tolist() == [4, 1]


def test_candidate_count_and_switch(monkeypatch):
    cc = {k: rerank.candidate_count(k, 10**6) for k in (1, 2, 10, 11, 20, 64)}
    assert cc == {1: 2, 2: 4, 10: 16, 11: 32, 20: 32, 64: 128}
    assert rerank.candidate_count(5, 6) == 6
    f32, f64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    monkeypatch.delenv("SLIFMR_TOPK_TF32", raising=False)
    assert rerank.tf32_enabled(f32, True) and not rerank.tf32_enabled(f32, False)
    assert not rerank.tf32_enabled(f64, True)
    monkeypatch.setenv("SLIFMR_TOPK_TF32", "0")
    assert not rerank.tf32_enabled(f32, True)
    monkeypatch.setenv("SLIFMR_TOPK_TF32", "1")
    assert rerank.tf32_enabled(f32, False) and not rerank.tf32_enabled(f64, False)


def test_nothing_to_rank_goes_to_the_exact_kernel(gen):
    def no_candidates(*args):
        raise AssertionError("no candidate pass for an empty problem")

    x = torch.randn(4, 3, generator=gen)
    for a, b, k in ((x[:0], x, 2), (x, x[:0], 0), (x, x, 0)):
        idx, val = rerank.topk_from_candidates(no_candidates, ref.topk, a, b, k, False, None, None)
        r_i, r_v = ref.topk(a, b, k, False, None, None)
        assert torch.equal(idx, r_i) and torch.equal(val, r_v)
