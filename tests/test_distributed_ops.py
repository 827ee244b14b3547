"""slifmr_kernels.distributed on real process groups: gloo over localhost, 1, 2 and 4 ranks.

Each world size is spawned once (module-scoped fixture); every rank runs every check against the
single-process ops on the same data (each rank can build the tiny global graph to compare) and
writes one outcome per check; the tests below read the outcomes. A separate spawn kills a rank
mid-op and checks that the survivor fails with DistributedError within the timeout.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
import traceback

import pytest
import torch
import torch.multiprocessing as mp

WORLD_SIZES = (1, 2, 4)
TIMEOUT_S = 10
CHECKS = (
    "propagate_forward",
    "propagate_partitions",
    "propagate_relations",
    "propagate_layers",
    "gradients",
    "backward_deterministic",
    "empty_shard",
    "report",
    "topk_similarity",
    "knn_graph",
    "topk_scores",
    "args_disagree",
    "build_errors",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The backend each world size runs (both the sharded and the single-process ops): the Numba
#: kernels (what "auto" picks on CPU) at 1 and 2 ranks; the torch reference at 4 ranks, where
#: loading the Numba kernels in two more processes on a 2-core machine would double the time.
BACKENDS = {1: "numba", 2: "numba", 4: "torch"}


def _init(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    # The default group only sequences the phases (a long timeout: a phase may take longer
    # than a check's); every check runs on a group with the short TIMEOUT_S.
    dist.init_process_group(
        "gloo", init_method="env://", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    return dist


# ---------------------------------------------------------------------------- group
#: The process group the checks run on: one spawn of 4 ranks runs the checks on the groups
#: {0}, {0, 1} and {0, 1, 2, 3} in turn (one start-up instead of three: importing torch and
#: tracing the first custom op take seconds per process on this 2-core machine).
_GROUP = [None]


def _skd():
    """slifmr_kernels.distributed with ``group=`` the current check group in every collective
    that takes one."""
    import functools
    import types

    import slifmr_kernels.distributed as skd

    g = _GROUP[0]
    ns = types.SimpleNamespace(**{k: getattr(skd, k) for k in skd.__all__})
    for name in ("topk_similarity", "knn_graph", "topk_scores"):
        setattr(ns, name, functools.partial(getattr(skd, name), group=g))

    class ShardedGraph(skd.ShardedGraph):
        @classmethod
        def from_edges(cls, *a, **kw):
            return skd.ShardedGraph.from_edges(*a, group=g, **kw)

    ns.ShardedGraph = ShardedGraph
    return ns


# ---------------------------------------------------------------------------- data
def _graph_data(n, e, P, seed, relations=0, dtype=torch.float32):
    """Random edges with duplicates and isolated nodes, split over P shards in a random way.
    Returns (shards, reference graph built from the shards concatenated in rank order)."""
    import slifmr_kernels as sk

    g = torch.Generator().manual_seed(seed)
    live = n - n // 5  # the last n // 5 nodes have no edges at all
    src = torch.randint(0, live, (e,), generator=g)
    dst = torch.randint(0, live, (e,), generator=g)
    src = torch.cat([src, src[: e // 10]])  # exact duplicates, summed by the constructor
    dst = torch.cat([dst, dst[: e // 10]])
    w = torch.rand(src.numel(), generator=g, dtype=torch.float64).to(dtype)
    rel = torch.randint(0, relations, (src.numel(),), generator=g) if relations else None
    who = torch.randint(0, P, (src.numel(),), generator=g)
    shards = []
    for r in range(P):
        m = who == r
        shards.append((src[m], dst[m], w[m], None if rel is None else rel[m]))
    cat = [torch.cat([s[i] for s in shards]) for i in range(3)]
    rcat = None if rel is None else torch.cat([s[3] for s in shards])
    ref = sk.CSRGraph.from_edges(
        cat[0], cat[1], cat[2], relation=rcat, shape=(n, n), num_relations=relations or None, dtype=dtype
    )
    return shards, ref


def _x(n, d, seed, dtype=torch.float32):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------- checks
def _check_propagate_forward(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 37
    shards, ref = _graph_data(n, 150, P, seed=1)
    s, d_, w, _ = shards[rank]
    sg = skd.ShardedGraph.from_edges(s, d_, w, num_nodes=n)
    x = _x(n, 8, seed=2)
    y = skd.propagate(sg, sg.local_rows(x))
    assert torch.equal(y, sk.propagate(ref, x)[sg.rows]), "forward not bit-identical"
    assert torch.equal(sg.gather(y), sk.propagate(ref, x))


def _check_propagate_partitions(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 41
    shards, ref = _graph_data(n, 160, P, seed=3)
    s, d_, w, _ = shards[rank]
    x = _x(n, 5, seed=4)
    want = sk.propagate(ref, x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    for part in (
        skd.partition_rows(n, P, order=order),
        skd.partition_rows(n, P, order=order, weights=ref.degrees().double() + 1),
    ):
        sg = skd.ShardedGraph.from_edges(s, d_, w, num_nodes=n, partition=part)
        assert torch.equal(sg.rows, part.rows_of(rank))
        assert torch.equal(skd.propagate(sg, sg.local_rows(x)), want[sg.rows])


def _check_propagate_relations(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 30
    shards, ref = _graph_data(n, 120, P, seed=6, relations=3)
    s, d_, w, r = shards[rank]
    rw = torch.tensor([0.5, 2.0, 1.5])
    sg = skd.ShardedGraph.from_edges(s, d_, w, r, num_nodes=n, num_relations=3)
    x = _x(n, 4, seed=7)
    emb = _x(3, 4, seed=8)
    got = skd.propagate(sg, sg.local_rows(x), relation_emb=emb, relation_weight=rw)
    assert torch.equal(got, sk.propagate(ref, x, relation_emb=emb, relation_weight=rw)[sg.rows])
    got = skd.propagate(sg, sg.local_rows(x), relation_weight=rw)
    assert torch.equal(got, sk.propagate(ref, x, relation_weight=rw)[sg.rows])


def _check_propagate_layers(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 33
    shards, ref = _graph_data(n, 140, P, seed=9)
    ref = ref.symmetrize().normalize()
    # every rank passes its share of the normalised graph's edges
    rows = ref.row_ids()
    m = torch.arange(ref.nnz) % P == rank
    sg = skd.ShardedGraph.from_edges(rows[m], ref.indices.long()[m], ref.values[m], num_nodes=n)
    x = _x(n, 6, seed=10)
    for combine in ("mean", "sum", "last"):
        got = skd.propagate_layers(sg, sg.local_rows(x), 3, combine=combine)
        want = sk.propagate_layers(ref, x, 3, combine=combine)[sg.rows]
        assert torch.equal(got, want), combine


def _grads(rank, P, seed):
    import torch.distributed as dist

    import slifmr_kernels as sk

    skd = _skd()
    n = 29
    shards, ref = _graph_data(n, 110, P, seed=seed, relations=2, dtype=torch.float64)
    s, d_, w, r = shards[rank]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    part = skd.partition_rows(n, P, order=order)
    sg = skd.ShardedGraph.from_edges(s, d_, w, r, num_nodes=n, partition=part, dtype=torch.float64)
    x = _x(n, 3, seed=11, dtype=torch.float64)
    emb0 = _x(2, 3, seed=12, dtype=torch.float64)
    wout = _x(n, 3, seed=13, dtype=torch.float64)
    # distributed
    xl = sg.local_rows(x).clone().requires_grad_()
    emb = emb0.clone().requires_grad_()
    y = skd.propagate_layers(sg, xl, 2, relation_emb=emb)
    (y * sg.local_rows(wout)).sum().backward()
    g_emb = emb.grad.clone()
    dist.all_reduce(g_emb, group=_GROUP[0])  # replicated parameter: contributions summed over ranks
    # single process
    xs = x.clone().requires_grad_()
    es = emb0.clone().requires_grad_()
    (sk.propagate_layers(ref, xs, 2, relation_emb=es) * wout).sum().backward()
    return sg, xl.grad, g_emb, xs.grad, es.grad


def _check_gradients(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    # x's gradient: bit-identical (the backward runs the forward kernel on the transposed
    # sharded graph, in the single-process order); the relation embeddings' gradient is a sum
    # of per-rank contributions: equal to rounding.
    sg, gx, ge, want_x, want_e = _grads(rank, P, seed=14)
    assert torch.equal(gx, want_x[sg.rows]), (gx - want_x[sg.rows]).abs().max()
    torch.testing.assert_close(ge, want_e, rtol=1e-12, atol=1e-12)
    # float32, constant relation weights (folded into the values), three layers
    n = 31
    shards, ref = _graph_data(n, 130, P, seed=30, relations=2)
    s, d_, w, r = shards[rank]
    sg = skd.ShardedGraph.from_edges(s, d_, w, r, num_nodes=n, relation_weight=[0.5, 2.0])
    x, wout = _x(n, 4, seed=31), _x(n, 4, seed=32)
    xl = sg.local_rows(x).clone().requires_grad_()
    (skd.propagate_layers(sg, xl, 3) * sg.local_rows(wout)).sum().backward()
    xs = x.clone().requires_grad_()
    (sk.propagate_layers(ref_with(ref, [0.5, 2.0]), xs, 3) * wout).sum().backward()
    assert torch.equal(xl.grad, xs.grad[sg.rows]), (xl.grad - xs.grad[sg.rows]).abs().max()
    # relation weights that need a gradient (a relation table in every edge)
    rw = torch.tensor([1.5, 0.25], requires_grad=True)
    xl = sg.local_rows(x).clone().requires_grad_()
    (skd.propagate(sg, xl, relation_weight=rw) * sg.local_rows(wout)).sum().backward()
    rws = torch.tensor([1.5, 0.25], requires_grad=True)
    xs = x.clone().requires_grad_()
    (sk.propagate(ref, xs, relation_weight=rws) * wout).sum().backward()
    assert torch.equal(xl.grad, xs.grad[sg.rows])
    g_rw = rw.grad.clone()
    import torch.distributed as dist

    dist.all_reduce(g_rw, group=_GROUP[0])
    torch.testing.assert_close(g_rw, rws.grad, rtol=1e-5, atol=1e-5)


def ref_with(ref, relation_weight):
    """``ref`` with its relation weights replaced (same edges)."""
    import slifmr_kernels as sk

    return sk.CSRGraph.from_edges(
        ref.row_ids(),
        ref.indices.long(),
        ref.values,
        relation=ref.relation.long(),
        shape=ref.shape,
        num_relations=ref.num_relations,
        relation_weight=torch.tensor(relation_weight),
    )


def _check_backward_deterministic(rank, P):
    _, gx1, ge1, _, _ = _grads(rank, P, seed=15)
    _, gx2, ge2, _, _ = _grads(rank, P, seed=15)
    assert torch.equal(gx1, gx2) and torch.equal(ge1, ge2)


def _check_empty_shard(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 26
    shards, ref = _graph_data(n, 90, P, seed=16, dtype=torch.float64)
    s, d_, w, _ = shards[rank]
    # the last rank owns no row (with P = 1 the single rank owns them all)
    owner = torch.arange(n) % max(P - 1, 1)
    part = skd.RowPartition(owner, P)
    sg = skd.ShardedGraph.from_edges(s, d_, w, num_nodes=n, partition=part, dtype=torch.float64)
    if P > 1 and rank == P - 1:
        assert sg.num_local == 0 and sg.graph.shape[0] == 0
    x = _x(n, 4, seed=17, dtype=torch.float64)
    xl = sg.local_rows(x).clone().requires_grad_()
    y = skd.propagate(sg, xl)
    assert torch.equal(y, sk.propagate(ref, x)[sg.rows])
    y.sum().backward()
    xs = x.clone().requires_grad_()
    sk.propagate(ref, xs).sum().backward()
    assert torch.equal(xl.grad, xs.grad[sg.rows])
    kn = skd.knn_graph(sg.local_rows(x), 3, part)
    assert torch.equal(kn.to_dense(), sk.knn_graph(x, 3).to_dense()[sg.rows])
    # an empty edge shard everywhere: a graph with no edges
    e = torch.empty(0, dtype=torch.int64)
    sg0 = skd.ShardedGraph.from_edges(e, e, num_nodes=n, partition=part)
    assert sg0.graph.nnz == 0 and sg0.num_halo == 0
    assert torch.equal(skd.propagate(sg0, sg0.local_rows(x.float())), torch.zeros(sg0.num_local, 4))


def _check_report(rank, P):
    skd = _skd()
    n = 40
    shards, ref = _graph_data(n, 150, P, seed=18)
    s, d_, w, _ = shards[rank]
    sg = skd.ShardedGraph.from_edges(s, d_, w, num_nodes=n)
    rep = skd.ShardedGraph.report(sg, d=16)
    assert rep["world_size"] == P and rep["nnz"] == ref.nnz
    assert sum(r["rows"] for r in rep["ranks"]) == n
    assert rep["halo_rows"] == sum(r["sent_rows"] for r in rep["ranks"])
    assert rep["bytes_per_forward"] == rep["halo_rows"] * 16 * 4
    # the halo is exactly the foreign columns of the local rows
    foreign = torch.unique(ref.indices.long()[torch.isin(ref.row_ids(), sg.rows)])
    foreign = foreign[~torch.isin(foreign, sg.rows)]
    assert sg.num_halo == foreign.numel()
    plan = skd.halo_sizes(ref.row_ids(), ref.indices.long(), sg.partition)
    assert plan["halo_rows"] == [r["halo_rows"] for r in rep["ranks"]]
    if P == 1:
        assert rep["halo_rows"] == 0


def _tie_data(n, d, seed):
    """Random rows and two zero rows: a zero row scores exactly 0 against every candidate in
    any block layout, so its ranking is decided by the tie rule alone (lower global id first).
    Duplicate vectors are not used: their scores may differ in the last bit between the
    local op's BLAS tiles (block shapes differ from the single-process op's),
    docs/DISTRIBUTED.md."""
    x = _x(n, d, seed)
    x[n // 3] = 0.0
    x[n - 2] = 0.0
    return x


def _check_topk_similarity(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 45
    x = _tie_data(n, 6, seed=19)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(20))
    for part in (skd.partition_rows(n, P), skd.partition_rows(n, P, order=order)):
        xl = x[part.rows_of(rank)]
        for metric, k in (("cosine", 1), ("cosine", 5), ("cosine", n + 2), ("ip", 5)):
            if True:
                idx, val = skd.topk_similarity(xl, k, part, metric=metric)
                wi, wv = sk.topk_similarity(x, k, metric=metric)
                assert torch.equal(idx, wi[part.rows_of(rank)]), (metric, k)
                torch.testing.assert_close(val, wv[part.rows_of(rank)], rtol=1e-6, atol=1e-6)
        # candidates sharded differently from the queries, self not excluded
        y = _x(23, 6, seed=21)
        yp = skd.partition_rows(23, P, order=torch.arange(22, -1, -1))
        idx, val = skd.topk_similarity(xl, 4, y_local=y[yp.rows_of(rank)], y_partition=yp)
        wi, wv = sk.topk_similarity(x, 4, y=y)
        assert torch.equal(idx, wi[part.rows_of(rank)])
        torch.testing.assert_close(val, wv[part.rows_of(rank)], rtol=1e-6, atol=1e-6)


def _check_knn_graph(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    n = 38
    x = _tie_data(n, 5, seed=22)
    part = skd.partition_rows(n, P, order=torch.randperm(n, generator=torch.Generator().manual_seed(23)))
    g = torch.Generator().manual_seed(24)
    ex = sk.CSRGraph.from_edges(
        torch.randint(0, n, (60,), generator=g), torch.randint(0, n, (60,), generator=g), shape=(n, n)
    )
    ex_local = _local_exclusions(ex, part.rows_of(rank), n)
    for k, excl, excl_l in ((4, None, None), (4, ex, ex_local), (100, None, None)):
        got = skd.knn_graph(x[part.rows_of(rank)], k, part, exclude=excl_l)
        want = sk.knn_graph(x, k, exclude=excl)
        gd, wd = got.to_dense(), want.to_dense()[part.rows_of(rank)]
        assert torch.equal(gd != 0, wd != 0), k
        torch.testing.assert_close(gd, wd, rtol=1e-6, atol=1e-6)


def _local_exclusions(ex, rows, m):
    """Rows ``rows`` of a global exclusion CSR as a local CSR (len(rows), m), global columns."""
    import slifmr_kernels as sk

    keep = torch.isin(ex.row_ids(), rows)
    local_row = torch.searchsorted(rows, ex.row_ids()[keep])
    return sk.CSRGraph.from_edges(local_row, ex.indices.long()[keep], shape=(rows.numel(), m))


def _check_topk_scores(rank, P):
    import slifmr_kernels as sk

    skd = _skd()
    U, I = 31, 27
    users, items = _x(U, 4, seed=25), _x(I, 4, seed=26)
    users[7] = 0.0  # scores exactly 0 for every item: ranked by the tie rule alone
    g = torch.Generator().manual_seed(27)
    ex = sk.CSRGraph.from_edges(
        torch.randint(0, U, (70,), generator=g), torch.randint(0, I, (70,), generator=g), shape=(U, I)
    )
    ex = sk.CSRGraph.from_edges(
        torch.cat([ex.row_ids(), torch.full((I,), 5)]),
        torch.cat([ex.indices.long(), torch.arange(I)]),
        shape=(U, I),
    )
    up = skd.partition_rows(U, P)
    ip = skd.partition_rows(I, P, order=torch.randperm(I, generator=g))
    ur = up.rows_of(rank)
    for k in (3, I + 4):
        idx, val = skd.topk_scores(
            users[ur], items[ip.rows_of(rank)], k, ip, exclude=_local_exclusions(ex, ur, I)
        )
        wi, wv = sk.topk_scores(users, items, k, exclude=ex)
        assert torch.equal(idx, wi[ur]), k
        torch.testing.assert_close(val, wv[ur], rtol=1e-6, atol=1e-6)
    if 5 in ur.tolist():  # user 5 excludes every item: all padding
        assert bool((idx[ur.tolist().index(5)] == -1).all())


def _check_args_disagree(rank, P):
    skd = _skd()
    from slifmr_kernels.errors import InputError

    n = 12
    part = skd.partition_rows(n, P)
    x = _x(n, 3, seed=28)[part.rows_of(rank)]
    msg = "k must be the same on every rank" if P > 1 else "non-negative"
    with pytest.raises(InputError, match=msg):
        skd.topk_similarity(x, 2 + rank if P > 1 else -1, part)
    with pytest.raises(InputError, match="rows"):
        sg = skd.ShardedGraph.from_edges([0], [1], num_nodes=n)
        skd.propagate(sg, torch.zeros(sg.num_local + 1, 3))


def _check_build_errors(rank, P):
    skd = _skd()
    from slifmr_kernels.errors import InputError

    with pytest.raises(InputError, match="dst ids must lie"):
        skd.ShardedGraph.from_edges([0], [50], num_nodes=10)
    if P > 1:
        with pytest.raises(InputError, match="num_nodes must be the same"):
            skd.ShardedGraph.from_edges([0], [1], num_nodes=10 + rank)
        # partitions that differ across ranks are refused, not silently mixed
        order = torch.arange(10) if rank == 0 else torch.arange(9, -1, -1)
        with pytest.raises(InputError, match="partition must be the same"):
            skd.ShardedGraph.from_edges(
                [0], [1], num_nodes=10, partition=skd.partition_rows(10, P, order=order)
            )


def _run_checks(rank, world, group):
    import torch.distributed as dist

    _GROUP[0] = group
    os.environ["SLIFMR_BACKEND"] = BACKENDS[world]
    res = {}
    for name in CHECKS:
        t0 = time.perf_counter()
        try:
            globals()[f"_check_{name}"](rank, world)
            res[name] = None
        except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
            res[name] = traceback.format_exc()
        res[name + "_s"] = time.perf_counter() - t0
        if os.environ.get("SLIFMR_DIST_TIMES"):
            print(world, rank, name, round(res[name + "_s"], 2), res[name], flush=True)
        try:
            dist.barrier(group=group)  # keep the ranks in step after a failed check
        except RuntimeError:  # a rank left a collective behind: stop here, report what ran
            res["desync"] = f"ranks out of step after {name}"
            break
    return res


def _dead_peer(rank, group):
    """Ranks 0 and 3 (group ranks 0 and 1): one good exchange, then rank 3 exits at once
    (a killed process) while rank 0 is in the next exchange. Rank 0 must raise
    DistributedError within the group's timeout."""
    _GROUP[0] = group
    skd = _skd()
    import slifmr_kernels.distributed as skd_mod

    n = 20
    src = torch.arange(n)
    sg = skd.ShardedGraph.from_edges(src, (src + 7) % n, num_nodes=n)  # both ranks: a halo
    x = torch.ones(sg.num_local, 4)
    skd.propagate(sg, x)
    if rank == 3:
        return None
    t0 = time.perf_counter()
    res = {"error": None, "type": None}
    try:
        for _ in range(1000):
            skd.propagate(sg, x)
            skd.topk_similarity(x, 2, sg.partition)
    except skd_mod.DistributedError as exc:
        res = {"error": str(exc), "type": type(exc).__name__}
    except BaseException as exc:  # noqa: BLE001
        res = {"error": repr(exc), "type": type(exc).__name__}
    res["seconds"] = time.perf_counter() - t0
    return res


