"""The CUDA kernels on the CPU: csrc/*/*.cu compiled as C++ against csrc/emu/cuda_emu.h (every
CUDA thread an OS thread, real block barriers and warp collectives), behind the real bindings
(registered for CPU tensors in that build) and the Python wrappers of
slifmr_kernels/{propagate,topk,fuse}/cuda.py, so the wrappers' arguments must match the C++
schemas. conftest.py turns this into the ``emu_ops`` / ``emu_probe`` fixtures.
"""

import contextlib
import ctypes
import os
import re
import subprocess
import sys
import sysconfig

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_BACKEND_MODULES = (
    "slifmr_kernels.propagate.cuda",
    "slifmr_kernels.topk.cuda",
    "slifmr_kernels.fuse.cuda",
)
KERNEL_SOURCES = ("csrc/propagate/propagate.cu", "csrc/topk/topk.cu", "csrc/fuse/fuse.cu")
BINDING_SOURCES = (
    "csrc/propagate/propagate_binding.cpp",
    "csrc/topk/topk_binding.cpp",
    "csrc/fuse/fuse_binding.cpp",
)


def rewrite_launches(src: str) -> str:
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
        out.append(src[pos : m.start()])
        out.append(f"emu::launch({m.group(2)}, [&]() {{ {m.group(1)}({src[m.end() : i - 1]}); }})")
        pos = i


_DYNAMIC_SMEM = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+"
    r"([A-Za-z_]\w*)\s*\[\s*\]\s*;"
)


def emulation_source(src: str) -> str:
    """A .cu file as C++ for the emulator: launches through emu::launch, and each dynamic
    shared memory array (``extern __shared__`` cannot become a function-local static as
    ``__shared__`` does there) a pointer to the block's buffer, emu::dynamic_smem()."""
    src = _DYNAMIC_SMEM.sub(r"\1* \2 = reinterpret_cast<\1*>(emu::dynamic_smem());", src)
    return rewrite_launches(src)


def build_emulation_library(out) -> str:
    """Compiles the kernels and bindings into ``out`` (a pathlib.Path); returns the .so."""
    import torch.utils.cpp_extension as cpp

    def run(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr[-6000:]

    emu_dir = os.path.join(ROOT, "csrc", "emu")
    inc = [f"-I{p}" for p in cpp.include_paths()]
    flags = ["g++", "-std=c++20", "-O1", "-fPIC", "-pthread", "-Wno-unknown-pragmas"]
    objs = []
    for rel in KERNEL_SOURCES:
        with open(os.path.join(ROOT, rel)) as f:
            text = emulation_source(f.read())
        assert "<<<" not in text and "extern __shared__" not in text
        cpp_file = out / (rel.replace("/", "_") + ".cpp")
        cpp_file.write_text(text)
        objs.append(str(cpp_file) + ".o")
        run(
            flags
            + [
                f"-I{emu_dir}",
                "-include",
                os.path.join(emu_dir, "cuda_emu.h"),
                "-c",
                str(cpp_file),
                "-o",
                objs[-1],
            ]
        )
    for rel in BINDING_SOURCES:
        objs.append(str(out / (rel.replace("/", "_") + ".o")))
        # fan-in 2: the heavy-row and g reductions go through several levels at test sizes
        run(
            flags
            + ["-DSLIFMR_CUDA_EMULATION", "-DSLIFMR_REDUCE_FAN_IN=2"]
            + inc
            + [f"-I{sysconfig.get_paths()['include']}", "-c", os.path.join(ROOT, rel), "-o", objs[-1]]
        )
    tl = os.path.join(os.path.dirname(torch.__file__), "lib")
    so = str(out / "_C_emu.so")
    run(
        ["g++", "-shared", "-pthread"]
        + objs
        + [f"-L{tl}", "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{tl}", "-o", so]
    )
    return so


@contextlib.contextmanager
def fresh_cuda_backends(lib=None):
    """The CUDA backend modules and the loaded ops forgotten for the duration (and
    SLIFMR_CUDA_LIB pointed at ``lib`` when given), everything restored afterwards; yields
    slifmr_kernels._cuda."""
    from slifmr_kernels import _cuda

    saved = {n: sys.modules.pop(n) for n in CUDA_BACKEND_MODULES if n in sys.modules}
    saved_ops, saved_env = _cuda._ops, os.environ.get("SLIFMR_CUDA_LIB")
    _cuda._ops = None
    if lib is not None:
        os.environ["SLIFMR_CUDA_LIB"] = lib
    try:
        yield _cuda
    finally:
        for n in CUDA_BACKEND_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
        _cuda._ops = saved_ops
        if saved_env is None:
            os.environ.pop("SLIFMR_CUDA_LIB", None)
        else:
            os.environ["SLIFMR_CUDA_LIB"] = saved_env


class EmuProbe:
    """The emulator's record of the last launch (csrc/emu/cuda_emu.h, through ctypes): which
    way the top-k kernel filled its tiles."""

    def __init__(self, lib_path):
        self.lib = lib = ctypes.CDLL(lib_path)
        lib.slifmr_emu_async_copies.restype = ctypes.c_long
        lib.slifmr_emu_async_copies.argtypes = [ctypes.c_int]
        lib.slifmr_emu_last_dynamic_smem.restype = ctypes.c_long
        lib.slifmr_emu_set_smem_optin.restype = ctypes.c_int
        lib.slifmr_emu_set_smem_optin.argtypes = [ctypes.c_int]

    def copies(self):
        """{bytes: count} of the last launch's asynchronous copies."""
        return {b: self.lib.slifmr_emu_async_copies(b) for b in (4, 8, 16)}

    def path(self, dtype, d):
        """ "resident" (after checking its dynamic shared memory: x, two y buffers, the score
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
