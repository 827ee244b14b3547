"""tools/check_csrc.sh: every csrc/*.cu compiles for sm_90 + sm_80 and the extension builds,
links and loads against libtorch (skipped without nvcc); loaded in a subprocess, since only one
library may define the slifmr_cuda schemas per process and this one may hold the emulation
build. The check also fails on a broken source."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
)


needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """tools/check_csrc.sh --link; returns the path of the linked _C.so."""
    if NVCC is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("csrc")
    r = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "check_csrc.sh"), "--link", "--keep", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check_csrc: OK" in r.stdout
    for f in ("csrc/propagate/propagate.cu", "csrc/topk/topk.cu", "csrc/fuse/fuse.cu"):
        assert f"nvcc sm_90+sm_80  {f}" in r.stdout
    assert "csrc/fuse/fuse_binding.cpp" in r.stdout
    return str(out / "_C.so")


@needs_nvcc
def test_check_csrc_compiles_links_and_loads(built_library):
    """The linked library registers every op a build has had (in a subprocess: this process
    may hold the emulation build's schemas)."""
    code = (
        "import sys, torch\ntorch.ops.load_library(sys.argv[1])\n"
        "from slifmr_kernels._cuda import OP_NAMES\n"
        "print(sorted(n for n in OP_NAMES if hasattr(torch.ops.slifmr_cuda, n)))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, built_library], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    from slifmr_kernels._cuda import OP_NAMES

    assert r.stdout.strip() == str(sorted(OP_NAMES))


@needs_nvcc
def test_linked_library_registers_the_fuse_ops(built_library):
    """The extension check loads only the propagate / topk schemas; the fuse ones too (in a
    subprocess: this process may hold the emulation build's schemas)."""
    code = (
        "import sys, torch\ntorch.ops.load_library(sys.argv[1])\n"
        "for n in ('fuse_forward', 'fuse_backward'):\n"
        "    print(getattr(torch.ops.slifmr_cuda, n).default._schema)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, built_library], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert (
        "slifmr_cuda::fuse_forward(Tensor z, Tensor alpha, Tensor views, float eps, "
        "int stream) -> (Tensor, Tensor)" in r.stdout
    )
    assert (
        "slifmr_cuda::fuse_backward(Tensor g, Tensor alpha, Tensor views, Tensor den, "
        "float eps, bool need_alpha, bool need_views, int stream) -> (Tensor, Tensor)" in r.stdout
    )


@needs_nvcc
def test_check_csrc_fails_on_a_broken_source(tmp_path):
    """The check must be able to fail: a tree with a .cu that does not compile."""
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(ROOT, "tools", "check_csrc.sh"), tmp_path / "tools")
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "bad.cu").write_text(
        "__global__ void k(float* p) { p[threadIdx.x] = undeclared_name; }\n"
    )
    (tmp_path / "csrc" / "ok.cpp").write_text("int f() { return 1; }\n")
    r = subprocess.run(
        ["bash", str(tmp_path / "tools" / "check_csrc.sh")], capture_output=True, text=True, timeout=300
    )
    assert r.returncode != 0
    assert "FAIL" in r.stdout and "bad.cu" in r.stdout
