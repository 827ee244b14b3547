"""Top-k similarity on CPU: the Numba backend against its peers, measured in one run.

Run the numbers you report under the exclusive CPU lock::

    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py knn --n 200000 --d 64
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py knn --n 200000 --d 384
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py scores
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py variants --n 60000 --d 64
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py gemm --n 24000 --d 384
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py bf16 --n 40000 --d 384
    flock -x /tmp/slifmr-cpu.lock python bench/compare_topk.py approx --n 100000 --d 64

Tasks (float32; every method runs once on the same data unless ``--repeat``):

* ``knn``: exact kNN graph of N clustered, L2-normalised vectors, self excluded, k = 10.
  Ours: ``sk.topk_similarity(x, k, metric="ip", backend="numba")``. Peers: FAISS
  ``IndexFlatIP`` (exact; a self-search returns each row itself, so it is asked for k + 1 and
  the self match is dropped — the row's own id, or the last column when a duplicate with an
  equal score displaced it); ``X @ X.T`` in row chunks of ~256 MiB of scores, diagonal set
  to -inf, then ``torch.topk``. Ceilings: the same L2-tiled single-thread-BLAS GEMM loop as
  the kernel without any selection ("sgemm-only", what K1 calls sgemm speed), and one
  2-thread ``torch.mm`` on a 4096 x 4096 block. GFLOP/s = 2·N²·d / time.
* ``scores``: full-ranking recommendation, 50k users x 20k items, d = 64, k = 20, about 1M
  distinct power-law training pairs excluded. Ours: ``sk.topk_scores(..., exclude=g)``.
  Peer: user batches of 2048: dense ``U_b @ I.T``, training pairs set to -inf,
  ``torch.topk``.
* ``gemm``: the GEMM ceilings at this d — scipy's OpenBLAS sgemm (the BLAS Numba's
  ``np.dot`` calls) on one 8192 x 8192 x d product with 2 threads and with 1, and the
  sgemm-only tile loop and the whole kernel (same lists checked) for the kernel's tile shape
  and for the ``--shapes`` given. The OpenBLAS kernel family (``OPENBLAS_CORETYPE``, else
  detected) is in the title.
* ``bf16``: the exact bf16-candidate path (topk/bf16.py: bf16 GEMM tiles, C candidates per
  row, fp32 re-rank, per-row certificate, 4x retry then fp32 for the rows it does not prove)
  against the fp32 Numba kernel and FAISS ``IndexFlatIP`` on the same clustered data; the
  ``fallback`` column counts the rows retried and the rows recomputed in fp32. Ceilings: bf16
  ``torch.mm`` on the path's tiles (2 threads, one tile each) and 2-thread scipy sgemm.
* ``approx``: ``sk.knn_graph(x, k, method="approx")`` (random-projection blocks + NN-descent)
  against the exact graph and FAISS ``IndexHNSWFlat`` / ``IndexIVFFlat`` (self dropped from
  k + 1), recall@k against the exact graph; ``--data clustered`` or ``ml1m`` (ml-1m's text
  features, replicated with noise up to ``--n`` rows).
* ``variants``: the fused kernel (GEMM per L2 tile inside the parallel region, BLAS pinned
  to one thread) against ``topk_outer`` (4096 x 4096 blocks from a 2-thread ``torch.mm``,
  selection parallel in Numba), against the sgemm-only loop.

Times: ``time_s`` is wall time, ``cpu_s`` the process CPU seconds of the same run (2 threads:
about 2 x wall on an idle machine; on a loaded one it still counts only the work done, so
compare ``cpu_s`` when other jobs shared the cores).

Agreement: for every row, our index set must equal the peer's, except where the differing
entries score within 1e-5 of the row's k-th score (ties up to float rounding: FAISS and
torch sum the dot products in other orders). Peak extra memory: the growth of VmHWM (peak
RSS, reset through /proc/self/clear_refs before each method) over the RSS before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):  # a checkout without an install; harness.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

from harness import append_jsonl, blas_core, environment, markdown_table, time_call  # noqa: E402

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels.refine.op import knn_recall  # noqa: E402
from slifmr_kernels.testing import power_law_pairs  # noqa: E402
from slifmr_kernels.topk import numba as nbk  # noqa: E402

# ----------------------------------------------------------------------------- helpers

LAST_CPU = {}


def measure(fn, repeat=1):
    """(best wall seconds, result, peak extra bytes) of ``repeat`` calls of fn(), no warm-up
    (the tasks warm their kernels on small slices). The process CPU seconds of the same
    (best) call go to LAST_CPU["s"]: on a shared, loaded machine CPU time counts the work
    done, where wall time also counts the waits for a core."""
    t = time_call(fn, repeats=repeat, stat="min", track_memory=True)
    LAST_CPU["s"] = t.cpu_seconds
    return t.seconds, t.result, t.peak_extra_bytes


def clustered(n, d, seed=0, clusters=1000, spread=0.6):
    """Unit rows around random centres: item-embedding-like data with real neighbourhoods."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)]
    x += spread * torch.randn(n, d, generator=g)
    return sk.normalize_rows(x).contiguous()


