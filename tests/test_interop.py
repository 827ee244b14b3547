"""slifmr_kernels/_interop.py: CuPy / DLPack interop, exercised with NumPy and SciPy, which
expose the same protocols (no CuPy needed)."""

import numpy as np
import pytest
import torch


def test_interop_dense_zero_copy():
    from slifmr_kernels import _interop

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = _interop.to_torch(a)
    assert t.shape == (3, 4) and t.dtype == torch.float32
    a[1, 2] = -5.0  # shared memory: the write is visible through the tensor
    assert float(t[1, 2]) == -5.0
    with pytest.raises(TypeError, match="__dlpack__"):
        _interop.to_torch([1, 2, 3])
    with pytest.raises((ImportError, ValueError)):
        _interop.to_cupy(torch.zeros(2))  # no CuPy here, or not a CUDA tensor


def test_interop_csr_arrays_and_graph():
    import scipy.sparse as sp

    from slifmr_kernels import _interop

    m = sp.random(9, 7, density=0.3, format="csr", dtype=np.float32, random_state=0)
    indptr, indices, values, shape = _interop.csr_arrays_from_cupy(m)
    assert shape == (9, 7) and indptr.dtype == torch.int64
    assert indices.dtype == torch.int32 and values.dtype == torch.float32
    assert values.data_ptr() == m.data.ctypes.data  # no copy
    assert indices.data_ptr() == m.indices.ctypes.data
    assert torch.equal(indptr, torch.from_numpy(m.indptr.astype(np.int64)))
    g = _interop.csr_graph_from_cupy(m)
    assert g.shape == (9, 7)
    np.testing.assert_allclose(g.to_scipy().toarray(), m.toarray())
    with pytest.raises(TypeError, match="CSR"):
        _interop.csr_arrays_from_cupy(m.tocoo())
