"""One-shot GPU check of the GPU backends (triton, cuda) against references and peers.

On a CUDA machine, in one run (< 5 minutes on an H100):

1. ceilings: device-to-device copy bandwidth, GEMM rate (fp32 with TF32, fp16);
2. propagate on a power-law graph (default 20M edges, 1M nodes, d = 64, 3 relations):
   correctness of every GPU backend against the torch reference in float64 (fresh random
   inputs, outputs poisoned first), then forward spmm / spmm_rel and backward (dx + g) timed
   against ``torch.sparse.mm`` (cuSPARSE), one ``torch.sparse.mm`` per relation (the unfused
   way), and cuSPARSE through CuPy when CuPy is importable;
3. kNN top-k (k = 10, d = 64, cosine, self excluded) at N = 256k and N = 1M: each backend's
   exact fp32 kernel and its TF32 candidates + fp32 re-rank path (slifmr_kernels/topk/
   rerank.py; the Triton tile shape of the TF32 pass is picked from a few at the first size),
   checked against chunked ``X @ X.T`` + ``torch.topk`` (recall with ties in mind) and timed
   against it and against FAISS GPU (``IndexFlatIP``) when importable.  The 1M run of a
   variant is skipped when its 256k time predicts more than ``--max-knn-s`` seconds;
4. topk_scores, the full-ranking shape (default 200k users x 100k items, k = 20, each user's
   training items excluded through the exclusion CSR) against dense scores per user batch +
   masking + ``torch.topk``; excluded items must never come back.

Prints a table (ms, GB/s or TFLOP/s, ratio to the named peer, fraction of the measured copy
bandwidth / GEMM rate) and writes it as markdown and JSON under ``--out``.

The CUDA extension is used when installed; else ``SLIFMR_CUDA_LIB`` names a built library;
else (``--build``, the default) it is JIT-built from ``csrc/`` with
``torch.utils.cpp_extension.load``.  Without a GPU the script only parses its arguments
(``--help``); its non-GPU parts (byte and FLOP models, transpose, report writer) are tested
in tests/test_gpu_check.py, the graph generator and the recall (``slifmr_kernels.testing``'s
``power_law_csr`` and ``recall_with_ties``) in tests/test_testing.py. Timing, the machine's
description and the report files come from bench/harness.py.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "bench")):  # a checkout without an install; harness.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

import harness  # noqa: E402
from harness import environment, markdown_table, time_call  # noqa: E402

from slifmr_kernels.testing import power_law_csr, recall_with_ties  # noqa: E402


# ---------------------------------------------------------------------------------------------
# non-GPU parts (tested on CPU)
# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", default="gpu_check_out", help="directory for gpu_check.md and gpu_check.json (created)"
    )
    p.add_argument("--edges", type=int, default=20_000_000, help="propagate: edges")
    p.add_argument("--nodes", type=int, default=1_000_000, help="propagate: nodes")
    p.add_argument("--relations", type=int, default=3, help="propagate: relations")
    p.add_argument("--dim", type=int, default=64, help="embedding size d (both ops)")
    p.add_argument("--knn", type=str, default="262144,1000000", help="comma-separated kNN sizes N")
    p.add_argument("--k", type=int, default=10, help="kNN: neighbours per row")
    p.add_argument("--users", type=int, default=200_000, help="topk_scores: users")
    p.add_argument("--items", type=int, default=100_000, help="topk_scores: items")
    p.add_argument(
        "--fuse-rows",
        type=int,
        default=3_000_000,
        help="fuse_views: rows (users + items of a 1M-item catalog)",
    )
    p.add_argument("--backends", default="cuda,triton", help="GPU backends to check")
    p.add_argument(
        "--max-knn-s",
        type=float,
        default=45.0,
        help="skip a backend's kNN size when the smaller size predicts more",
    )
    p.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="do not JIT-build the CUDA extension when it is not installed",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run: 2M edges, kNN 32k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cuda",
        help="cuda; 'cpu' runs the whole script on tiny sizes (with triton under "
        "TRITON_INTERPRET=1): a test of the script, not a measurement",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.edges, a.nodes, a.knn = 2_000_000, 200_000, "32768"
        a.users, a.items, a.fuse_rows = 20_000, 10_000, 300_000
    if a.device == "cpu":
        a.edges, a.nodes, a.knn, a.dim = min(a.edges, 400), min(a.nodes, 100), "48,96", 16
        a.users, a.items, a.fuse_rows = 40, 60, 70
    a.knn_sizes = [int(s) for s in a.knn.split(",") if s.strip()]
    a.backend_list = [s.strip() for s in a.backends.split(",") if s.strip()]
    return a


def transpose_csr(indptr, indices, values, relation, n_cols):
    """CSR of A^T with values / relation carried along (stable counting order)."""
    n_rows = indptr.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n_rows, device=indptr.device), indptr[1:] - indptr[:-1])
    perm = torch.sort(indices.long(), stable=True).indices
    indptr_t = torch.zeros(n_cols + 1, dtype=torch.int64, device=indptr.device)
    indptr_t[1:] = torch.cumsum(torch.bincount(indices.long(), minlength=n_cols), 0)
    return indptr_t, rows[perm].to(indices.dtype), values[perm], relation[perm]


def propagate_bytes(n_rows, n_cols, nnz, d, itemsize=4, with_relation=True, idx_bytes=4):
    """Byte models of one forward pass: (compulsory, with every edge re-reading its x row).

    compulsory = indptr + indices + values (+ relation) + x read once + y written once;
    gathered   = the same with x read once per edge (no cache reuse)."""
    graph = 8 * (n_rows + 1) + nnz * (idx_bytes + itemsize + (4 if with_relation else 0))
    y = n_rows * d * itemsize
    return graph + n_cols * d * itemsize + y, graph + nnz * d * itemsize + y


def knn_flops(n, m, d):
    """Multiply-adds of the full score matrix, counted as 2 FLOP."""
    return 2.0 * n * m * d


def knn_chunk_rows(n, budget_elems=1 << 30):
    """Rows per chunk of the reference's score matrix (at most ``budget_elems`` scores)."""
    return int(min(8192, max(256, budget_elems // max(n, 1))))


def format_table(rows):
    """Markdown table of result rows (dicts with the keys below)."""
    cells = [
        {
            "section": r.get("section", ""),
            "impl": r.get("impl", ""),
            "ms": "" if r.get("ms") is None else (f"{r['ms']:.3f}" if r["ms"] < 100 else f"{r['ms']:.0f}"),
            "rate": r.get("rate_str", ""),
            "vs peer": "" if r.get("vs_peer") is None else f"{r['vs_peer']:.2f}x",
            "of ceiling": "" if r.get("of_ceiling") is None else f"{100 * r['of_ceiling']:.0f}%",
            "check": r.get("check", ""),
        }
        for r in rows
    ]
    return markdown_table(cells, ["section", "impl", "ms", "rate", "vs peer", "of ceiling", "check"])


def write_report(out_dir, meta, rows):
    """gpu_check.md (the meta data and the table) and gpu_check.json in ``out_dir``."""
    md = ["# gpu_check", "", "```", json.dumps(meta, indent=1), "```", "", format_table(rows), ""]
    harness.write_report(os.path.join(out_dir, "gpu_check.md"), "\n".join(md), {"meta": meta, "rows": rows})


# ---------------------------------------------------------------------------------------------
# GPU parts
# ---------------------------------------------------------------------------------------------
def time_ms(fn, warmup=2, reps=10, max_s=20.0, device="cuda"):
    """Median milliseconds of fn() (CUDA events on a GPU, at most ``max_s`` seconds of
    repeats); on ``device="cpu"`` one call without warm-up: the CPU mode is a smoke test of
    the script, not a measurement."""
    if device == "cpu":
        warmup, reps = 0, 1
    return 1e3 * time_call(fn, repeats=reps, warmup=warmup, max_seconds=max_s, device=device).seconds


def ensure_cuda_extension(build: bool, log):
    """Make torch.ops.slifmr_cuda available: installed _C, SLIFMR_CUDA_LIB, or a JIT build."""
    from slifmr_kernels import _cuda

    try:
        _cuda.load_ops()
        return "installed" if not os.environ.get("SLIFMR_CUDA_LIB") else "SLIFMR_CUDA_LIB"
    except ImportError as exc:
        if not build:
            raise
        log(f"extension not loaded ({exc}); JIT-building csrc/ ...")
    from torch.utils.cpp_extension import load

    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    sources = sorted(
        glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True)
        + glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
    )
    t0 = time.perf_counter()
    load(
        name="slifmr_cuda_jit",
        sources=sources,
        is_python_module=False,
        verbose=False,
        extra_cflags=["-O2"],
        extra_cuda_cflags=["-O3", "-lineinfo", f"-gencode=arch=compute_{arch},code=sm_{arch}"],
    )
    log(f"built in {time.perf_counter() - t0:.0f} s")
    _cuda._ops = torch.ops.slifmr_cuda
    return "jit"


def measure_ceilings(log, dev="cuda"):
    tm = lambda fn, reps: time_ms(fn, reps=reps, device=dev)  # noqa: E731
    n = 1 << 28 if dev == "cuda" else 1 << 20  # 1 GiB of fp32 on the GPU
    a = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
    b = torch.empty_like(a)
    ms = tm(lambda: b.copy_(a), 20)
    copy_gbs = 2 * a.numel() * 4 / ms / 1e6
    a = b = None  # free the buffers (the timed lambda is done with them)
    res = {"copy_GBs": copy_gbs}
    m = 8192 if dev == "cuda" else 256
    for name, dt, tf32 in (
        ("gemm_tf32_TFLOPs", torch.float32, True),
        ("gemm_fp32_TFLOPs", torch.float32, False),
        ("gemm_fp16_TFLOPs", torch.float16, False),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x = torch.randn(m, m, device=dev, dtype=dt)
        y = torch.randn(m, m, device=dev, dtype=dt)
        ms = tm(lambda: x @ y, 10)
        res[name] = 2 * m**3 / ms / 1e9
    torch.backends.cuda.matmul.allow_tf32 = False
    # the kNN-shaped GEMM (N x N x 64) in fp16, the floor of a tensor-core kNN
    nk = 16384 if dev == "cuda" else 512
    x = torch.randn(nk, 64, device=dev, dtype=torch.float16 if dev == "cuda" else torch.float32)
    ms = tm(lambda: x @ x.T, 10)
    res["gemm_nxnx64_fp16_TFLOPs"] = 2 * nk**2 * 64 / ms / 1e9
    log(" ".join(f"{k}={v:.1f}" for k, v in res.items()))
    return res


def check_propagate(args, backends, ceil, rows, log):
    from slifmr_kernels.backends import load

    dev = args.device
    n, nnz, R, d = args.nodes, args.edges, args.relations, args.dim
    indptr, indices, values, relation = power_law_csr(
        n, n, nnz, R, generator=torch.Generator(device=dev).manual_seed(args.seed)
    )
    deg = indptr[1:] - indptr[:-1]
    log(f"graph: {n} nodes, {nnz} edges, max degree {int(deg.max())}, empty rows {int((deg == 0).sum())}")
    x = torch.randn(n, d, device=dev)
    table = torch.randn(R, d, device=dev)
    dy = torch.randn(n, d, device=dev)
    t = transpose_csr(indptr, indices, values, relation, n)
    ref = load("propagate", "torch")
    y_ref = ref.spmm_rel(indptr, indices, values.double(), relation, table.double(), x.double(), n)
    y_ref_plain = ref.spmm(indptr, indices, values.double(), x.double(), n)
    dx_ref, g_ref = ref.spmm_rel_backward(
        *t[:2], t[2].double(), t[3], table.double(), dy.double(), x.double(), R, True, True
    )
    comp, gath = propagate_bytes(n, n, nnz, d)
    comp_plain, _ = propagate_bytes(n, n, nnz, d, with_relation=False)

    def time_ms_(fn, **kw):
        return time_ms(fn, device=dev, **kw)

    def rel_err(a, b):
        return float((a.double() - b).norm() / b.norm().clamp_min(1e-30))

    # peers
    a_csr = torch.sparse_csr_tensor(indptr, indices.long(), values, (n, n), check_invariants=False)
    peer_ms = time_ms_(lambda: torch.sparse.mm(a_csr, x))
    rows.append(
        dict(
            section="propagate spmm",
            impl="torch.sparse.mm (cuSPARSE)",
            ms=peer_ms,
            rate_str=f"{comp_plain / peer_ms / 1e6:.0f} GB/s",
            of_ceiling=comp_plain / peer_ms / 1e6 / ceil["copy_GBs"],
            check="peer",
        )
    )
    per_rel = []
    for r in range(R):
        m_r = relation == r
        rows_r = torch.repeat_interleave(torch.arange(n, device=dev), deg)[m_r]
        per_rel.append(
            torch.sparse_coo_tensor(torch.stack([rows_r, indices[m_r].long()]), values[m_r], (n, n))
            .coalesce()
            .to_sparse_csr()
        )
    unfused_ms = time_ms_(lambda: sum(torch.sparse.mm(per_rel[r], x * table[r]) for r in range(R)))
    rows.append(
        dict(
            section="propagate spmm_rel",
            impl=f"{R} x torch.sparse.mm (unfused)",
            ms=unfused_ms,
            rate_str=f"{comp / unfused_ms / 1e6:.0f} GB/s",
            of_ceiling=comp / unfused_ms / 1e6 / ceil["copy_GBs"],
            check="peer",
        )
    )
    try:
        import cupy
        import cupyx.scipy.sparse as cps

        a_cp = cps.csr_matrix(
            (cupy.from_dlpack(values), cupy.from_dlpack(indices), cupy.from_dlpack(indptr)), shape=(n, n)
        )
        x_cp = cupy.from_dlpack(x)
        cp_ms = time_ms_(lambda: a_cp @ x_cp)
        rows.append(
            dict(
                section="propagate spmm",
                impl="cupy cuSPARSE",
                ms=cp_ms,
                rate_str=f"{comp_plain / cp_ms / 1e6:.0f} GB/s",
                vs_peer=peer_ms / cp_ms,
                check="peer",
            )
        )
    except Exception as exc:  # optional peer
        log(f"cupy peer skipped: {exc}")

    for name in backends:
        try:
            mod = load("propagate", name)
        except Exception as exc:
            rows.append(dict(section="propagate", impl=name, check=f"unavailable: {exc}"))
            continue
        if name == "triton" and dev == "cuda":
            _tune_triton_propagate(
                mod, lambda: mod.spmm(indptr, indices, values, x, n), comp_plain, peer_ms, rows, log
            )
        # correctness first (fresh inputs above; outputs are freshly allocated by the kernels,
        # so poison a copy path: run twice and compare bits for determinism too)
        y1 = mod.spmm_rel(indptr, indices, values, relation, table, x, n)
        y2 = mod.spmm_rel(indptr, indices, values, relation, table, x, n)
        yp = mod.spmm(indptr, indices, values, x, n)
        dx, g = mod.spmm_rel_backward(*t, table, dy, x, R, True, True)
        errs = dict(
            spmm=rel_err(yp, y_ref_plain),
            spmm_rel=rel_err(y1, y_ref),
            dx=rel_err(dx, dx_ref),
            g=rel_err(g, g_ref),
        )
        ok = all(e < 1e-5 for e in errs.values()) and bool(torch.isfinite(y1).all())
        det = torch.equal(y1, y2)
        chk = (
            ("ok" if ok else "FAIL")
            + (" det" if det else " NONDET")
            + " "
            + " ".join(f"{k}={v:.1e}" for k, v in errs.items())
        )
        ms = time_ms_(lambda: mod.spmm(indptr, indices, values, x, n))
        rows.append(
            dict(
                section="propagate spmm",
                impl=name,
                ms=ms,
                rate_str=f"{comp_plain / ms / 1e6:.0f} GB/s",
                vs_peer=peer_ms / ms,
                of_ceiling=comp_plain / ms / 1e6 / ceil["copy_GBs"],
                check=chk,
            )
        )
        ms = time_ms_(lambda: mod.spmm_rel(indptr, indices, values, relation, table, x, n))
        rows.append(
            dict(
                section="propagate spmm_rel",
                impl=name,
                ms=ms,
                rate_str=f"{comp / ms / 1e6:.0f} GB/s (gathered model {gath / ms / 1e6:.0f})",
                vs_peer=unfused_ms / ms,
                of_ceiling=comp / ms / 1e6 / ceil["copy_GBs"],
                check=chk,
            )
        )
        ms = time_ms_(lambda: mod.spmm_rel_backward(*t, table, dy, x, R, True, True))
        rows.append(
            dict(
                section="propagate backward dx+g",
                impl=name,
                ms=ms,
                rate_str=f"{2 * comp / ms / 1e6:.0f} GB/s (2 passes model)",
                vs_peer=2 * unfused_ms / ms,
                check=chk,
            )
        )
        log(f"propagate {name}: {chk}")


#: Work partition and tile of the triton propagate kernel tried on the benchmark graph:
#: (TARGET_WORK edges per program, BLOCK_E edges per step, NUM_WARPS).
TRITON_PROPAGATE_CONFIGS = tuple((tw, be, nw) for tw in (1024, 4096) for be in (16, 32, 64) for nw in (2, 4))


def _tune_triton_propagate(mod, run, nbytes, peer_ms, rows, log):
    """Time ``run`` (the triton spmm) for each TRITON_PROPAGATE_CONFIGS entry, add a row per
    config, and leave the module on the fastest."""
    base = (mod.TARGET_WORK, mod.BLOCK_E, mod.NUM_WARPS)
    res = {}
    for cfg in TRITON_PROPAGATE_CONFIGS:
        mod.TARGET_WORK, mod.BLOCK_E, mod.NUM_WARPS = cfg
        try:
            res[cfg] = time_ms(run, warmup=1, reps=10, max_s=5)
        except Exception as exc:
            log(f"triton propagate config {cfg} failed: {type(exc).__name__}: {exc}")
    best = min(res, key=res.get) if res else base
    mod.TARGET_WORK, mod.BLOCK_E, mod.NUM_WARPS = best
    for cfg, ms in res.items():
        rows.append(
            dict(
                section="propagate spmm, triton configs",
                impl=f"TARGET_WORK={cfg[0]} BLOCK_E={cfg[1]} warps={cfg[2]}"
                + (" (default)" if cfg == base else "")
                + (" (best)" if cfg == best else ""),
                ms=ms,
                rate_str=f"{nbytes / ms / 1e6:.0f} GB/s",
                vs_peer=peer_ms / ms,
                check="timing only",
            )
        )
    log(
        f"triton propagate configs: best {best} {res.get(best, float('nan')):.3f} ms "
        f"(default {base}: {res.get(base, float('nan')):.3f} ms)"
    )


def _knn_reference(xn, k, rows=None):
    """Exact top-k by chunked xn @ xn.T (fp32, no TF32) + torch.topk, self masked."""
    torch.backends.cuda.matmul.allow_tf32 = False
    n = xn.shape[0]
    chunk = knn_chunk_rows(n)
    sel = torch.arange(n, device=xn.device) if rows is None else rows
    out_i, out_v = [], []
    for a in range(0, sel.numel(), chunk):
        r = sel[a : a + chunk]
        s = xn[r] @ xn.T
        s[torch.arange(r.numel(), device=xn.device), r] = float("-inf")
        v, i = torch.topk(s, k, dim=1)
        out_i.append(i)
        out_v.append(v)
    return torch.cat(out_i), torch.cat(out_v)


#: Triton tile shapes tried for the TF32 candidate pass at the first kNN size (the fastest is
#: kept for the larger sizes): (BLOCK_M, BLOCK_N, num_warps, packed int64 keys). The entry with
#: pair lists is the A/B of the packed keys (slifmr_kernels/topk/triton.py) on the default shape.
TRITON_TF32_CONFIGS = (
    (32, 64, 4, True),
    (64, 64, 4, True),
    (64, 64, 4, False),
    (64, 128, 8, True),
    (128, 64, 8, True),
)


def _knn_variants(name, mod):
    """(label, topk function) of a backend: the exact kernel and, when the backend has one,
    the TF32 candidates + fp32 re-rank path (rerank.py)."""
    if hasattr(mod, "topk_tf32"):
        return [(f"{name} exact fp32", mod.topk_exact), (f"{name} tf32+rerank", mod.topk_tf32)]
    return [(name, mod.topk)]


def _tune_triton_tf32(mod, xn, k, log, dev, rows, sec):
    """Time the TF32 candidate pass of the triton backend for each TRITON_TF32_CONFIGS entry
    on xn (a table row each); install the fastest as the backend's config. Returns
    {config: ms}."""
    from slifmr_kernels.topk import rerank

    base = mod._config
    c = rerank.candidate_count(k, xn.shape[0])
    res = {}

    def config(bm, bn, nw, packed):
        return lambda d, kk: dict(base(d, kk), BLOCK_M=bm, BLOCK_N=bn, num_warps=nw, PACKED=packed)

    for cf in TRITON_TF32_CONFIGS:
        mod._config = config(*cf)
        try:
            res[cf] = time_ms(
                lambda: mod.topk_candidates(xn, xn, c, True, None, None),
                warmup=1,
                reps=3,
                max_s=20,
                device=dev,
            )
        except Exception as exc:  # a shape this triton cannot compile: skip it
            log(f"triton config {cf} failed: {type(exc).__name__}: {exc}")
    best = min(res, key=res.get) if res else None
    mod._config = base if best is None else config(*best)
    for (bm, bn, nw, packed), ms in res.items():
        rows.append(
            dict(
                section=sec,
                ms=ms,
                check="candidates only" + (" (used)" if (bm, bn, nw, packed) == best else ""),
                impl=f"triton tf32 candidates BLOCK_M={bm} BLOCK_N={bn} warps={nw} "
                f"{'packed keys' if packed else 'pair lists'}",
            )
        )
    log(
        "triton tf32 configs (BLOCK_M, BLOCK_N, warps, packed) -> ms: "
        + ", ".join(f"{cf}: {ms:.1f}" for cf, ms in res.items())
        + f"; using {best}"
    )
    return res


def check_knn(args, backends, ceil, rows, log):
    from slifmr_kernels.backends import load
    from slifmr_kernels.topk import rerank

    k, d, dev = args.k, args.dim, args.device
    predicted = {}
    tuned = False
    warm = False  # after the first size, every kernel is compiled: time one run, no warm-up
    for n in args.knn_sizes:
        sec = f"kNN N={n} d={d} k={k}"
        x = torch.randn(n, d, device=dev)
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        flops = knn_flops(n, n, d)
        reps = 3 if n <= 300_000 else 1
        wu = 0 if warm else 1
        peer_ms = time_ms(lambda: _knn_reference(xn, k), warmup=wu, reps=reps, max_s=60, device=dev)
        rows.append(
            dict(
                section=sec,
                impl="X@X.T chunks + torch.topk (fp32)",
                ms=peer_ms,
                rate_str=f"{flops / peer_ms / 1e9:.1f} TFLOP/s",
                of_ceiling=flops / peer_ms / 1e9 / ceil["gemm_fp32_TFLOPs"],
                check="peer",
            )
        )
        check_rows = torch.randperm(n, device=dev)[:4096]
        ref_i, ref_v = _knn_reference(xn, k, check_rows)
        try:
            import faiss

            if hasattr(faiss, "StandardGpuResources"):
                res = faiss.StandardGpuResources()
                xc = xn.cpu().numpy()
                index = faiss.GpuIndexFlatIP(res, d)
                index.add(xc)
                t0 = time.perf_counter()
                index.search(xc, k + 1)
                f_ms = 1e3 * (time.perf_counter() - t0)  # includes host<->device copies
                rows.append(
                    dict(
                        section=sec,
                        impl="faiss GpuIndexFlatIP (host arrays)",
                        ms=f_ms,
                        rate_str=f"{flops / f_ms / 1e9:.1f} TFLOP/s",
                        vs_peer=peer_ms / f_ms,
                        check="peer",
                    )
                )
        except Exception as exc:
            log(f"faiss peer skipped: {exc}")
        for name in backends + ["auto"]:
            if name == "auto":  # what a user gets: the public op with its automatic choice
                import slifmr_kernels as sk

                variants = [
                    (
                        "sk.topk_similarity (auto)",
                        lambda a, b, kk, ex, p, i: sk.topk_similarity(
                            a, kk, y=None if a is b else b, metric="ip", exclude_self=ex
                        ),
                    )
                ]
            else:
                try:
                    mod = load("topk", name)
                except Exception as exc:
                    rows.append(dict(section=sec, impl=name, check=f"unavailable: {exc}"))
                    continue
                if name == "triton" and dev == "cuda" and not tuned and hasattr(mod, "_config"):
                    _tune_triton_tf32(mod, xn, k, log, dev, rows, sec)
                    tuned = True
                variants = _knn_variants(name, mod)
            for label, fn in variants:
                if predicted.get(label, 0) > args.max_knn_s:
                    rows.append(
                        dict(section=sec, impl=label, check=f"skipped: predicted {predicted[label]:.0f} s")
                    )
                    continue
                try:
                    # without self exclusion each row's best is itself
                    sub_i, _ = fn(xn[check_rows], xn, k, False, None, None)
                    out = {}

                    def run():
                        out["r"] = fn(xn, xn, k, True, None, None)

                    ms = time_ms(run, warmup=wu, reps=reps, max_s=60, device=dev)
                except Exception as exc:
                    rows.append(dict(section=sec, impl=label, check=f"error: {type(exc).__name__}: {exc}"))
                    log(f"kNN {n} {label}: {type(exc).__name__}: {exc}")
                    continue
                idx, val = out["r"]
                rec, exact = recall_with_ties(
                    idx[check_rows].cpu(), val[check_rows].cpu(), ref_i.cpu(), ref_v.cpu()
                )
                self_ok = not bool((idx == torch.arange(n, device=dev)[:, None]).any())
                sub_ok = bool((sub_i[:, 0] == check_rows).all())
                chk = (
                    f"recall {rec:.4f} (exact ids {exact:.4f})"
                    + ("" if self_ok else " SELF-LEAK")
                    + ("" if sub_ok else " NO-SELF-FIRST")
                )
                if "rerank" in label:
                    chk += f", {rerank.last_fallback_rows()} rows fell back"
                if name == "auto":
                    chk += f", served by {sk.last_backend('topk')}"
                rows.append(
                    dict(
                        section=sec,
                        impl=label,
                        ms=ms,
                        rate_str=f"{flops / ms / 1e9:.1f} TFLOP/s",
                        vs_peer=peer_ms / ms,
                        # TF32 rows against the TF32 GEMM rate, exact ones fp32
                        of_ceiling=flops
                        / ms
                        / 1e9
                        / ceil[
                            "gemm_tf32_TFLOPs" if "tf32" in label or name == "auto" else "gemm_fp32_TFLOPs"
                        ],
                        check=chk,
                    )
                )
                log(f"kNN {n} {label}: {ms:.0f} ms {chk}")
                nxt = [s_ for s_ in args.knn_sizes if s_ > n]
                if nxt:  # the work grows as N^2
                    predicted[label] = ms / 1e3 * (nxt[0] / n) ** 2
        warm = True
        x = xn = None  # free the inputs before the next size (the timed closures are done)


def _scores_reference(u, items, k, ex_ptr, ex_idx, batch=8192):
    """Dense scores per user batch + masking of the training items + torch.topk (fp32)."""
    out_i, out_v = [], []
    n = u.shape[0]
    owner = torch.repeat_interleave(torch.arange(n, device=u.device), ex_ptr[1:] - ex_ptr[:-1])
    for a in range(0, n, batch):
        b = min(n, a + batch)
        s = u[a:b] @ items.T
        lo, hi = int(ex_ptr[a]), int(ex_ptr[b])
        s[owner[lo:hi] - a, ex_idx[lo:hi].long()] = float("-inf")
        v, i = torch.topk(s, k, dim=1)
        out_i.append(i)
        out_v.append(v)
    return torch.cat(out_i), torch.cat(out_v)


def check_topk_scores(args, backends, ceil, rows, log):
    """Full-ranking evaluation shape: users x items, k = 20, each user's training items
    excluded through the exclusion CSR (the path of sk.topk_scores)."""
    from slifmr_kernels.backends import load

    dev, d = args.device, args.dim
    n_users, n_items, per_user, k = args.users, args.items, 20, 20
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    u = torch.randn(n_users, d, device=dev, generator=g)
    items = torch.randn(n_items, d, device=dev, generator=g)
    lens = torch.randint(0, 2 * per_user, (n_users,), device=dev, generator=g)
    ex_ptr = torch.zeros(n_users + 1, dtype=torch.int64, device=dev)
    ex_ptr[1:] = torch.cumsum(lens, 0)
    ex_idx = torch.randint(0, n_items, (int(ex_ptr[-1]),), device=dev, generator=g, dtype=torch.int32)
    sec = f"topk_scores {n_users}x{n_items} d={d} k={k} (~{per_user} excluded/user)"
    flops = knn_flops(n_users, n_items, d)
    peer_ms = time_ms(lambda: _scores_reference(u, items, k, ex_ptr, ex_idx), device=dev)
    rows.append(
        dict(
            section=sec,
            impl="dense scores + mask + torch.topk",
            ms=peer_ms,
            rate_str=f"{flops / peer_ms / 1e9:.1f} TFLOP/s",
            check="peer",
        )
    )
    ref_i, ref_v = _scores_reference(u, items, k, ex_ptr, ex_idx)
    for name in backends:
        try:
            mod = load("topk", name)
        except Exception as exc:
            rows.append(dict(section=sec, impl=name, check=f"unavailable: {exc}"))
            continue
        for label, fn in _knn_variants(name, mod):
            try:
                out = {}

                def run():
                    out["r"] = fn(u, items, k, False, ex_ptr, ex_idx)

                ms = time_ms(run, device=dev)
            except Exception as exc:
                rows.append(dict(section=sec, impl=label, check=f"error: {type(exc).__name__}: {exc}"))
                continue
            idx, val = out["r"]
            rec, exact = recall_with_ties(
                idx[:4096].cpu(), val[:4096].cpu(), ref_i[:4096].cpu(), ref_v[:4096].cpu()
            )
            leaked = _excluded_returned(idx, ex_ptr, ex_idx)
            chk = f"recall {rec:.4f} (exact ids {exact:.4f})" + (
                f" {leaked} EXCLUDED RETURNED" if leaked else ""
            )
            rows.append(
                dict(
                    section=sec,
                    impl=label,
                    ms=ms,
                    rate_str=f"{flops / ms / 1e9:.1f} TFLOP/s",
                    vs_peer=peer_ms / ms,
                    check=chk,
                )
            )
            log(f"topk_scores {label}: {ms:.1f} ms {chk}")


def check_fuse(args, backends, ceil, rows, log):
    """fuse_views forward + backward on the SLIF-MR shape: N rows, V = 3 views of d columns.
    Peers: the torch backend (one view at a time) and the plain F.normalize formula, both with
    autograd. Bytes moved (the floor): forward 4·N·(V + 2)·d, backward 4·N·(2V + 1)·d."""
    import slifmr_kernels as sk
    from slifmr_kernels.backends import load
    from slifmr_kernels.testing import fuse_views_formula as plain

    dev, d, V, n = args.device, args.dim, 3, args.fuse_rows
    g = torch.Generator(device=dev).manual_seed(args.seed + 2)
    z0, v0, grad = (torch.randn(n, c, device=dev, generator=g) for c in (d, V * d, d))
    a0 = torch.rand(V, device=dev, generator=g) + 0.5
    v0[0, :d] = 0.0  # a clamped row
    nbytes = 4 * n * ((V + 2) + (2 * V + 1)) * d
    sec = f"fuse_views fwd+bwd N={n} V={V} d={d}"

    def step(fn):
        z, a, v = (t.detach().requires_grad_() for t in (z0, a0, v0))
        out = fn(z, a, v)
        out.backward(grad)
        return out, a.grad, v.grad

    exact = [t.double().requires_grad_() for t in (z0, a0, v0)]
    ref_out = plain(*exact)
    ref_out.backward(grad.double())
    ref = (ref_out.detach(), exact[1].grad, exact[2].grad)
    peers = {
        "plain F.normalize + autograd": plain,
        "sk.fuse_views torch backend": lambda z, a, v: sk.fuse_views(z, a, v, backend="torch"),
    }
    peer_ms = None
    for label, fn in peers.items():
        ms = time_ms(lambda: step(fn), device=dev)
        peer_ms = ms if peer_ms is None else peer_ms
        rows.append(
            dict(
                section=sec,
                impl=label,
                ms=ms,
                rate_str=f"{nbytes / ms / 1e6:.0f} GB/s",
                of_ceiling=nbytes / ms / 1e6 / ceil["copy_GBs"],
                check="peer",
            )
        )
    for name in backends:
        try:
            load("fuse", name)
        except Exception as exc:
            rows.append(dict(section=sec, impl=name, check=f"unavailable: {exc}"))
            continue

        def fn(z, a, v, name=name):
            return sk.fuse_views(z, a, v, backend=name)

        got, again = step(fn), step(fn)
        errs = [float((x.double() - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(got, ref)]
        ok = all(e < 1e-5 for e in errs)
        det = all(torch.equal(x, y) for x, y in zip(got, again))
        chk = (
            ("ok" if ok else "FAIL")
            + (" det" if det else " NONDET")
            + " "
            + " ".join(f"{k}={e:.1e}" for k, e in zip(("out", "dalpha", "dviews"), errs))
        )
        ms = time_ms(lambda: step(fn), device=dev)
        rows.append(
            dict(
                section=sec,
                impl=name,
                ms=ms,
                rate_str=f"{nbytes / ms / 1e6:.0f} GB/s",
                vs_peer=peer_ms / ms,
                of_ceiling=nbytes / ms / 1e6 / ceil["copy_GBs"],
                check=chk,
            )
        )
        log(f"fuse_views {name}: {ms:.2f} ms {chk}")


def _excluded_returned(idx, ex_ptr, ex_idx):
    """How many returned (row, column) pairs are in the rows' exclusion lists."""
    n = idx.shape[0]
    owner = torch.repeat_interleave(torch.arange(n, device=idx.device), ex_ptr[1:] - ex_ptr[:-1])
    m = int(max(int(idx.max()), int(ex_idx.max()) if ex_idx.numel() else 0)) + 1
    banned = owner * m + ex_idx.long()
    got = torch.arange(n, device=idx.device)[:, None] * m + idx
    return int(torch.isin(got[idx >= 0], banned).sum())


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to measure (see --help)")
        return 2
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)

    torch.manual_seed(args.seed)
    on_gpu = args.device == "cuda"
    meta = dict(
        device=torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
        capability=torch.cuda.get_device_capability() if on_gpu else None,
        cuda=torch.version.cuda,
        args={k: v for k, v in vars(args).items() if k not in ("knn_sizes",)},
    )
    meta.update(environment())
    backends = list(args.backend_list)
    if "cuda" in backends and on_gpu:
        try:
            meta["cuda_extension"] = ensure_cuda_extension(args.build, log)
        except Exception as exc:
            log(f"cuda extension unavailable: {exc}")
            meta["cuda_extension"] = f"unavailable: {exc}"
    rows = []
    ceil = measure_ceilings(log, args.device)
    meta["ceilings"] = ceil
    for section, fn in (
        ("propagate", check_propagate),
        ("knn", check_knn),
        ("topk_scores", check_topk_scores),
        ("fuse", check_fuse),
    ):
        try:
            fn(args, backends, ceil, rows, log)
        except Exception as exc:  # keep what was measured
            log(f"{section} aborted: {type(exc).__name__}: {exc}")
            rows.append(dict(section=section, impl="-", check=f"aborted: {exc}"))
        write_report(args.out, meta, rows)
    meta["total_s"] = time.perf_counter() - t0
    write_report(args.out, meta, rows)
    print(format_table(rows))
    print(f"wrote {args.out}/gpu_check.md and .json in {meta['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