def agreement(idx_a, idx_b, x, y, exclude_mask_fn=None, tol=1e-5):
    """Rows whose index sets differ by more than ties within tol of the k-th score."""
    bad = 0
    diff_rows = (torch.sort(idx_a, 1).values != torch.sort(idx_b, 1).values).any(1)
    for i in diff_rows.nonzero().squeeze(1).tolist():
        sa, sb = set(idx_a[i].tolist()), set(idx_b[i].tolist())
        only = list((sa ^ sb) - {-1})
        s_only = x[i].double() @ y[only].double().T
        kth = (x[i].double() @ y[idx_a[i][idx_a[i] >= 0]].double().T).min()
        if bool(((s_only - kth).abs() > tol).any()):
            bad += 1
    return int(diff_rows.sum()), bad


def sgemm_only_loop(shape=None):
    """The kernel's tiling with the selection removed: the GEMM ceiling of the fused design.
    ``shape``: (rows, cols) of the tiles instead of the kernel's ``tile_shape``."""
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def loop(x, y, tr, tc):
        n, m = x.shape[0], y.shape[0]
        nt = (n + tr - 1) // tr
        acc = np.zeros(nt, dtype=np.float64)
        for rt in prange(nt):
            r0 = rt * tr
            r1 = min(n, r0 + tr)
            space = np.empty(tr * tc, dtype=x.dtype)
            for c0 in range(0, m, tc):
                c1 = min(m, c0 + tc)
                tile = space[: (r1 - r0) * (c1 - c0)].reshape((r1 - r0, c1 - c0))
                np.dot(x[r0:r1], y[c0:c1].T, tile)
                acc[rt] += tile[0, 0]  # keep the GEMM observable
        return acc

    def run(x, y):
        tr, tc = shape or nbk.tile_shape(x.shape[0], y.shape[0], x.shape[1], x.element_size())
        with nbk._blas_single_thread():
            loop(x.numpy(), y.numpy(), tr, tc)

    return run


def torch_mm_rate(d, size=4096, repeat=5):
    a, b = torch.randn(size, d), torch.randn(size, d)
    out = torch.empty(size, size)
    t = time_call(lambda: torch.mm(a, b.T, out=out), repeats=repeat, warmup=1)
    return 2 * size * size * d * repeat / sum(t.samples) / 1e9


def chunked_torch_knn(x, k, budget=1 << 26):
    n = x.shape[0]
    rows = max(1, budget // n)
    idx = torch.empty(n, k, dtype=torch.int64)
    val = torch.empty(n, k)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        s = x[r0:r1] @ x.T
        s[torch.arange(r1 - r0), torch.arange(r0, r1)] = float("-inf")
        v, i = torch.topk(s, k, dim=1)
        idx[r0:r1], val[r0:r1] = i, v
    return idx, val


def faiss_knn(x, k):
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(x.shape[1])
    xn = x.numpy()
    index.add(xn)
    D, I = index.search(xn, k + 1)
    keep = self_match_dropped(torch.from_numpy(I))
    n = x.shape[0]
    return torch.from_numpy(I)[keep].view(n, k), torch.from_numpy(D)[keep].view(n, k)


def self_match_dropped(idx):
    """(N, k + 1) bool mask of a self-search's (N, k + 1) neighbour ids without each row's self
    match: the row's own id, or the last column when a duplicate with an equal score pushed
    it out of the k + 1."""
    n, k1 = idx.shape
    is_self = idx == torch.arange(n)[:, None]
    drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full((n,), k1 - 1))
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[torch.arange(n), drop] = False
    return keep


