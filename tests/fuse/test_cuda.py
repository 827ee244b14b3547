"""The CUDA fuse_views kernels (csrc/fuse) run on the CPU through the emulator
(tests/cuda_emu.py), behind the real binding and slifmr_kernels/fuse/cuda.py, against
z + sum alpha_k F.normalize(v_k) in float64 and its autograd gradients: clamped rows, register
and streaming paths, aligned and misaligned rows, partial gradients, no rows, the op's
autograd, and the binding's argument checks."""

import pytest
import torch

from slifmr_kernels.testing import fuse_views_formula
from tests.helpers import misaligned, poison


# fuse_views (csrc/fuse): against the float64 definition and its autograd gradients
def _fuse_inputs(gen, n, V, d, dtype):
    """z, alpha, views of ``dtype`` with a zero row, a row with 0 < |v| < eps (clamped: its
    gradient keeps no projection term, and that term would not vanish there) and a view
    whose norm is just above eps."""
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    views = torch.randn(n, V * d, generator=gen, dtype=torch.float64) * 3
    alpha = torch.randn(V, generator=gen, dtype=torch.float64)
    if n >= 3:
        views[0, :d] = 0.0
        tiny = views[n // 2, (V - 1) * d :]
        views[n // 2, (V - 1) * d :] = tiny / tiny.norm() * 0.5e-12
        near = views[n - 1, :d]
        views[n - 1, :d] = near / near.norm() * 4e-12
    return z.to(dtype), alpha.to(dtype), views.to(dtype)


def _fuse_want(z, alpha, views, g):
    """The float64 definition on the same (rounded) inputs: out, den, dalpha, dviews by
    autograd, and the scales the errors are measured against: per row of out |z_i| +
    sum_k |alpha_k| (normalised rows have norm <= 1), per (row, view) of dviews
    |alpha_k| / den_ik * |g_i| (the size of its terms), per view of dalpha sum_i |s_ik|."""
    z, alpha, views = (t.detach().double().requires_grad_() for t in (z, alpha, views))
    out = fuse_views_formula(z, alpha, views)
    dalpha, dviews = torch.autograd.grad(out, (alpha, views), g.double())
    n, d, V = z.shape[0], z.shape[1], alpha.numel()
    z, alpha, v = z.detach(), alpha.detach(), views.detach().view(n, V, d)
    den = v.norm(dim=2).clamp_min(1e-12)
    gn = g.double().norm(dim=1)
    scale_out = z.norm(dim=1) + alpha.abs().sum()
    scale_dv = alpha.abs()[None, :] / den * gn[:, None]
    s_abs = ((v / den[..., None]) * g.double()[:, None, :]).sum(2).abs().sum(0)
    return out.detach(), den, dalpha, dviews, scale_out, scale_dv, s_abs


def _scaled_err(got, want, scale):
    """Largest |got_r - want_r| / scale_r over the rows r of the (R, ...) tensors."""
    if want.numel() == 0:
        return 0.0
    r = scale.numel()
    diff = (got.double().reshape(r, -1) - want.reshape(r, -1)).norm(dim=1)
    return float((diff / scale.reshape(r)).max())


_FUSE_TOL = {torch.float32: 2e-6, torch.float64: 1e-13}


# (n, V, d): every path of the kernel (runs of W columns: W = 4 fp32 / 2 fp64 when d allows,
# else 1; G lanes a row; NV runs a lane in registers, or the streaming path), each over >= 3
# row blocks (256 / G rows a block):
#   d = 1: G = 1; d = 5: W = 1, G = 8; d = 64: W > 1, G = 16 (fp32) / 32 (fp64), NV = 1;
#   d = 65: W = 1, NV = 4; d = 201: W = 1, NV = 8; d = 256: NV = 2 (fp32) / 4 (fp64);
#   d = 1024: NV = 8 (fp32) / streaming (fp64); d = 301 and 1028: streaming, W = 1 / W > 1
_FUSE_SHAPES = [
    (600, 1, 1),
    (600, 3, 1),
    (70, 1, 5),
    (70, 3, 5),
    (40, 1, 64),
    (40, 3, 64),
    (20, 1, 65),
    (20, 3, 65),
    (20, 2, 201),
    (20, 2, 256),
    (20, 2, 1024),
    (20, 3, 301),
    (20, 2, 1028),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,V,d", _FUSE_SHAPES)
def test_emulated_cuda_fuse(emu_ops, dtype, n, V, d):
    *_, fc = emu_ops
    from slifmr_kernels.fuse.op import NORM_EPS

    gen = torch.Generator().manual_seed(1000 * d + 10 * V + (dtype == torch.float64))
    z, alpha, views = _fuse_inputs(gen, n, V, d, dtype)
    g = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    want_out, want_den, want_da, want_dv, sc_out, sc_dv, s_abs = _fuse_want(z, alpha, views, g)
    tol = _FUSE_TOL[dtype]
    poison((n, d), (n, V), dtype=dtype)
    out, den = fc.fuse_forward(z, alpha, views, NORM_EPS)
    assert out.dtype == dtype and out.shape == (n, d)
    assert den.dtype == dtype and den.shape == (n, V)
    assert _scaled_err(out, want_out, sc_out) < tol
    torch.testing.assert_close(den.double(), want_den, rtol=tol, atol=0)
    eps = torch.tensor(NORM_EPS, dtype=dtype)
    assert den[0, 0] == eps and den[n // 2, V - 1] == eps and den[n - 1, 0] > eps  # clamped
    poison((n, V * d), dtype=dtype)
    dalpha, dviews = fc.fuse_backward(g, alpha, views, den, NORM_EPS, True, True)
    assert dalpha.dtype == dtype and dalpha.shape == (V,)
    assert dviews.dtype == dtype and dviews.shape == (n, V * d)
    # per (row, view): the clamped rows' gradients are ~1e12 and the others O(1)
    assert _scaled_err(dviews, want_dv, sc_dv) < tol * 10
    assert float(((dalpha.double() - want_da).abs() / s_abs).max()) < tol * 10
    # no atomics: the same bits on a second run
    out2, den2 = fc.fuse_forward(z, alpha, views, NORM_EPS)
    da2, dv2 = fc.fuse_backward(g, alpha, views, den, NORM_EPS, True, True)
    assert torch.equal(out, out2) and torch.equal(den, den2)
    assert torch.equal(dalpha, da2) and torch.equal(dviews, dv2)


def test_emulated_cuda_fuse_partial_gradients_and_empty(emu_ops):
    *_, fc = emu_ops
    from slifmr_kernels.fuse.op import NORM_EPS

    gen = torch.Generator().manual_seed(41)
    n, V, d = 50, 3, 8
    z, alpha, views = _fuse_inputs(gen, n, V, d, torch.float32)
    g = torch.randn(n, d, generator=gen)
    _, den = fc.fuse_forward(z, alpha, views, NORM_EPS)
    da, dv = fc.fuse_backward(g, alpha, views, den, NORM_EPS, True, True)
    a_only = fc.fuse_backward(g, alpha, views, den, NORM_EPS, True, False)
    v_only = fc.fuse_backward(g, alpha, views, den, NORM_EPS, False, True)
    neither = fc.fuse_backward(g, alpha, views, den, NORM_EPS, False, False)
    assert torch.equal(a_only[0], da) and a_only[1].numel() == 0
    assert torch.equal(v_only[1], dv) and v_only[0].numel() == 0
    assert neither[0].numel() == 0 and neither[1].numel() == 0
    # no rows: empty outputs, and alpha's gradient is zero (not left uninitialised)
    e = torch.empty(0, d)
    poison((V,), dtype=torch.float32)
    out, den0 = fc.fuse_forward(e, alpha, torch.empty(0, V * d), NORM_EPS)
    assert out.shape == (0, d) and den0.shape == (0, V)
    da0, dv0 = fc.fuse_backward(e, alpha, torch.empty(0, V * d), den0, NORM_EPS, True, True)
    assert torch.equal(da0, torch.zeros(V)) and dv0.shape == (0, V * d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_cuda_fuse_misaligned_rows_same_bits(emu_ops, dtype):
    """Tensors that start 4 / 8 bytes off a 16-byte boundary take the scalar loads of the
    16-byte runs: the same work split and arithmetic, so the same bits."""
    *_, fc = emu_ops
    from slifmr_kernels.fuse.op import NORM_EPS

    gen = torch.Generator().manual_seed(42)
    n, V, d = 40, 3, 64
    z, alpha, views = _fuse_inputs(gen, n, V, d, dtype)
    g = torch.randn(n, d, generator=gen, dtype=dtype)

    zs, vs, gs = misaligned(z), misaligned(views), misaligned(g)
    assert vs.data_ptr() % 16 != 0 and vs.is_contiguous()
    out, den = fc.fuse_forward(z, alpha, views, NORM_EPS)
    out_s, den_s = fc.fuse_forward(zs, alpha, vs, NORM_EPS)
    assert torch.equal(out, out_s) and torch.equal(den, den_s)
    da, dv = fc.fuse_backward(g, alpha, views, den, NORM_EPS, True, True)
    da_s, dv_s = fc.fuse_backward(gs, alpha, vs, den, NORM_EPS, True, True)
    assert torch.equal(da, da_s) and torch.equal(dv, dv_s)


def test_emulated_cuda_fuse_through_the_op(emu_ops, monkeypatch):
    """slifmr::fuse_views with backend "cuda" served by the emulated kernels: autograd through
    the op matches the plain formula's, and gradcheck passes."""
    *_, fc = emu_ops
    from slifmr_kernels import backends
    from slifmr_kernels.fuse.op import NORM_EPS, _fuse_op

    monkeypatch.setitem(backends._cache, ("fuse", "cuda"), fc)
    gen = torch.Generator().manual_seed(43)
    z, alpha, views = (t.requires_grad_() for t in _fuse_inputs(gen, 30, 2, 7, torch.float64))
    out, _ = _fuse_op(z, alpha, views, NORM_EPS, "cuda")
    g = torch.randn(30, 7, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, (z, alpha, views), g)
    ref = fuse_views_formula(z, alpha, views)
    want = torch.autograd.grad(ref, (z, alpha, views), g)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    # gradcheck away from the clamp (finite differences cannot cross it)
    small = [
        torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
        for shape in ((6, 3), (2,), (6, 6))
    ]
    assert torch.autograd.gradcheck(lambda *a: _fuse_op(*a, NORM_EPS, "cuda")[0], small)


def test_emulated_cuda_fuse_argument_checks(emu_ops):
    ops = torch.ops.slifmr_cuda
    z, alpha, views = torch.randn(4, 3), torch.ones(2), torch.randn(4, 6)
    with pytest.raises(RuntimeError, match=r"views must be \(N, V\*d\) = \(4, 6\)"):
        ops.fuse_forward(z, alpha, views[:, :5].contiguous(), 1e-12, 0)
    with pytest.raises(RuntimeError, match="alpha must have the dtype of z"):
        ops.fuse_forward(z, alpha.double(), views, 1e-12, 0)
    with pytest.raises(RuntimeError, match="z must be float32 or float64"):
        ops.fuse_forward(z.long(), alpha, views, 1e-12, 0)
    with pytest.raises(RuntimeError, match="views must be contiguous"):
        ops.fuse_forward(z, alpha, views.t().contiguous().t(), 1e-12, 0)
    with pytest.raises(RuntimeError, match=r"den must be \(N, V\) = \(4, 2\)"):
        ops.fuse_backward(z, alpha, views, torch.ones(4, 3), 1e-12, True, True, 0)
