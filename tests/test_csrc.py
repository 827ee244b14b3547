"""CUDA C++ sources and the GPU-side Python helpers, on a machine without a GPU.

* tools/check_csrc.sh compiles every csrc/*.cu for sm_90 + sm_80 and builds, links and loads
  the extension against libtorch (skipped without nvcc), loading it in a subprocess (only one
  library may define the slifmr_cuda schemas per process: this one keeps the emulation
  build); the check also fails on a broken source.
* The CUDA kernels themselves run on the CPU through csrc/emu/cuda_emu.h (every CUDA thread an
  OS thread, real barriers and warp collectives), behind the real bindings (registered for CPU
  tensors in that build) and the Python wrappers of slifmr_kernels/{propagate,topk,fuse}/cuda.py,
  so the wrappers' arguments must match the C++ schemas, and are compared with the float64
  references: forward, backward, top-k with ties,
  exclusions, padding, its resident (cp.async, 16-byte or one-element copies) and sliced tile
  paths, heavy rows, vectorised and scalar paths; fuse_views
  (slifmr_kernels/fuse/cuda.py) against z + sum alpha_k F.normalize(v_k) and its autograd
  gradients, clamped rows, register and streaming paths, aligned and misaligned rows.
* The loader's error path: a clear ImportError when the extension is absent.
* CuPy/DLPack interop (importable without CuPy) and the non-GPU parts of bench/gpu_check.py.
"""
import ctypes
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch

from slifmr_kernels.testing import fuse_views_formula

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
    names = ["slifmr_kernels.propagate.cuda", "slifmr_kernels.topk.cuda",
             "slifmr_kernels.fuse.cuda"]
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
    for f in ("csrc/propagate/propagate.cu", "csrc/topk/topk.cu", "csrc/fuse/fuse.cu"):
        assert f"nvcc sm_90+sm_80  {f}" in r.stdout
    assert "csrc/fuse/fuse_binding.cpp" in r.stdout
    return str(out / "_C.so")


@needs_nvcc
def test_check_csrc_compiles_links_and_loads(built_library):
    assert os.path.exists(built_library)