def blas_rate(n, d, threads, repeat=3):
    """GFLOP/s of scipy's OpenBLAS sgemm (the library Numba's np.dot calls), C = A·Bᵀ with
    A, B (n, d) float32, on ``threads`` BLAS threads: best of ``repeat``."""
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    g = np.random.default_rng(0)
    a = np.asfortranarray(g.standard_normal((n, d), dtype=np.float32))
    b = np.asfortranarray(g.standard_normal((n, d), dtype=np.float32))
    c = np.zeros((n, n), dtype=np.float32, order="F")
    with threadpool_limits(limits=threads, user_api="blas"):
        best = time_call(
            lambda: blas.sgemm(1.0, a, b, trans_b=True, c=c, overwrite_c=True),
            repeats=repeat,
            warmup=1,
            stat="min",
        ).seconds
    return 2.0 * n * n * d / best / 1e9


def _row(name, t, flop, extra, ours_t, cpu=None, **kw):
    """A table row; ``cpu``: process CPU seconds of the run (default: the last measure())."""
    cpu = LAST_CPU.get("s", float("nan")) if cpu is None else cpu
    r = {
        "method": name,
        "time_s": f"{t:.2f}",
        "cpu_s": f"{cpu:.2f}",
        "GFLOP/s": f"{flop / t / 1e9:.1f}",
        "vs ours": f"{t / ours_t:.2f}x",
        "peak_extra_MiB": f"{extra / 2**20:.0f}",
    }
    r.update(kw)
    return r


# ----------------------------------------------------------------------------- tasks


def task_knn(args):
    n, d, k = args.n, args.d, args.k
    x = clustered(n, d, seed=args.seed)
    flop = 2.0 * n * n * d
    # Warm up every compiled path on a small slice (JIT time is not kernel time).
    sk.topk_similarity(x[:2000], k, metric="ip", backend="numba")
    gemm = sgemm_only_loop()
    gemm(x[:1000], x[:1000])
    rows = []
    t_ours, (i_ours, _), m_ours = measure(
        lambda: sk.topk_similarity(x, k, metric="ip", backend="numba"), args.repeat
    )
    c_ours = LAST_CPU["s"]
    if not args.no_ceiling:
        t_gemm, _, _ = measure(lambda: gemm(x, x), args.repeat)
        c_gemm = LAST_CPU["s"]
    mm_rate = torch_mm_rate(d)
    blas_2t = blas_rate(8192, d, 2)
    rows.append(
        _row(
            "ours (numba)",
            t_ours,
            flop,
            m_ours,
            t_ours,
            cpu=c_ours,
            **({} if args.no_ceiling else {"% sgemm-only": f"{100 * t_gemm / t_ours:.0f}"}),
        )
    )
    if not args.no_ceiling:
        rows.append(_row("sgemm-only tiles (ceiling)", t_gemm, flop, 0, t_ours, cpu=c_gemm))
    if not args.no_faiss:
        t_f, (i_f, _), m_f = measure(lambda: faiss_knn(x, k), args.repeat)
        diff, bad = agreement(i_ours, i_f, x, x)
        rows.append(
            _row(
                "FAISS IndexFlatIP (k+1, self dropped)",
                t_f,
                flop,
                m_f,
                t_ours,
                agree=f"{diff} rows differ, {bad} beyond ties",
            )
        )
    if not args.no_torch:
        t_t, (i_t, _), m_t = measure(lambda: chunked_torch_knn(x, k), args.repeat)
        diff, bad = agreement(i_ours, i_t, x, x)
        rows.append(
            _row(
                "X @ X.T chunks + torch.topk",
                t_t,
                flop,
                m_t,
                t_ours,
                agree=f"{diff} rows differ, {bad} beyond ties",
            )
        )
    tr, tc = nbk.tile_shape(n, n, d, x.element_size())
    title = (
        f"exact kNN graph, N = {n}, d = {d}, k = {k}, float32, tiles {tr}x{tc}; "
        f"2-thread torch.mm 4096x4096 block: {mm_rate:.0f} GFLOP/s; 2-thread scipy "
        f"sgemm 8192x8192 (OpenBLAS {blas_core()}): {blas_2t:.0f} GFLOP/s"
    )
    return (
        title,
        rows,
        ["method", "time_s", "cpu_s", "GFLOP/s", "vs ours", "% sgemm-only", "peak_extra_MiB", "agree"],
    )