SILENT_TIMEOUT_S = 2


def _silent_peer(rank, group):
    """Ranks 0 and 2 build a graph on a group with a 2 s timeout; rank 2 then stays alive but
    never enters propagate. Rank 0 must raise DistributedError after about the timeout."""
    _GROUP[0] = group
    skd = _skd()
    import slifmr_kernels.distributed as skd_mod

    n = 10
    src = torch.arange(n)
    sg = skd.ShardedGraph.from_edges(src, (src + 3) % n, num_nodes=n)
    if rank != 0:
        return None
    t0 = time.perf_counter()
    res = {"error": None, "type": None}
    try:
        skd.propagate(sg, torch.ones(sg.num_local, 2))
    except skd_mod.DistributedError as exc:
        res = {"error": str(exc), "type": type(exc).__name__}
    except BaseException as exc:  # noqa: BLE001
        res = {"error": repr(exc), "type": type(exc).__name__}
    res["seconds"] = time.perf_counter() - t0
    return res


def _worker(rank, world, port, outdir):
    dist = _init(rank, world, port)
    short = datetime.timedelta(seconds=TIMEOUT_S)
    groups = {w: dist.new_group(list(range(w)), timeout=short) for w in WORLD_SIZES}
    dying = dist.new_group([0, world - 1], timeout=short)
    silent = dist.new_group([0, 2], timeout=datetime.timedelta(seconds=SILENT_TIMEOUT_S))
    out = {}
    for w in WORLD_SIZES:
        if rank < w:
            out[w] = _run_checks(rank, w, groups[w])
        dist.barrier()
    if rank in (0, 2):
        out["silent_peer"] = _silent_peer(rank, silent)
    dist.barrier()
    if rank in (0, world - 1):
        out["dead_peer"] = _dead_peer(rank, dying)
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    os._exit(3 if rank == world - 1 else 0)  # no destroy_process_group: a peer is dead


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{rank: {world: {check: None or traceback}, "dead_peer": {...}}} from one spawn."""
    out = tmp_path_factory.mktemp("dist")
    world = max(WORLD_SIZES)
    ctx = mp.start_processes(
        _worker, args=(world, _free_port(), str(out)), nprocs=world, start_method="spawn", join=False
    )
    alive = _wait(ctx, 300)
    res = {}
    for r in range(world):
        f = out / f"rank{r}.json"
        res[r] = json.load(open(f)) if f.exists() else None
    return {"ranks": res, "hung": alive, "exitcodes": [p.exitcode for p in ctx.processes]}


def _wait(ctx, seconds):
    """Wait for every spawned rank; kill (by pid, only these) those still alive after
    ``seconds``. Returns the pids that had to be killed."""
    deadline = time.time() + seconds
    while any(p.is_alive() for p in ctx.processes) and time.time() < deadline:
        time.sleep(0.05)
    alive = [p.pid for p in ctx.processes if p.is_alive()]
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
            p.join()
    return alive


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("check", CHECKS)
def test_distributed(outcomes, world, check):
    assert not outcomes["hung"], f"ranks hung and were killed: {outcomes}"
    failed = []
    for r in range(world):
        o = outcomes["ranks"][r]
        if o is None:
            failed.append(f"rank {r} wrote no result (exit codes {outcomes['exitcodes']})")
            continue
        o = o[str(world)]
        if check not in o:
            failed.append(f"rank {r}: not run ({o.get('desync')})")
        elif o[check]:
            failed.append(f"rank {r}:\n{o[check]}")
    assert not failed, "\n".join(failed)


def test_dead_peer_fails_fast(outcomes):
    """A rank killed mid-op: the survivor raises DistributedError naming the op and itself,
    within the group's timeout, instead of hanging."""
    assert not outcomes["hung"], f"ranks hung and were killed: {outcomes}"
    res = outcomes["ranks"][0]["dead_peer"]
    print("dead peer:", res)
    assert res["type"] == "DistributedError", res
    assert "peer process died" in res["error"] and "rank 0" in res["error"], res
    assert res["seconds"] < TIMEOUT_S + 5, res


