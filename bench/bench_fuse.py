"""pytest-benchmark suite for fuse_views on CPU: the Numba kernel against the torch forms.

The shape is the SLIF-MR user side at 100k items: N = 300,000 rows (users + items), V = 3
views, d = 64, forward and backward (what one training step pays twice)::

    flock -x /tmp/slifmr-cpu.lock python -m pytest bench/bench_fuse.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

``SLIFMR_BENCH_SCALE`` (default 1.0) scales N, e.g. 0.1 for a quick smoke run. Each
implementation is checked once against the plain formula, so a fast wrong kernel fails.
Bytes per call (the floor): forward reads z and the views and writes Z, 4·N·(V + 2)·d; backward
reads g and the views and writes their gradients, 4·N·(2V + 1)·d.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("pytest_benchmark")
pytest.importorskip("numba", reason="the numba backend is optional (pip install numba)")
sk = pytest.importorskip("slifmr_kernels")
from slifmr_kernels.testing import fuse_views_formula  # noqa: E402

N = max(1000, int(300_000 * float(os.environ.get("SLIFMR_BENCH_SCALE", "1.0"))))
V, D = 3, 64
ROUNDS = dict(rounds=9, warmup_rounds=2, iterations=1)


IMPLS = {
    "sk_fuse_views_numba": lambda z, a, v: sk.fuse_views(z, a, v, backend="numba"),
    "sk_fuse_views_torch": lambda z, a, v: sk.fuse_views(z, a, v, backend="torch"),
    "plain_F_normalize": fuse_views_formula,  # autograd keeps the normalised copies
}


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(N, D, generator=gen),
        torch.rand(V, generator=gen) + 0.5,
        torch.randn(N, V * D, generator=gen),
        torch.randn(N, D, generator=gen),
    )


@pytest.mark.parametrize("impl", list(IMPLS))
def test_fuse_forward_backward(benchmark, inputs, impl):
    benchmark.group = f"fuse_views forward+backward (N={N}, V={V}, d={D})"
    z0, a0, v0, g = inputs

    def fn():
        z, a, v = (t.detach().requires_grad_() for t in (z0, a0, v0))
        out = IMPLS[impl](z, a, v)
        out.backward(g)
        return out, a.grad, v.grad

    got = fn()
    z, a, v = (t.detach().requires_grad_() for t in (z0, a0, v0))
    ref = fuse_views_formula(z, a, v)
    ref.backward(g)
    for x, y in zip(got, (ref, a.grad, v.grad)):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    benchmark.pedantic(fn, **ROUNDS)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_fuse_numba_kernels_on_preallocated_outputs(benchmark, inputs, direction):
    """The Numba kernels alone, writing into outputs allocated once: the wrappers' difference
    is the first-touch cost of fresh output memory. Floor: forward 4·N·(V + 2)·d bytes,
    backward 4·N·(2V + 1)·d."""
    import numpy as np

    from slifmr_kernels.fuse import numba as nb

    benchmark.group = f"fuse_views numba kernels alone (N={N}, V={V}, d={D})"
    z, a, v, g = (t.numpy() for t in inputs)
    out, den = np.empty_like(z), np.empty((N, V), np.float32)
    nb._forward_kernel(z, a, v, 1e-12, out, den)
    want_out, want_den = nb.fuse_forward(*(torch.from_numpy(t) for t in (z, a, v)), 1e-12)
    np.testing.assert_array_equal(out, want_out.numpy())
    if direction == "forward":
        fn = lambda: nb._forward_kernel(z, a, v, 1e-12, out, den)  # noqa: E731
    else:
        dv = np.empty_like(v)
        part = np.empty(((N + nb.BLOCK_ROWS - 1) // nb.BLOCK_ROWS, V))
        fn = lambda: nb._backward_kernel(g, a, v, den, 1e-12, True, dv, part)  # noqa: E731
        fn()
        _, want_dv = nb.fuse_backward(*(torch.from_numpy(t) for t in (g, a, v, den)), 1e-12, False, True)
        np.testing.assert_array_equal(dv, want_dv.numpy())
    benchmark.pedantic(fn, **ROUNDS)