def bf16_tile_rate(d, threads=2, tr=1024, tc=2048, repeat=5):
    """GFLOP/s of bf16 torch.mm on the bf16 path's tiles (one tile per thread, torch on one
    thread each, the way topk/bf16.py issues them): the GEMM ceiling of that path."""
    import threading

    from slifmr_kernels.topk import bf16

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(tr, d, generator=g).bfloat16() for _ in range(threads)]
    ys = [torch.randn(tc, d, generator=g).bfloat16() for _ in range(threads)]
    outs = [torch.empty(tr, tc, dtype=torch.bfloat16) for _ in range(threads)]

    def work(i):
        for _ in range(repeat):
            torch.mm(xs[i], ys[i].T, out=outs[i])

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work(0)
        t = time.perf_counter()
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        dt = time.perf_counter() - t
    finally:
        torch.set_num_threads(saved)
    del bf16
    return 2.0 * tr * tc * d * repeat * threads / dt / 1e9


def task_bf16(args):
    """Exact kNN: bf16 candidates + fp32 re-rank + certificate vs the fp32 Numba kernel vs
    FAISS IndexFlatIP, same data, same run."""
    from slifmr_kernels.topk import bf16

    n, d, k = args.n, args.d, args.k
    x = clustered(n, d, seed=args.seed)
    flop = 2.0 * n * n * d
    c = args.cands
    bf16.topk(x[:3000], x[:3000], k, True, None, None, c=c)  # JIT warm-up
    nbk.topk_fp32(x[:2000], x[:2000], k, True, None, None)
    rows = []
    t_b, (i_b, _), m_b = measure(lambda: bf16.topk(x, x, k, True, None, None, c=c), args.repeat)
    c_b = LAST_CPU["s"]
    fb = bf16.last_fallback_rows()
    t_f, (i_f, _), m_f = measure(lambda: nbk.topk_fp32(x, x, k, True, None, None), args.repeat)
    c_f = LAST_CPU["s"]
    diff, bad = agreement(i_b, i_f, x, x)
    rows.append(
        _row(
            "ours bf16 candidates + fp32 re-rank",
            t_b,
            flop,
            m_b,
            t_b,
            cpu=c_b,
            fallback=f"{fb[0] if fb else 0} retried, {fb[1] if len(fb) > 1 else 0} fp32",
            agree="(reference)",
        )
    )
    rows.append(
        _row(
            "ours fp32 (numba, previous auto)",
            t_f,
            flop,
            m_f,
            t_b,
            cpu=c_f,
            agree=f"{diff} rows differ, {bad} beyond ties",
        )
    )
    if not args.no_faiss:
        t_x, (i_x, _), m_x = measure(lambda: faiss_knn(x, k), args.repeat)
        diff, bad = agreement(i_b, i_x, x, x)
        rows.append(
            _row(
                "FAISS IndexFlatIP (k+1, self dropped)",
                t_x,
                flop,
                m_x,
                t_b,
                agree=f"{diff} rows differ, {bad} beyond ties",
            )
        )
    rate = bf16_tile_rate(d)
    blas_2t = blas_rate(4096, d, 2)
    title = (
        f"exact kNN graph, bf16 candidates, N = {n}, d = {d}, k = {k}, C = "
        f"{c or bf16.candidate_count(k, n)}; ceilings: bf16 torch.mm 1024x2048 tiles, 2 threads:"
        f" {rate:.0f} GFLOP/s; scipy sgemm 4096x4096, 2 threads (OpenBLAS {blas_core()}): "
        f"{blas_2t:.0f} GFLOP/s"
    )
    return (
        title,
        rows,
        ["method", "time_s", "cpu_s", "GFLOP/s", "vs ours", "peak_extra_MiB", "fallback", "agree"],
    )


def _graph_idx(g, n, k):
    return g.indices.to(torch.int64).view(n, k) if g.nnz == n * k else None


