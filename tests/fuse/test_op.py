"""fuse_views on every backend against z + sum alpha_k * F.normalize(v_k) in float64.

Runs on each (device, backend) pair this machine has (conftest): torch, numba, and triton
through the interpreter on CPU. Edge cases: zero rows and rows under eps (the clamped norm),
one view, d = 1 and d wider than a power of two, a single row, rows spread over several
blocks, no views, no rows; gradients by gradcheck; the same bits on every run and thread
count.
"""

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels.backends import BackendUnavailable
from slifmr_kernels.testing import fuse_views_formula as _plain

OP = "fuse"
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _inputs(gen, n, V, d, dtype, device, zero_rows=True):
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    views = torch.randn(n, V * d, generator=gen, dtype=torch.float64) * 3
    alpha = torch.randn(V, generator=gen, dtype=torch.float64)
    if zero_rows and n > 2:
        views[0, :d] = 0.0  # a zero row: divided by eps, not by its norm
        views[n // 2, (V - 1) * d :] = 0.0
    return [t.to(device, dtype).requires_grad_() for t in (z, alpha, views)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,V,d", [(1, 1, 1), (7, 3, 5), (300, 2, 64), (1000, 4, 65), (513, 3, 17)])
def test_matches_the_plain_formula(device, backend, dtype, n, V, d, gen):
    z, alpha, views = _inputs(gen, n, V, d, dtype, device)
    out = sk.fuse_views(z, alpha, views, backend=backend)
    assert sk.last_backend("fuse") == backend
    assert out.dtype == dtype and out.shape == (n, d) and out.device == z.device
    exact = [t.detach().double().requires_grad_() for t in (z, alpha, views)]
    ref = _plain(*exact)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    g = torch.randn(n, d, generator=gen, dtype=torch.float64).to(device)
    got = torch.autograd.grad(out, (z, alpha, views), g.to(dtype))
    want = torch.autograd.grad(ref, exact, g)
    for name, a, b in zip(("dz", "dalpha", "dviews"), got, want):
        assert a.dtype == dtype, name
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(
            a.double(), b, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 10 * scale * n, msg=name
        )


def test_gradcheck(device, backend, gen):
    z, alpha, views = _inputs(gen, 9, 3, 4, torch.float64, device, zero_rows=False)
    assert torch.autograd.gradcheck(lambda *a: sk.fuse_views(*a, backend=backend), (z, alpha, views))


def test_clamped_rows(device, backend, gen):
    """Rows with norm <= eps are divided by eps (F.normalize), and their view gradient is
    alpha / eps * g with no projection term (the denominator is constant there)."""
    d = 4
    z = torch.zeros(3, d, dtype=torch.float64, device=device)
    views = torch.tensor(
        [[0.0] * d + [1e-14] * d, [0.0] * d + [3.0, 0, 0, 4.0], [1.0, 0, 0, 0] + [0.0] * d],
        dtype=torch.float64,
        device=device,
    )
    alpha = torch.tensor([2.0, 1.0], dtype=torch.float64, device=device)
    views.requires_grad_()
    out = sk.fuse_views(z, alpha, views, backend=backend)
    torch.testing.assert_close(out, _plain(z, alpha, views))
    g = torch.ones(3, d, dtype=torch.float64, device=device)
    (dv,) = torch.autograd.grad(out, (views,), g)
    torch.testing.assert_close(dv[0, :d], torch.full((d,), 2.0 / 1e-12, dtype=torch.float64, device=device))


def test_partial_gradients(device, backend, gen):
    """alpha as a buffer (no gradient), or the views as constants."""
    z, alpha, views = _inputs(gen, 40, 3, 8, torch.float64, device)
    out = sk.fuse_views(z, alpha.detach(), views, backend=backend)
    dz, dv = torch.autograd.grad(out.sum(), (z, views))
    ref = torch.autograd.grad(_plain(z, alpha.detach(), views).sum(), (z, views))
    torch.testing.assert_close(dv, ref[1])
    torch.testing.assert_close(dz, ref[0])
    out = sk.fuse_views(z, alpha, views.detach(), backend=backend)
    (da,) = torch.autograd.grad(out.sum(), (alpha,))
    torch.testing.assert_close(da, torch.autograd.grad(_plain(z, alpha, views.detach()).sum(), (alpha,))[0])


def test_same_bits_every_run(device, backend, gen):
    z, alpha, views = _inputs(gen, 2000, 3, 24, torch.float32, device)
    g = torch.randn(2000, 24, generator=gen).to(device)
    runs = []
    for _ in range(2):
        out = sk.fuse_views(z, alpha, views, backend=backend)
        runs.append((out, *torch.autograd.grad(out, (alpha, views), g)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_numba_bits_do_not_depend_on_threads(gen):
    numba = pytest.importorskip("numba")
    z, alpha, views = _inputs(gen, 3000, 3, 16, torch.float32, "cpu")
    g = torch.randn(3000, 16, generator=gen)
    runs = []
    old = numba.get_num_threads()
    try:
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(t)
            out = sk.fuse_views(z, alpha, views, backend="numba")
            runs.append((out, *torch.autograd.grad(out, (alpha, views), g)))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(runs[0], runs[-1]):
        assert torch.equal(a, b)


def test_empty_inputs(device, backend):
    for n, V, d in [(0, 2, 4), (5, 0, 4), (5, 2, 0)]:
        z = torch.randn(n, d, device=device, requires_grad=True)
        alpha = torch.ones(V, device=device, requires_grad=True)
        views = torch.randn(n, V * d, device=device, requires_grad=True)
        out = sk.fuse_views(z, alpha, views, backend=backend)
        torch.testing.assert_close(out, z)
        dz, da, dv = torch.autograd.grad(out.sum(), (z, alpha, views))
        assert torch.equal(dz, torch.ones_like(z)) and not da.any() and not dv.any()


def test_bad_arguments():
    z, alpha, views = torch.randn(4, 3), torch.ones(2), torch.randn(4, 6)
    with pytest.raises(ValueError, match="views must be"):
        sk.fuse_views(z, alpha, views[:, :5])
    with pytest.raises(ValueError, match="views must be"):
        sk.fuse_views(z, torch.ones(3), views)
    with pytest.raises(TypeError, match="views must have z's dtype"):
        sk.fuse_views(z, alpha, views.double())
    with pytest.raises(ValueError, match="alpha must be 1-D"):
        sk.fuse_views(z, alpha[None], views)
    with pytest.raises(TypeError, match="z must have dtype"):
        sk.fuse_views(z.long(), alpha, views)
    with pytest.raises(BackendUnavailable):
        sk.fuse_views(z, alpha, views, backend="cuda")


def test_opcheck_and_compile(gen):
    from slifmr_kernels.fuse.op import NORM_EPS, _fuse_op

    z, alpha, views = _inputs(gen, 10, 2, 3, torch.float32, "cpu")
    torch.library.opcheck(_fuse_op, (z, alpha, views, NORM_EPS, "torch"))

    @torch.compile(backend="eager", fullgraph=True)
    def fused(z, alpha, views):
        return sk.fuse_views(z, alpha, views, backend="torch") * 2

    torch.testing.assert_close(fused(z, alpha, views), 2 * sk.fuse_views(z, alpha, views))