def test_silent_peer_times_out(outcomes):
    """A rank alive but absent from the collective: the other raises DistributedError after
    the group's timeout, not later."""
    assert not outcomes["hung"], f"ranks hung and were killed: {outcomes}"
    res = outcomes["ranks"][0]["silent_peer"]
    print("silent peer:", res)
    assert res["type"] == "DistributedError", res
    assert "rank 0" in res["error"], res
    assert SILENT_TIMEOUT_S - 0.5 < res["seconds"] < SILENT_TIMEOUT_S + 5, res


# ---------------------------------------------------------------------------- in process
def test_partition_rows():
    import slifmr_kernels.distributed as skd
    from slifmr_kernels.errors import InputError

    p = skd.partition_rows(10, 3)
    assert p.counts.tolist() == [4, 3, 3]
    assert [p.rows_of(r).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert p.local_index.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    q = skd.partition_rows(10, 3, order=order)
    assert q.rows_of(0).tolist() == [6, 7, 8, 9] and q.rows_of(2).tolist() == [0, 1, 2]
    assert q != p and q == skd.partition_rows(10, 3, order=order)
    assert q.fingerprint() != p.fingerprint()
    w = skd.partition_rows(8, 2, weights=[7, 1, 1, 1, 1, 1, 1, 1])  # total 14: 7 | 7
    assert w.rows_of(0).tolist() == [0]
    assert skd.partition_rows(2, 4).counts.tolist() == [1, 1, 0, 0]  # empty ranks
    assert skd.partition_rows(0, 2).counts.tolist() == [0, 0]
    for bad in (dict(order=[0, 0, 1]), dict(weights=[1, -1, 1])):
        with pytest.raises(InputError):
            skd.partition_rows(3, 2, **bad)
    with pytest.raises(InputError):
        skd.RowPartition([0, 2], 2)


def test_needs_process_group():
    import torch.distributed as dist

    import slifmr_kernels.distributed as skd
    from slifmr_kernels.errors import InputError

    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(InputError, match="init_process_group"):
        skd.ShardedGraph.from_edges([0], [1], num_nodes=2)


def test_bipartite_order_cuts_fewer_edges():
    """slifmr.data.reorder's locality order, merged into one node order of the user-item
    graph, keeps more edges inside a rank than contiguous blocks of the original ids."""
    import numpy as np

    import slifmr_kernels.distributed as skd
    from slifmr.data.reorder import locality_order
    from slifmr.data.synthetic import make_synthetic
    from slifmr_kernels.errors import InputError

    ds = make_synthetic(300, 200, num_clusters=6, modalities={}, kg_relations=0, seed=0)
    U, I = ds.num_users, ds.num_items
    tr = torch.as_tensor(np.asarray(ds.train))
    u, i = tr[:, 0], tr[:, 1] + U
    src, dst = torch.cat([u, i]), torch.cat([i, u])
    order = skd.bipartite_order(*locality_order(ds, group=32))
    assert torch.equal(torch.sort(order).values, torch.arange(U + I))
    plain = skd.bipartite_order(np.arange(U), np.arange(I))
    assert plain[:3].tolist() == [0, U, 1]  # interleaved by relative position
    for P in (2, 4):
        base = skd.halo_sizes(src, dst, skd.partition_rows(U + I, P, order=plain))
        loc = skd.halo_sizes(src, dst, skd.partition_rows(U + I, P, order=order))
        assert 2 * loc["cut_edges"] < base["cut_edges"], (P, loc, base)
        assert loc["total"] <= base["total"], (P, loc, base)
    with pytest.raises(InputError):
        skd.bipartite_order([0, 0], [0])