def approx_data(args):
    """(name, x): clustered unit rows, or ml-1m's text features (3533 x 384) — as is when
    --n <= 3533, else replicated with 5 % Gaussian noise per copy (real-like, N rows)."""
    if args.data == "clustered":
        return f"clustered (1000 centres, spread 0.6), d = {args.d}", clustered(
            args.n, args.d, seed=args.seed
        )
    feat = torch.from_numpy(np.load(ROOT.parent / "shared/data/ml-1m-kg-mm/text_feat.npy"))
    feat = sk.normalize_rows(feat.float())
    if args.n <= feat.shape[0]:
        return f"ml-1m text_feat.npy ({feat.shape[0]} x {feat.shape[1]})", feat.contiguous()
    g = torch.Generator().manual_seed(args.seed)
    reps = -(-args.n // feat.shape[0])
    x = feat.repeat(reps, 1)[: args.n]
    x = x + 0.05 * feat.std() * torch.randn(x.shape, generator=g)
    return (
        f"ml-1m text features x {reps} copies + 5 % noise ({args.n} x {feat.shape[1]})",
        sk.normalize_rows(x).contiguous(),
    )


def task_approx(args):
    """Approximate kNN graph (sk.knn_graph(method="approx")) vs exact vs FAISS HNSW / IVF:
    time and recall@k against the exact graph, same data, same run."""
    import faiss

    from slifmr_kernels.topk import approx

    faiss.omp_set_num_threads(torch.get_num_threads())
    k = args.k
    name, x = approx_data(args)
    n, d = x.shape
    approx.knn_graph_approx(x[:5000], k)  # JIT warm-up
    sk.knn_graph(x[:3000], k)
    rows = []
    if args.sample:  # exact neighbours of a row sample only (N too large for the full join)
        samp = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: args.sample]
        t_e, (i_s, _), m_e = measure(
            lambda: sk.topk_similarity(x[samp].contiguous(), k + 1, y=x, metric="ip", exclude_self=False)
        )
        c_e = LAST_CPU["s"] * n / args.sample
        keep = i_s != samp[:, None]
        e_idx = torch.stack([r[m][:k] for r, m in zip(i_s, keep)])
        t_e = t_e * n / args.sample
        args.no_faiss = True
    else:
        samp = None
        t_e, g_e, m_e = measure(lambda: sk.knn_graph(x, k, metric="ip"), args.repeat)
        c_e = LAST_CPU["s"]
        e_idx = _graph_idx(g_e, n, k)
    t_a, g_a, m_a = measure(lambda: sk.knn_graph(x, k, metric="ip", method="approx"), args.repeat)
    c_a = LAST_CPU["s"]
    a_idx = _graph_idx(g_a, n, k)
    r_a = knn_recall(a_idx if samp is None else a_idx[samp], e_idx)
    flop = 2.0 * n * n * d

    def hnsw():
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.add(x.numpy())
        index.hnsw.efSearch = 64
        _, i = index.search(x.numpy(), k + 1)
        return torch.from_numpy(i)

    def ivf():
        nlist = max(16, int(4 * n**0.5))
        q = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(q, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(
            x[torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(n, 40 * nlist)]].numpy()
        )
        index.add(x.numpy())
        index.nprobe = 16
        _, i = index.search(x.numpy(), k + 1)
        return torch.from_numpy(i)

    def drop_self(i):
        keep = i != torch.arange(n)[:, None]
        out = torch.full((n, k + 1), -1, dtype=torch.int64)
        for r in range(n):  # rows keep their first k non-self ids
            v = i[r][keep[r]][:k]
            out[r, : v.numel()] = v
        return out[:, :k]

    rows.append(
        _row(
            "exact sk.knn_graph (auto)"
            if samp is None
            else f"exact, extrapolated from {args.sample} sampled rows",
            t_e,
            flop,
            m_e,
            t_a,
            cpu=c_e,
            recall="1.000",
        )
    )
    rows.append(_row('ours sk.knn_graph(method="approx")', t_a, flop, m_a, t_a, cpu=c_a, recall=f"{r_a:.3f}"))
    if not args.no_faiss:
        t_h, i_h, m_h = measure(hnsw, args.repeat)
        c_h = LAST_CPU["s"]
        rows.append(
            _row(
                "FAISS HNSWFlat M=32 efC=64 efS=64",
                t_h,
                flop,
                m_h,
                t_a,
                cpu=c_h,
                recall=f"{knn_recall(drop_self(i_h), e_idx):.3f}",
            )
        )
        t_i, i_i, m_i = measure(ivf, args.repeat)
        c_i = LAST_CPU["s"]
        rows.append(
            _row(
                f"FAISS IVFFlat nlist={max(16, int(4 * n**0.5))} nprobe=16",
                t_i,
                flop,
                m_i,
                t_a,
                cpu=c_i,
                recall=f"{knn_recall(drop_self(i_i), e_idx):.3f}",
            )
        )
    title = (
        f"approximate kNN graph, {name}, N = {n}, k = {k}, inner product on unit rows; "
        f"recall@{k} vs the exact graph"
        f"{'' if samp is None else f' on {args.sample} sampled rows'}; "
        "GFLOP/s column = the exact join's 2·N²·d / time"
    )
    return title, rows, ["method", "time_s", "cpu_s", "vs ours", "peak_extra_MiB", "recall"]


