"""Inputs and float64 references that the kernel tests of several ops and backends share."""

import zlib

import torch

from slifmr.config import Config
from slifmr_kernels.testing import allowed_mask


def seed_of(*parts) -> int:
    """A seed fixed by a test's parameters (str hashes are salted per process; crc32 is not),
    so a failure replays exactly."""
    return zlib.crc32(repr(parts).encode())


def csr_with_degrees(gen, n_rows, n_cols, degrees, idx_dtype=torch.int64, num_relations=3):
    """(indptr, indices, values, relation) of a CSR graph with the given per-row degrees;
    duplicate edges are allowed (kernels must sum them), values are float64 in [0.1, 1.1)."""
    deg = torch.as_tensor(degrees, dtype=torch.int64)
    assert deg.numel() == n_rows
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, max(n_cols, 1), (nnz,), generator=gen).to(idx_dtype)
    relation = torch.randint(0, num_relations, (nnz,), generator=gen).to(torch.int32)
    values = torch.rand(nnz, generator=gen, dtype=torch.float64) + 0.1
    return indptr, indices, values, relation


def dense_relations(indptr, indices, values, relation, n_rows, n_cols, num_relations):
    """Per-relation dense matrices A_r in float64, shape [R, n_rows, n_cols]."""
    a = torch.zeros(num_relations, n_rows, n_cols, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
    a.index_put_((relation.long(), rows, indices.long()), values.double(), accumulate=True)
    return a


def transpose_csr(indptr, indices, values, relation, n_rows, n_cols):
    """The transposed graph's arrays, edges of a column in row order (what the backward
    kernels read)."""
    rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
    perm = torch.argsort(indices.long() * max(n_rows, 1) + rows, stable=True)
    indptr_t = torch.zeros(n_cols + 1, dtype=torch.int64)
    indptr_t[1:] = torch.cumsum(torch.bincount(indices.long(), minlength=n_cols), 0)
    return indptr_t, rows[perm].to(indices.dtype), values[perm], relation[perm]


def csr_lists(lists, dtype=torch.int64):
    """Per-row lists (of excluded columns) as CSR arrays (indptr int64, indices ``dtype``)."""
    indptr = torch.zeros(len(lists) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor([len(a) for a in lists], dtype=torch.int64), 0)
    return indptr, torch.tensor([j for a in lists for j in a], dtype=dtype)


def poison(*shapes, dtype, device="cpu"):
    """Allocate and free NaN-filled blocks of the outputs' sizes right before a call: an output
    row a kernel forgets to write then reads as NaN (the allocator hands the block back)
    instead of a lucky zero."""
    for shape in shapes:
        torch.full(shape, float("nan"), dtype=dtype, device=device)


def misaligned(t):
    """A contiguous copy of ``t`` that starts one element past an allocation's (aligned)
    start, so that kernels must take their unaligned loads."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)[1:]
    buf.copy_(t.flatten())
    return buf.view(t.shape)


def topk_reference(x, y, k, exclude_self, excl_indptr=None, excl_indices=None):
    """Dense float64 top-k with the contract's tie rule (lower index first) and padding
    (-1, -inf)."""
    s = x.double().cpu() @ y.double().cpu().T
    n, m = s.shape
    allowed = allowed_mask(n, m, exclude_self, excl_indptr, excl_indices)
    idx = torch.full((n, k), -1, dtype=torch.int64)
    val = torch.full((n, k), float("-inf"), dtype=torch.float64)
    for i in range(n):
        cand = sorted((-float(s[i, j]), j) for j in range(m) if allowed[i, j])
        for p, (ns, j) in enumerate(cand[:k]):
            idx[i, p], val[i, p] = j, -ns
    return idx, val


#: tolerances of a float32 / float64 kernel against float64 math on the same inputs
KERNEL_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def cast(device, dtype, *ts):
    """Each tensor on ``device``, contiguous, floating ones in ``dtype`` (None stays None)."""
    return [
        None
        if t is None
        else t.to(device, dtype).contiguous()
        if t.is_floating_point()
        else t.to(device).contiguous()
        for t in ts
    ]


_AOT_PRELUDE = r"""
import os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

target = GPUTarget("cuda", 90, 32)

def build(fn, types, consts):
    names = fn.arg_names
    sig = {n: types.get(n, "constexpr") for n in names}
    cx = {(names.index(k),): v for k, v in consts.items()}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx), target=target)
    print("compiled", fn.__name__)
"""


def compile_triton_for_sm90(builds: str) -> int:
    """Runs ``builds`` (calls of ``build(kernel, arg types, constexprs)``) in a fresh process
    without the interpreter, lowering each kernel to sm_90 machine code ahead of time (no GPU
    needed: the interpreter accepts Python that the compiler rejects); returns how many
    kernels compiled. Skips where this triton cannot compile ahead of time."""
    import os
    import subprocess
    import sys

    import pytest

    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no ahead-of-time compile API")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run(
        [sys.executable, "-c", _AOT_PRELUDE + builds],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=root,
    )
    if r.returncode != 0 and "ptxas" in r.stderr and "not found" in r.stderr:
        pytest.skip("triton's bundled ptxas is missing")
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout.count("compiled")


#: a synthetic dataset that trains in about a second
TINY_DATA = {
    "num_users": 60,
    "num_items": 40,
    "num_clusters": 3,
    "mean_interactions": 8,
    "modalities": {"text": 6},
    "kg_relations": 1,
}


def tiny_train_config(**overrides):
    """A Config that trains a small model on TINY_DATA in a few epochs."""
    base = dict(
        embed_dim=8,
        batch_size=128,
        epochs=3,
        lr=0.02,
        progress=False,
        synthetic=TINY_DATA,
        seed=5,
        knn_k=4,
        feedback_k=4,
        patience=0,
    )
    base.update(overrides)
    return Config(**base)


#: a synthetic dataset with every view (KG, two modalities) that trains in a few seconds
SMALL_DATA = {
    "num_users": 120,
    "num_items": 90,
    "num_clusters": 4,
    "mean_interactions": 10,
    "modalities": {"image": 8, "text": 6},
    "kg_relations": 2,
}


def small_train_config(**overrides):
    """A Config that trains every view of SLIF-MR on SMALL_DATA in a few epochs."""
    base = dict(
        embed_dim=16,
        batch_size=256,
        epochs=3,
        lr=0.01,
        progress=False,
        synthetic=SMALL_DATA,
        seed=3,
        knn_k=5,
        feedback_k=5,
        patience=0,
    )
    base.update(overrides)
    return Config(**base)
