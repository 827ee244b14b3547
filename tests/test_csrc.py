"""CUDA C++ sources and the GPU-side Python helpers, on a machine without a GPU.

* tools/check_csrc.sh compiles every csrc/*.cu for sm_90 + sm_80 and builds, links and loads
  the extension against libtorch (skipped without nvcc); it also fails on a broken source.
* The loaded library's op schemas are driven through the Python backend modules
  (slifmr_kernels/{propagate,topk}/cuda.py) with stand-in CPU kernels: the arguments the
  wrappers pass must match the C++ schemas exactly.
* The loader's error path: a clear ImportError when the extension is absent.
* CuPy/DLPack interop (importable without CuPy) and the non-GPU parts of bench/gpu_check.py.
"""
import importlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def _extension_installed() -> bool:
    try:
        importlib.import_module("slifmr_kernels._C")
        return True
    except ImportError:
        return False


@pytest.fixture
def fresh_cuda_modules():
    """Forget cached backend modules / loaded ops around a test."""
    from slifmr_kernels import _cuda
    names = ["slifmr_kernels.propagate.cuda", "slifmr_kernels.topk.cuda"]
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    saved_ops = _cuda._ops
    _cuda._ops = None
    yield _cuda
    for n in names:
        sys.modules.pop(n, None)
    sys.modules.update(saved)
    _cuda._ops = saved_ops


# ---------------------------------------------------------------------------------------------
# compile / link / load
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """tools/check_csrc.sh --link; returns the path of the linked _C.so."""
    if NVCC is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("csrc")
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "check_csrc.sh"), "--link",
                        "--keep", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check_csrc: OK" in r.stdout
    for f in ("csrc/propagate/propagate.cu", "csrc/topk/topk.cu"):
        assert f"nvcc sm_90+sm_80  {f}" in r.stdout
    return str(out / "_C.so")


@needs_nvcc
def test_check_csrc_compiles_links_and_loads(built_library):
    assert os.path.exists(built_library)