def task_scores(args):
    n_users, n_items, d, k = args.users, args.items, args.d, args.k
    g = torch.Generator().manual_seed(args.seed)
    users = torch.randn(n_users, d, generator=g) * 0.3
    items = torch.randn(n_items, d, generator=g) * 0.3
    # args.pairs distinct power-law pairs (a pair repeated is one training interaction).
    src, dst = power_law_pairs(n_users, n_items, args.pairs, 1.0, distinct=True, generator=g)
    excl = sk.CSRGraph.from_edges(src, dst, shape=(n_users, n_items))
    flop = 2.0 * n_users * n_items * d
    sk.topk_scores(users[:500], items, k, exclude=None, backend="numba")

    def dense(batch=2048):
        idx = torch.empty(n_users, k, dtype=torch.int64)
        val = torch.empty(n_users, k)
        rows_all = excl.row_ids()
        cols_all = excl.indices.long()
        for r0 in range(0, n_users, batch):
            r1 = min(n_users, r0 + batch)
            s = users[r0:r1] @ items.T
            a, b = int(excl.indptr[r0]), int(excl.indptr[r1])
            s[rows_all[a:b] - r0, cols_all[a:b]] = float("-inf")
            v, i = torch.topk(s, k, dim=1)
            idx[r0:r1], val[r0:r1] = i, v
        return idx, val

    t_ours, (i_ours, _), m_ours = measure(
        lambda: sk.topk_scores(users, items, k, exclude=excl, backend="numba"), args.repeat
    )
    c_ours = LAST_CPU["s"]
    t_dense, (i_dense, _), m_dense = measure(dense, args.repeat)
    diff, bad = agreement(i_ours, i_dense, users, items)
    rows = [
        _row("ours: sk.topk_scores (numba)", t_ours, flop, m_ours, t_ours, cpu=c_ours),
        _row(
            "dense U_b @ I.T + mask + torch.topk (2048 users/batch)",
            t_dense,
            flop,
            m_dense,
            t_ours,
            agree=f"{diff} rows differ, {bad} beyond ties",
        ),
    ]
    title = (
        f"full ranking, {n_users} users x {n_items} items, d = {d}, k = {k}, "
        f"{excl.nnz} training pairs excluded (power law), float32"
    )
    return title, rows, ["method", "time_s", "cpu_s", "GFLOP/s", "vs ours", "peak_extra_MiB", "agree"]


def task_variants(args):
    n, d, k = args.n, args.d, args.k
    x = clustered(n, d, seed=args.seed)
    flop = 2.0 * n * n * d
    nbk.topk(x[:2000], x[:2000], k, True, None, None)
    nbk.topk_outer(x[:2000], x[:2000], k, True, None, None)
    gemm = sgemm_only_loop()
    gemm(x[:1000], x[:1000])
    t_f, (i_f, v_f), m_f = measure(lambda: nbk.topk(x, x, k, True, None, None), args.repeat)
    c_f = LAST_CPU["s"]
    t_o, (i_o, v_o), m_o = measure(lambda: nbk.topk_outer(x, x, k, True, None, None), args.repeat)
    c_o = LAST_CPU["s"]
    t_g, _, _ = measure(lambda: gemm(x, x), args.repeat)
    c_g = LAST_CPU["s"]
    diff, bad = agreement(i_f, i_o, x, x)
    rows = [
        _row("fused: GEMM per L2 tile in prange, 1-thread BLAS", t_f, flop, m_f, t_f, cpu=c_f),
        _row(
            "outer: 2-thread torch.mm 4096x4096 blocks, prange selection",
            t_o,
            flop,
            m_o,
            t_f,
            cpu=c_o,
            agree=f"{diff} rows differ, {bad} beyond ties",
        ),
        _row("sgemm-only tiles (no selection)", t_g, flop, 0, t_f, cpu=c_g),
    ]
    title = f"kernel structure, N = {n}, d = {d}, k = {k}, float32"
    return title, rows, ["method", "time_s", "cpu_s", "GFLOP/s", "vs ours", "peak_extra_MiB", "agree"]


