"""Resource use of the Triton top-k kernel's sm_90 code, built ahead of time (no GPU needed).

    python tools/triton_topk_sass.py

For the TF32 candidate pass and the exact fp32 kernel with exclusion lists (BLOCK_M = 64,
KP = 16, 4 warps), with the packed int64 keys and with the (score, index) pair lists: the
registers and stack bytes (``cuobjdump -res-usage``) and the number of SASS instructions
(``nvdisasm``), from the tools that ship with Triton. docs/GPU.md quotes its output.
"""

import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from slifmr_kernels.topk import triton as tt  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TYPES = dict(
    X="*fp32",
    Y="*fp32",
    OUT_I="*i64",
    OUT_V="*fp32",
    EXP="*i64",
    EXI="*i32",
    N="i32",
    M="i32",
    D="i32",
    K="i32",
)


def cubin(tf32: bool, excl: bool, packed: bool) -> bytes:
    fn = tt._topk_kernel
    names = fn.arg_names
    consts = dict(
        EXCL_SELF=not excl,
        HAS_EXCL=excl,
        DIAG_FIRST=True,
        TF32=tf32,
        BLOCK_M=64,
        BLOCK_N=64,
        BLOCK_K=64,
        KP=16,
        BLOCK_X=32,
        SINGLE_K=True,
        PACKED=packed,
    )
    src = ASTSource(
        fn=fn,
        signature={n: TYPES.get(n, "constexpr") for n in names},
        constexprs={(names.index(k),): v for k, v in consts.items()},
    )
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["cubin"]


def main():
    print("| kernel | lists | registers | stack B | SASS instructions |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        for label, tf32, excl in (("TF32 candidates", True, False), ("exact fp32 + exclusions", False, True)):
            for packed in (False, True):
                with open(path, "wb") as f:
                    f.write(cubin(tf32, excl, packed))
                res = subprocess.run(
                    [os.path.join(BIN, "cuobjdump"), "-res-usage", path],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                sass = subprocess.run(
                    [os.path.join(BIN, "nvdisasm"), path], capture_output=True, text=True, check=True
                ).stdout
                regs = re.search(r"REG:(\d+)", res).group(1)
                stack = re.search(r"STACK:(\d+)", res).group(1)
                n = len(re.findall(r"^\s+/\*[0-9a-f]+\*/ ", sass, re.M))
                print(f"| {label} | {'packed keys' if packed else 'pairs'} | {regs} | {stack} | {n} |")


if __name__ == "__main__":
    main()