@needs_nvcc
def test_check_csrc_fails_on_a_broken_source(tmp_path):
    """The check must be able to fail: a tree with a .cu that does not compile."""
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(ROOT, "tools", "check_csrc.sh"), tmp_path / "tools")
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "bad.cu").write_text(
        "__global__ void k(float* p) { p[threadIdx.x] = undeclared_name; }\n")
    (tmp_path / "csrc" / "ok.cpp").write_text("int f() { return 1; }\n")
    r = subprocess.run(["bash", str(tmp_path / "tools" / "check_csrc.sh")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "FAIL" in r.stdout and "bad.cu" in r.stdout


@needs_nvcc
def test_wrappers_match_the_cpp_schemas(built_library, fresh_cuda_modules, monkeypatch):
    """Drive the CUDA backend modules through the real dispatcher schemas with stand-in CPU
    kernels (nothing CUDA runs here): wrong arity, order or types would raise."""
    _cuda = fresh_cuda_modules
    monkeypatch.setenv("SLIFMR_CUDA_LIB", built_library)
    ops = _cuda.load_ops()
    assert all(hasattr(ops, n) for n in _cuda.OP_NAMES)
    seen = {}
    lib = torch.library.Library("slifmr_cuda", "IMPL")
    try:
        def prop(indptr, indices, values, relation, table, x, n_rows, stream):
            seen["propagate"] = (relation is not None, table is not None, n_rows, stream)
            return x.new_full((n_rows, x.shape[1]), 7.0)

        def prop_bwd(indptr_t, indices_t, values_t, relation_t, table, dy, x, num_relations,
                     need_dx, need_g, stream):
            seen["backward"] = (num_relations, need_dx, need_g)
            return x.new_ones(x.shape), x.new_ones(num_relations, x.shape[1])

        def topk(x, y, k, exclude_self, excl_indptr, excl_indices, stream):
            seen["topk"] = (k, exclude_self, excl_indptr is not None)
            return (torch.zeros(x.shape[0], k, dtype=torch.int64),
                    x.new_zeros(x.shape[0], k))

        lib.impl("propagate", prop, "CPU")
        lib.impl("propagate_backward", prop_bwd, "CPU")
        lib.impl("topk", topk, "CPU")
        monkeypatch.setattr(_cuda, "stream_of", lambda t: 1234)
        from slifmr_kernels.propagate import cuda as pc
        from slifmr_kernels.topk import cuda as tc
        monkeypatch.setattr(pc, "stream_of", lambda t: 1234)
        monkeypatch.setattr(tc, "stream_of", lambda t: 1234)
        indptr = torch.tensor([0, 1, 2], dtype=torch.int64)
        indices = torch.tensor([1, 0], dtype=torch.int32)
        values = torch.ones(2)
        rel = torch.zeros(2, dtype=torch.int32)
        x = torch.randn(2, 3)
        table = torch.ones(1, 3)
        assert torch.equal(pc.spmm(indptr, indices, values, x, 2), torch.full((2, 3), 7.0))
        assert seen["propagate"] == (False, False, 2, 1234)
        pc.spmm_rel(indptr, indices, values, rel, table, x, 2)
        assert seen["propagate"] == (True, True, 2, 1234)
        dx, g = pc.spmm_rel_backward(indptr, indices, values, rel, table, x, x, 1, False, True)
        assert dx is None and g.shape == (1, 3) and seen["backward"] == (1, False, True)
        assert pc.spmm_rel_backward(indptr, indices, values, rel, table, x, x, 1,
                                    False, False) == (None, None)
        i, v = tc.topk(x, x, 2, True, indptr, indices)
        assert i.shape == (2, 2) and seen["topk"] == (2, True, True)
    finally:
        lib._destroy()


# ---------------------------------------------------------------------------------------------
# loader error path
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(_extension_installed(), reason="the CUDA extension is installed here")
def test_cuda_backend_import_error_is_clear(fresh_cuda_modules, monkeypatch):
    monkeypatch.delenv("SLIFMR_CUDA_LIB", raising=False)
    for mod in ("slifmr_kernels.propagate.cuda", "slifmr_kernels.topk.cuda"):
        with pytest.raises(ImportError, match="FORCE_CUDA=1 pip install --no-build-isolation"):
            importlib.import_module(mod)
        sys.modules.pop(mod, None)


def test_cuda_lib_env_pointing_nowhere(fresh_cuda_modules, monkeypatch, tmp_path):
    missing = str(tmp_path / "nope" / "_C.so")
    monkeypatch.setenv("SLIFMR_CUDA_LIB", missing)
    with pytest.raises(ImportError, match="nope"):
        fresh_cuda_modules.load_ops()


@pytest.mark.skipif(_extension_installed(), reason="the CUDA extension is installed here")
def test_registry_reports_cuda_unavailable():
    from slifmr_kernels.backends import BackendUnavailable, load
    with pytest.raises(BackendUnavailable, match="FORCE_CUDA=1"):
        load("topk", "cuda")


# ---------------------------------------------------------------------------------------------
# CuPy / DLPack interop (exercised with NumPy and SciPy, which expose the same protocols)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# bench/gpu_check.py without a GPU
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_gpu_check_help_and_args(gpu_check):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--out" in r.stdout
    a = gpu_check.parse_args(["--knn", "1000,2000", "--backends", "triton"])
    assert a.knn_sizes == [1000, 2000] and a.backend_list == ["triton"]
    assert a.edges == 20_000_000 and a.dim == 64
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", "/nonexistent"]) == 2  # refuses cleanly, writes nothing


def test_gpu_check_power_law_graph_and_transpose(gpu_check):
    indptr, indices, values, rel = gpu_check.power_law_csr(500, 4000, 3, seed=1)
    deg = indptr[1:] - indptr[:-1]
    assert int(indptr[-1]) == 4000 and indices.numel() == 4000
    assert int(deg.max()) > 20 * 4000 / 500  # heavy rows exist
    assert int((deg == 0).sum()) > 0  # and empty ones
    assert int(indices.max()) < 500 and int(rel.max()) < 3 and rel.dtype == torch.int32
    t = gpu_check.transpose_csr(indptr, indices, values, rel, 500)
    dense = torch.zeros(3, 500, 500, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(500), deg)
    dense.index_put_((rel.long(), rows, indices.long()), values.double(), accumulate=True)
    dense_t = torch.zeros(3, 500, 500, dtype=torch.float64)
    rows_t = torch.repeat_interleave(torch.arange(500), t[0][1:] - t[0][:-1])
    dense_t.index_put_((t[3].long(), rows_t, t[1].long()), t[2].double(), accumulate=True)
    assert torch.equal(dense_t, dense.transpose(1, 2))


def test_gpu_check_models_recall_and_report(gpu_check, tmp_path):
    comp, gath = gpu_check.propagate_bytes(10, 20, 100, 4, itemsize=4)
    # indptr 88 + edges 100 * 12 + x 20*4*4 + y 10*4*4 ; gathered: x per edge 100*16
    assert comp == 88 + 1200 + 320 + 160 and gath == 88 + 1200 + 1600 + 160
    assert gpu_check.knn_flops(3, 5, 7) == 210
    ref_i = torch.tensor([[0, 1], [2, 3]])
    ref_v = torch.tensor([[0.9, 0.5], [0.8, 0.7]])
    tie, exact = gpu_check.recall_with_ties(torch.tensor([[0, 4], [2, 3]]),
                                            torch.tensor([[0.9, 0.5], [0.8, 0.7]]),
                                            ref_i, ref_v)
    assert exact == 0.75 and tie == 1.0  # id 4 ties the k-th score: counted by the tie rule
    tie, _ = gpu_check.recall_with_ties(torch.tensor([[0, 4], [2, -1]]),
                                        torch.tensor([[0.9, 0.1], [0.8, float("-inf")]]),
                                        ref_i, ref_v)
    assert tie == 0.5
    assert gpu_check.knn_chunk_rows(1_000_000) == 1073
    rows = [dict(section="s", impl="a", ms=1.5, rate_str="3 GB/s", vs_peer=2.0,
                 of_ceiling=0.5, check="ok"), dict(section="s", impl="b", check="skipped")]
    gpu_check.write_report(str(tmp_path), {"device": "none"}, rows)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| s | a | 1.500 | 3 GB/s | 2.00x | 50% | ok |" in md
    import json
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][1]["impl"] == "b"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke mode is for CPU machines")
def test_gpu_check_cpu_smoke_run_with_triton_interpreter(tmp_path):
    """The whole script end to end on tiny CPU sizes (triton under the interpreter): its
    correctness checks must pass and the report must be written."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-W", "ignore", os.path.join(ROOT, "bench",
                        "gpu_check.py"), "--device", "cpu", "--backends", "triton",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| propagate spmm_rel | triton |" in md and "ok det" in md and "FAIL" not in md
    assert md.count("recall 1.0000") == 2