def task_gemm(args):
    """The GEMM ceilings at this d: scipy's OpenBLAS sgemm on one big (n x n x d) product with
    2 threads and with 1, and the tile loop of the kernel (2 Numba threads, 1-thread BLAS per
    tile) for several tile shapes — which shape the kernel should use at this d."""
    n, d = args.n, args.d
    x = clustered(n, d, seed=args.seed)
    flop = 2.0 * n * n * d
    big = min(n, 8192)
    rows = [
        {"method": f"scipy sgemm {big}x{big}x{d}, 2 threads", "GFLOP/s": f"{blas_rate(big, d, 2):.1f}"},
        {"method": f"scipy sgemm {big}x{big}x{d}, 1 thread", "GFLOP/s": f"{blas_rate(big, d, 1):.1f}"},
    ]
    default = nbk.tile_shape(n, n, d, x.element_size())
    shapes = [default] + [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s.strip()]
    ref_idx = None
    for tr, tc in dict.fromkeys(shapes):
        tag = f"{tr}x{tc}" + (" (kernel's)" if (tr, tc) == default else "")
        loop = sgemm_only_loop((tr, tc))
        loop(x[:1000], x[:1000])
        t, _, _ = measure(lambda: loop(x, x), max(args.repeat, 2))
        rows.append(
            {
                "method": f"sgemm-only tile loop {tag}",
                "time_s": f"{t:.2f}",
                "cpu_s": f"{LAST_CPU['s']:.2f}",
                "GFLOP/s": f"{flop / t / 1e9:.1f}",
            }
        )
        # The whole kernel (selection included) with the same tiles: the shape to choose.
        saved = nbk.tile_shape
        nbk.tile_shape = lambda *_, s=(tr, tc): s
        try:
            t, (idx, _), _ = measure(lambda: nbk.topk(x, x, args.k, True, None, None), max(args.repeat, 2))
        finally:
            nbk.tile_shape = saved
        ref_idx = idx if ref_idx is None else ref_idx
        rows.append(
            {
                "method": f"kernel (k = {args.k}) {tag}",
                "time_s": f"{t:.2f}",
                "cpu_s": f"{LAST_CPU['s']:.2f}",
                "GFLOP/s": f"{flop / t / 1e9:.1f}",
                "same lists": "yes" if torch.equal(idx, ref_idx) else "NO",
            }
        )
    title = (
        f"GEMM ceilings, N = {n}, d = {d}, float32, OpenBLAS core {blas_core()} "
        f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}); best of "
        f"{max(args.repeat, 2)}"
    )
    return title, rows, ["method", "time_s", "cpu_s", "GFLOP/s", "same lists"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", choices=["knn", "scores", "variants", "gemm", "bf16", "approx"])
    p.add_argument(
        "--sample",
        type=int,
        default=0,
        help="approx: exact neighbours of this many sampled rows only (large N; "
        "exact time extrapolated, FAISS skipped)",
    )
    p.add_argument("--data", choices=["clustered", "ml1m"], default="clustered", help="approx: the data set")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=None, help="default 10 (knn) / 20 (scores)")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument(
        "--pairs", type=int, default=1_000_000, help="distinct training pairs to exclude (at least)"
    )
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-ceiling", action="store_true", help="knn: skip the sgemm-only loop")
    p.add_argument(
        "--shapes",
        default="128x512,256x512,512x256,512x512,256x1024,128x1024",
        help="gemm: extra tile shapes (rows x cols) to time",
    )
    p.add_argument(
        "--cands", type=int, default=None, help="bf16: candidates per row C (default bf16.candidate_count)"
    )
    p.add_argument("--output", help="append the result as JSON lines to this file")
    args = p.parse_args(argv)
    if args.k is None:
        args.k = 20 if args.task == "scores" else 10
    torch.manual_seed(args.seed)
    title, rows, cols = {
        "knn": task_knn,
        "scores": task_scores,
        "variants": task_variants,
        "gemm": task_gemm,
        "bf16": task_bf16,
        "approx": task_approx,
    }[args.task](args)
    info = environment()
    print(f"\n{title}\n{markdown_table(rows, cols, pad=True)}\n{json.dumps(info)}")
    if args.output:
        append_jsonl(args.output, {"task": args.task, "title": title, "rows": rows, "env": info})


if __name__ == "__main__":
    main()