@needs_nvcc
def test_linked_library_registers_the_fuse_ops(built_library):
    """The extension check loads only the propagate / topk schemas; the fuse ones too (in a
    subprocess: this process may hold the emulation build's schemas)."""
    code = ("import sys, torch\ntorch.ops.load_library(sys.argv[1])\n"
            "for n in ('fuse_forward', 'fuse_backward'):\n"
            "    print(getattr(torch.ops.slifmr_cuda, n).default._schema)\n")
    r = subprocess.run([sys.executable, "-c", code, built_library], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "slifmr_cuda::fuse_forward(Tensor z, Tensor alpha, Tensor views, float eps, " \
        "int stream) -> (Tensor, Tensor)" in r.stdout
    assert "slifmr_cuda::fuse_backward(Tensor g, Tensor alpha, Tensor views, Tensor den, " \
        "float eps, bool need_alpha, bool need_views, int stream) -> (Tensor, Tensor)" in r.stdout


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


# ---------------------------------------------------------------------------------------------
# the CUDA kernels on the CPU (csrc/emu/cuda_emu.h)
# ---------------------------------------------------------------------------------------------
def _rewrite_launches(src: str) -> str:
    """``kernel<<<cfg>>>(args)`` -> ``emu::launch(cfg, [&]() { kernel(args); })``."""
    pat = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
    out, pos = [], 0
    while True:
        m = pat.search(src, pos)
        if not m:
            out.append(src[pos:])
            return "".join(out)
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            i += 1
        out.append(src[pos:m.start()])
        out.append(f"emu::launch({m.group(2)}, [&]() {{ {m.group(1)}({src[m.end():i - 1]}); }})")
        pos = i


def test_rewrite_launches():
    src = "a<T, 4><<<nb, 256, 0, st>>>(p, f(q), r);\nk<<<1, 2>>>();"
    assert _rewrite_launches(src) == (
        "emu::launch(nb, 256, 0, st, [&]() { a<T, 4>(p, f(q), r); });\n"
        "emu::launch(1, 2, [&]() { k(); });")


_DYNAMIC_SMEM = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+"
    r"([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def _emulation_source(src: str) -> str:
    """A .cu file as C++ for the emulator: launches through emu::launch, and each dynamic
    shared memory array (``extern __shared__`` cannot become a function-local static as
    ``__shared__`` does there) a pointer to the block's buffer, emu::dynamic_smem()."""
    src = _DYNAMIC_SMEM.sub(r"\1* \2 = reinterpret_cast<\1*>(emu::dynamic_smem());", src)
    return _rewrite_launches(src)


def test_emulation_source_dynamic_shared_memory():
    src = ("  extern __shared__ __align__(128) unsigned char smem[];\n"
           "extern __shared__ float buf [ ];\nk<<<1, 2, b>>>(x);")
    assert _emulation_source(src) == (
        "  unsigned char* smem = reinterpret_cast<unsigned char*>(emu::dynamic_smem());\n"
        "float* buf = reinterpret_cast<float*>(emu::dynamic_smem());\n"
        "emu::launch(1, 2, b, [&]() { k(x); });")


@pytest.fixture(scope="module")
def emu_ops(tmp_path_factory):
    """The real bindings + the .cu kernels compiled as C++ against the emulation header,
    registered for CPU tensors; yields the Python backend modules wired to them
    (propagate, topk, fuse)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    import torch.utils.cpp_extension as cpp

    out = tmp_path_factory.mktemp("emu")

    def run(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-6000:]

    emu_dir = os.path.join(ROOT, "csrc", "emu")
    inc = [f"-I{p}" for p in cpp.include_paths()]
    flags = ["g++", "-std=c++20", "-O1", "-fPIC", "-pthread", "-Wno-unknown-pragmas"]
    objs = []
    for rel in ("csrc/propagate/propagate.cu", "csrc/topk/topk.cu", "csrc/fuse/fuse.cu"):
        with open(os.path.join(ROOT, rel)) as f:
            text = _emulation_source(f.read())
        assert "<<<" not in text and "extern __shared__" not in text
        cpp_file = out / (rel.replace("/", "_") + ".cpp")
        cpp_file.write_text(text)
        objs.append(str(cpp_file) + ".o")
        run(flags + [f"-I{emu_dir}", "-include", os.path.join(emu_dir, "cuda_emu.h"),
                     "-c", str(cpp_file), "-o", objs[-1]])
    for rel in ("csrc/propagate/propagate_binding.cpp", "csrc/topk/topk_binding.cpp",
                "csrc/fuse/fuse_binding.cpp"):
        objs.append(str(out / (rel.replace("/", "_") + ".o")))
        # fan-in 2: the heavy-row and g reductions go through several levels at test sizes
        run(flags + ["-DSLIFMR_CUDA_EMULATION", "-DSLIFMR_REDUCE_FAN_IN=2"] + inc +
            [f"-I{sysconfig.get_paths()['include']}", "-c", os.path.join(ROOT, rel),
             "-o", objs[-1]])
    tl = os.path.join(os.path.dirname(torch.__file__), "lib")
    so = str(out / "_C_emu.so")
    run(["g++", "-shared", "-pthread"] + objs + [f"-L{tl}", "-ltorch", "-ltorch_cpu", "-lc10",
                                                 f"-Wl,-rpath,{tl}", "-o", so])

    from slifmr_kernels import _cuda
    names = ["slifmr_kernels.propagate.cuda", "slifmr_kernels.topk.cuda",
             "slifmr_kernels.fuse.cuda"]
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    saved_ops, saved_env = _cuda._ops, os.environ.get("SLIFMR_CUDA_LIB")
    _cuda._ops = None
    os.environ["SLIFMR_CUDA_LIB"] = so
    try:
        from slifmr_kernels.propagate import cuda as pc
        from slifmr_kernels.topk import cuda as tc
        from slifmr_kernels.fuse import cuda as fc
        for mod in (pc, tc, fc):
            mod.stream_of = lambda t: 0  # no CUDA stream on the CPU
        yield pc, tc, fc
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
        _cuda._ops = saved_ops
        if saved_env is None:
            os.environ.pop("SLIFMR_CUDA_LIB", None)
        else:
            os.environ["SLIFMR_CUDA_LIB"] = saved_env


def _graph(gen, n_rows, n_cols, degrees, idx_dtype, R):
    deg = torch.as_tensor(degrees, dtype=torch.int64)
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, n_cols, (nnz,), generator=gen).to(idx_dtype)
    values = torch.rand(nnz, generator=gen, dtype=torch.float64) + 0.1
    relation = torch.randint(0, R, (nnz,), generator=gen).to(torch.int32)
    relation[relation == 2] = 1  # relation 2 has no edges: its g row must be zero
    return indptr, indices, values, relation


def _dense(indptr, indices, values, relation, n_rows, n_cols, R):
    a = torch.zeros(R, n_rows, n_cols, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
    a.index_put_((relation.long(), rows, indices.long()), values, accumulate=True)
    return a


def _poison_heap(*shapes, dtype):
    """Allocate and free NaN-filled blocks of the outputs' sizes just before a call, so that an
    output row the kernels forget to write reads as NaN (the CPU allocator reuses the block)
    rather than as a lucky zero."""
    for shape in shapes:
        torch.full(shape, float("nan"), dtype=dtype)


def _rel_err(got, ref):
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-300))


# degrees: empty rows, light rows, a hub split into 256-edge row chunks (the last one partial)
# and a row just over one chunk; ~3000 edges, so each relation's run of the backward's g
# reduction spans several 512-edge chunks
_DEG = [0, 3, 2600, 0, 7, 1, 0, 2, 300, 5, 0, 9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [8, 5, 132])  # vector path, scalar path, > 32 lanes of vectors
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_emulated_cuda_propagate(emu_ops, dtype, d, idx_dtype):
    pc, _, _ = emu_ops
    gen = torch.Generator().manual_seed(d * 7 + (dtype == torch.float64) + 2 * (
        idx_dtype == torch.int64))
    n, m, R = len(_DEG), 23, 4
    indptr, indices, values, relation = _graph(gen, n, m, _DEG, idx_dtype, R)
    x = torch.randn(m, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n, d, generator=gen, dtype=torch.float64)
    a = _dense(indptr, indices, values, relation, n, m, R)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    cast = dict(dtype=dtype)
    _poison_heap((n, d), dtype=dtype)
    y = pc.spmm(indptr, indices, values.to(**cast), x.to(**cast), n)
    assert y.dtype == dtype and y.shape == (n, d)
    assert _rel_err(y, a.sum(0) @ x) < tol
    _poison_heap((n, d), dtype=dtype)
    y = pc.spmm_rel(indptr, indices, values.to(**cast), relation, table.to(**cast),
                    x.to(**cast), n)
    assert _rel_err(y, torch.einsum("rij,jd,rd->id", a, x, table)) < tol
    assert bool((y[torch.tensor(_DEG) == 0] == 0).all())
    y2 = pc.spmm_rel(indptr, indices, values.to(**cast), relation, table.to(**cast),
                     x.to(**cast), n)
    assert torch.equal(y, y2)  # no atomics: the same bits every run
    # backward over the transpose
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
    perm = torch.sort(indices.long(), stable=True).indices
    indptr_t = torch.zeros(m + 1, dtype=torch.int64)
    indptr_t[1:] = torch.cumsum(torch.bincount(indices.long(), minlength=m), 0)
    t = (indptr_t, rows[perm].to(idx_dtype), values[perm].to(**cast), relation[perm])
    _poison_heap((m, d), dtype=dtype)
    dx, g = pc.spmm_rel_backward(*t, table.to(**cast), dy.to(**cast), x.to(**cast), R,
                                 True, True)
    assert _rel_err(dx, torch.einsum("rij,id,rd->jd", a, dy, table)) < tol
    g_ref = torch.einsum("rij,jd,id->rd", a, x, dy)
    assert g.shape == (R, d) and _rel_err(g, g_ref) < tol
    assert bool((g[2] == 0).all())
    dx2, g2 = pc.spmm_rel_backward(*t, table.to(**cast), dy.to(**cast), x.to(**cast), R,
                                   False, True)
    assert dx2 is None and torch.equal(g2, g)


def test_emulated_cuda_propagate_without_values(emu_ops):
    """values may be None at the C++ level (all ones)."""
    gen = torch.Generator().manual_seed(3)
    indptr, indices, values, relation = _graph(gen, 12, 9, _DEG, torch.int64, 3)
    x = torch.randn(9, 4, generator=gen)
    y = torch.ops.slifmr_cuda.propagate(indptr, indices, None, None, None, x, 12, 0)
    ref = _dense(indptr, indices, torch.ones_like(values), relation, 12, 9, 3).sum(0) @ \
        x.double()
    assert _rel_err(y, ref) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [5, 40])  # fewer features than lanes, more than one pass
def test_emulated_cuda_propagate_sddmm(emu_ops, dtype, d):
    """The edge-value gradient (#18 item 2): one warp per edge, a fixed-order sum."""
    pc, _, _ = emu_ops
    assert hasattr(pc, "sddmm")
    gen = torch.Generator().manual_seed(d)
    degrees = [0, 3, 40, 0, 7, 1]
    n, m, R = len(degrees), 11, 3
    indptr, indices, _, relation = _graph(gen, n, m, degrees, torch.int32, R)
    x = torch.randn(m, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    prod = dy[rows] * x[indices.long()]
    got = pc.sddmm(indptr, indices, None, None, dy.to(dtype), x.to(dtype), n)
    assert got.dtype == dtype and got.shape == (indices.numel(),)
    assert _rel_err(got, prod.sum(1)) < tol
    got = pc.sddmm(indptr, indices.long(), relation, table.to(dtype), dy.to(dtype),
                   x.to(dtype), n)
    assert _rel_err(got, (prod * table[relation.long()]).sum(1)) < tol
    again = pc.sddmm(indptr, indices.long(), relation, table.to(dtype), dy.to(dtype),
                     x.to(dtype), n)
    assert torch.equal(got, again)


def _topk_ref(x, y, k, exclude_self, lists=None):
    s = x.double() @ y.double().T
    n, m = s.shape
    idx = torch.full((n, k), -1, dtype=torch.int64)
    val = torch.full((n, k), float("-inf"), dtype=torch.float64)
    for i in range(n):
        banned = set(lists[i]) if lists is not None else set()
        cand = sorted((-float(s[i, j]), j) for j in range(m)
                      if j not in banned and not (exclude_self and j == i))
        for p, (ns, j) in enumerate(cand[:k]):
            idx[i, p], val[i, p] = j, -ns
    return idx, val


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
    ri, rv = _topk_ref(x, y, k, True)
    assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    # k >= candidates: 70 columns minus self = 69 allowed, one pad per row
    idx, val = tc.topk(x.to(dtype), y.to(dtype), 70, True, None, None)
    ri, rv = _topk_ref(x, y, 70, True)
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
    lists = [best[i, : int(torch.randint(0, 45, (1,), generator=gen))].tolist()
             for i in range(n)]
    lists[0] = list(range(m))  # everything excluded: all padding
    ep = torch.zeros(n + 1, dtype=torch.int64)
    ep[1:] = torch.cumsum(torch.tensor([len(a) for a in lists]), 0)
    ei = torch.tensor([j for a in lists for j in a], dtype=ex_dtype)
    idx, val = tc.topk(x, y, k, False, ep, ei)
    ri, rv = _topk_ref(x, y, k, False, lists)
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
    ep = torch.zeros(n + 1, dtype=torch.int64)
    ep[1:] = torch.cumsum(torch.tensor([len(a) for a in lists]), 0)
    ei = torch.tensor([j for a in lists for j in a], dtype=torch.int32)
    idx, val = tc.topk_tf32(x, y, 10, False, ep, ei)
    ri, rv = _topk_ref(x, y, 10, False, lists)
    assert torch.equal(idx, ri)
    torch.testing.assert_close(val.double(), rv, rtol=1e-5, atol=1e-5)
    if d != 21:
        return
    # two distinct integer vectors, ~35 copies each: the 12th best ties the 32nd (the last
    # candidate), so the certificates fail and the exact kernel breaks the ties
    base = torch.randint(-2, 3, (2, 6), generator=gen).float()
    xi = base[torch.arange(n) % 2]
    idx, val = tc.topk_tf32(xi, xi, 12, True, None, None)
    ri, rv = _topk_ref(xi, xi, 12, True)
    assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    assert rerank.last_fallback_rows() > 0


class _EmuProbe:
    """The emulator's record of the last launch (csrc/emu/cuda_emu.h, through ctypes): which
    way the top-k kernel filled its tiles."""

    def __init__(self, lib):
        self.lib = lib
        lib.slifmr_emu_async_copies.restype = ctypes.c_long
        lib.slifmr_emu_async_copies.argtypes = [ctypes.c_int]
        lib.slifmr_emu_last_dynamic_smem.restype = ctypes.c_long
        lib.slifmr_emu_set_smem_optin.restype = ctypes.c_int
        lib.slifmr_emu_set_smem_optin.argtypes = [ctypes.c_int]

    def copies(self):
        """{bytes: count} of the last launch's asynchronous copies."""
        return {b: self.lib.slifmr_emu_async_copies(b) for b in (4, 8, 16)}

    def path(self, dtype, d):
        """"resident" (after checking its dynamic shared memory: x, two y buffers, the score
        tile, rows padded as topk.cu's row_stride) or "sliced" (no dynamic shared memory and
        no asynchronous copies)."""
        smem = self.lib.slifmr_emu_last_dynamic_smem()
        if smem == 0:
            assert sum(self.copies().values()) == 0
            return "sliced"
        size = torch.empty(0, dtype=dtype).element_size()
        ld = (d + 7) // 8 * 8 + 16 // size
        assert smem == size * (192 * ld + 64 * 80)
        return "resident"


@pytest.fixture(scope="module")
def emu_probe(emu_ops):
    return _EmuProbe(ctypes.CDLL(os.environ["SLIFMR_CUDA_LIB"]))


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
    (torch.float32, 6, "resident", 4),    # 24-byte rows: one element per copy
    (torch.float64, 6, "resident", 16),   # 48-byte rows; the depth padded to 8 with zeros
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
        _poison_heap((70, k), dtype=dtype)
        idx, val = tc.topk(x, y, k, True, None, None)
        assert emu_probe.path(dtype, d) == path
        if copy_bytes is not None:
            copies = emu_probe.copies()
            assert copies[copy_bytes] > 0 and sum(copies.values()) == copies[copy_bytes]
        ri, rv = _topk_ref(x, y, k, True)
        assert torch.equal(idx, ri) and torch.equal(val.double(), rv)
    assert bool((idx[:, -1] == -1).all()) and bool(torch.isneginf(val[:, -1]).all())


@pytest.mark.parametrize("dtype,tf32", [(torch.float32, False), (torch.float64, False),
                                        (torch.float32, True)])
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

    def shifted(t):
        buf = torch.empty(t.numel() + 1, dtype=dtype)[1:]
        buf.copy_(t.flatten())
        return buf.view(t.shape)

    want = run(x, y, 12, True, None, None)
    assert emu_probe.path(dtype, d) == "resident" and emu_probe.copies()[16] > 0
    xs, ys = shifted(x), shifted(y)
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
        ri, rv = _topk_ref(x, y, 12, True)
        assert torch.equal(want[0], ri)
        torch.testing.assert_close(want[1].double(), rv, rtol=1e-5 if dtype == torch.float32
                                   else 1e-13, atol=1e-5 if dtype == torch.float32 else 1e-13)


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
        tiny = views[n // 2, (V - 1) * d:]
        views[n // 2, (V - 1) * d:] = tiny / tiny.norm() * 0.5e-12
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
_FUSE_SHAPES = [(600, 1, 1), (600, 3, 1), (70, 1, 5), (70, 3, 5), (40, 1, 64), (40, 3, 64),
                (20, 1, 65), (20, 3, 65), (20, 2, 201), (20, 2, 256), (20, 2, 1024),
                (20, 3, 301), (20, 2, 1028)]


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
    _poison_heap((n, d), (n, V), dtype=dtype)
    out, den = fc.fuse_forward(z, alpha, views, NORM_EPS)
    assert out.dtype == dtype and out.shape == (n, d)
    assert den.dtype == dtype and den.shape == (n, V)
    assert _scaled_err(out, want_out, sc_out) < tol
    torch.testing.assert_close(den.double(), want_den, rtol=tol, atol=0)
    eps = torch.tensor(NORM_EPS, dtype=dtype)
    assert den[0, 0] == eps and den[n // 2, V - 1] == eps and den[n - 1, 0] > eps  # clamped
    _poison_heap((n, V * d), dtype=dtype)
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
    _poison_heap((V,), dtype=torch.float32)
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

    def shifted(t):
        buf = torch.empty(t.numel() + 1, dtype=dtype)[1:]
        buf.copy_(t.flatten())
        return buf.view(t.shape)

    zs, vs, gs = shifted(z), shifted(views), shifted(g)
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
    small = [torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
             for shape in ((6, 3), (2,), (6, 6))]
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


# ---------------------------------------------------------------------------------------------
# loader error path
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(_extension_installed(), reason="the CUDA extension is installed here")
def test_cuda_backend_import_error_is_clear(fresh_cuda_modules, monkeypatch):
    monkeypatch.delenv("SLIFMR_CUDA_LIB", raising=False)
    for mod in ("slifmr_kernels.propagate.cuda", "slifmr_kernels.topk.cuda",
                "slifmr_kernels.fuse.cuda"):
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
    """In a fresh process (this one may hold the emulation build): the registry turns the
    ImportError into BackendUnavailable with the build command."""
    code = ("from slifmr_kernels.backends import BackendUnavailable, load\n"
            "try:\n    load('topk', 'cuda')\nexcept BackendUnavailable as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "SLIFMR_CUDA_LIB"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "FORCE_CUDA=1" in r.stdout and "not built" in r.stdout


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_gpu_session_script_refuses_without_a_gpu(tmp_path):
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_session.sh"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr


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
    # kNN at two sizes (exact kernel, tf32+rerank path, the public op) and topk_scores (exact
    # kernel, tf32+rerank path)
    assert md.count("recall 1.0000") == 8
    assert "topk_scores" in md and "EXCLUDED RETURNED" not in md and "error" not in md
    # fuse_views forward + backward against float64, run twice for the bits
    assert "| fuse_views fwd+bwd N=70 V=3 d=16 | triton |" in md
    assert md.count("ok det out=") == 1
