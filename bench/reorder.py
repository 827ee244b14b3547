"""Node order for locality: the training step with the generated ids and with relabelled ones.

docs/SCALE.md, "Found and left", item 9. Propagation gathers one 256-byte embedding row per
edge; the generator scatters graph neighbours over the id space. This script relabels users
and items so that neighbours get nearby ids, and times the step both ways. The orders (all
from data a real user has; the generator's hidden cluster labels are never used):

* ``features``: k-means (about ``group`` items per cluster) on a random projection of the
  L2-normalised, concatenated modality features; clusters ordered by their centroid's first
  principal coordinate, items inside a cluster by their own.
* ``graph``: the same clustering on item vectors smoothed over the training interactions
  (random vectors averaged over the users of each item and back, a few rounds).
* ``pca``: the first principal coordinate of the features alone (a baseline).

Users follow the items: by the median new position of their training items.

Step timing: one ``bench/scale.py`` run per order (``scale.py --reorder``), each in its own
process so that every run starts from the same memory, with the same catalog, batch and
``--max-steps``; then one table::

    python bench/reorder.py --items 1000000 --batch-size 524288 --max-steps 3 \
        --orders none,features,graph --rss-limit-gib 17

The order itself runs after generation and is reported as ``reorder s``; it is not part of
the epoch. ``step s`` is the mean of the steps after the first (the first builds the
transposes and Adam's state), ``first s`` the first one.

``--kernel`` times ``sk.propagate`` alone instead, forward and backward, on the interaction
graph [[0, R], [R^T, 0]] (sym-normalised, d = 64) of the same catalog in each order, in one
process, with the share of training edges whose item lies within 2048 positions of the
median item of its user (``near``: 1.0 would be perfectly local)::

    python bench/reorder.py --items 1000000 --kernel --orders none,features,graph
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

__all__ = ["REORDER_METHODS", "locality_order", "permute_dataset", "reorder_dataset",
           "user_order_by_items", "near_share", "main"]

REORDER_METHODS = ("features", "graph", "pca")


# --------------------------------------------------------------------------- relabel
def _inverse(order: np.ndarray) -> np.ndarray:
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size, dtype=order.dtype)
    return inv


def _check_order(order: np.ndarray, n: int, what: str) -> np.ndarray:
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or (n and not np.array_equal(np.sort(order), np.arange(n))):
        raise ValueError(f"{what} must be a permutation of 0..{n - 1}")
    return order


def _sorted_pairs(p: np.ndarray, num_items: int) -> np.ndarray:
    return p[np.argsort(p[:, 0] * max(num_items, 1) + p[:, 1], kind="stable")]


def permute_dataset(ds, user_order: np.ndarray, item_order: np.ndarray):
    """The dataset with user ``user_order[j]`` renamed ``j`` and item ``item_order[j]`` renamed
    ``j``: every split (re-sorted by (user, item)), every modality's feature rows, and the KG's
    item entities (entities ``0..num_items-1``; the other entities keep their ids)."""
    U, I = ds.num_users, ds.num_items
    uo = _check_order(user_order, U, "user_order")
    io = _check_order(item_order, I, "item_order")
    u_new, i_new = _inverse(uo), _inverse(io)

    def pairs(p):
        if p is None:
            return None
        return _sorted_pairs(np.stack([u_new[p[:, 0]], i_new[p[:, 1]]], axis=1), I)

    kg = None
    if ds.kg is not None:
        kg = ds.kg.copy()
        for col in (0, 2):
            e = kg[:, col]
            is_item = e < I
            e[is_item] = i_new[e[is_item]]
    feats = {m: np.ascontiguousarray(f[io]) for m, f in ds.features.items()}
    return dataclasses.replace(ds, train=pairs(ds.train), valid=pairs(ds.valid),
                               test=pairs(ds.test), kg=kg, features=feats)


# --------------------------------------------------------------------------- orders
def user_order_by_items(train: np.ndarray, num_users: int, item_pos: np.ndarray) -> np.ndarray:
    """Users ordered by the median (the lower one for an even count) of ``item_pos`` over their
    training items, ties by user id; users without training items last, by id."""
    n = train.shape[0]
    big = np.int64(item_pos.size)
    med = np.full(num_users, big, np.int64)
    if n:
        pos = item_pos[train[:, 1]].astype(np.int64)
        o = np.lexsort((pos, train[:, 0]))
        u, p = train[o, 0], pos[o]
        deg = np.bincount(u, minlength=num_users)
        start = np.r_[0, np.cumsum(deg)[:-1]]
        has = deg > 0
        med[has] = p[start[has] + (deg[has] - 1) // 2]
    return np.lexsort((np.arange(num_users), med)).astype(np.int64)


def _pc1(x: torch.Tensor) -> torch.Tensor:
    """First principal coordinate of the rows of ``x`` (n, d): power iteration on the d x d
    covariance; deterministic."""
    xc = x - x.mean(0, keepdim=True)
    cov = xc.T @ xc
    v = torch.ones(x.shape[1], dtype=x.dtype) / math.sqrt(x.shape[1])
    for _ in range(50):
        w = cov @ v
        nrm = w.norm()
        if nrm == 0:
            break
        v = w / nrm
    return xc @ v


def _assign(x: torch.Tensor, c: torch.Tensor, block: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centroid of every row, in row blocks (memory O(block * C))."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    cn = (c * c).sum(1)
    for s in range(0, x.shape[0], block):
        out[s: s + block] = (cn - 2.0 * (x[s: s + block] @ c.T)).argmin(1)
    return out


def _cluster_order(x: torch.Tensor, group: int, seed: int, iters: int = 8) -> np.ndarray:
    """Rows grouped by k-means (about ``group`` rows per cluster, Lloyd's iterations on a
    sample, then one assignment of every row); clusters ordered by their centroid's first
    principal coordinate, rows inside a cluster by their own."""
    n = x.shape[0]
    coord = _pc1(x)
    C = max(1, math.ceil(n / group))
    if C == 1:
        return np.argsort(coord.numpy(), kind="stable").astype(np.int64)
    rng = np.random.default_rng(seed)
    sample = x[torch.from_numpy(rng.choice(n, min(n, max(32 * C, 20000)), replace=False))]
    c = sample[torch.from_numpy(rng.choice(sample.shape[0], C, replace=False))].clone()
    for _ in range(iters):
        a = _assign(sample, c)
        sums = torch.zeros_like(c).index_add_(0, a, sample)
        cnt = torch.bincount(a, minlength=C).to(x.dtype)
        keep = cnt > 0  # an empty cluster keeps its centroid
        c[keep] = sums[keep] / cnt[keep, None]
    a = _assign(x, c).numpy()
    crank = _inverse(np.argsort(_pc1(c).numpy(), kind="stable"))
    return np.lexsort((coord.numpy(), crank[a])).astype(np.int64)


def _feature_matrix(ds, dim: int, seed: int) -> torch.Tensor:
    """(I, dim) random projection of the L2-normalised, concatenated modality features."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(ds.num_items, dim)
    for m in sorted(ds.features):
        f = torch.from_numpy(ds.features[m]).float()
        proj = torch.randn(f.shape[1], dim, generator=gen) / math.sqrt(dim)
        for s in range(0, f.shape[0], 1 << 16):
            blk = f[s: s + (1 << 16)]
            blk = blk / blk.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out[s: s + blk.shape[0]] += blk @ proj
    return out


def _graph_matrix(ds, dim: int, seed: int, rounds: int = 4) -> torch.Tensor:
    """(I, dim) item vectors smoothed over the training interactions: random vectors, then
    ``rounds`` times item -> mean over its users of (user = mean over its items), centred and
    rescaled each round (the constant direction would otherwise take over)."""
    R = ds.interaction_matrix("train")
    du = np.asarray(R.sum(1)).ravel()
    di = np.asarray(R.sum(0)).ravel()
    Ru = sp.diags((1.0 / np.maximum(du, 1)).astype(np.float32)) @ R           # users: mean of items
    Ri = (sp.diags((1.0 / np.maximum(di, 1)).astype(np.float32)) @ R.T).tocsr()  # items: mean of users
    x = np.random.default_rng(seed).standard_normal((ds.num_items, dim)).astype(np.float32)
    for _ in range(rounds):
        x = np.asarray(Ri @ (Ru @ x), dtype=np.float32)
        x -= x.mean(0, keepdims=True)
        x /= max(float(np.sqrt((x * x).sum(1)).mean()), 1e-30)
    return torch.from_numpy(np.ascontiguousarray(x))


def locality_order(ds, method: str = "features", group: int = 1024, dim: int = 32,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(user_order, item_order)`` for :func:`permute_dataset` (new id j = old id order[j]).

    ``method``: ``features``, ``graph`` or ``pca`` (module docstring). ``features`` and ``pca``
    fall back to ``graph`` for a dataset without features. Deterministic for a seed.
    """
    if method not in REORDER_METHODS:
        raise ValueError(f"reorder method must be one of {REORDER_METHODS}, got {method!r}")
    if method != "graph" and not ds.features:
        method = "graph"
    with torch.random.fork_rng(devices=[]):
        if method == "graph":
            item_order = _cluster_order(_graph_matrix(ds, dim, seed), group, seed)
        elif method == "features":
            item_order = _cluster_order(_feature_matrix(ds, dim, seed), group, seed)
        else:
            item_order = np.argsort(_pc1(_feature_matrix(ds, dim, seed)).numpy(),
                                    kind="stable").astype(np.int64)
    user_order = user_order_by_items(ds.train, ds.num_users, _inverse(item_order))
    return user_order, item_order


def reorder_dataset(ds, method: str = "features", seed: int = 0, **kw):
    """:func:`permute_dataset` with :func:`locality_order`."""
    return permute_dataset(ds, *locality_order(ds, method, seed=seed, **kw))


def run_one(order: str, args) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "scale.py"), "--items", str(args.items),
           "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps),
           "--rss-limit-gib", str(args.rss_limit_gib), "--reorder", order,
           "--eval-users", str(args.eval_users)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stdout.rsplit("\n", 2)[0] + "\n" + proc.stderr[-2000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{order}: no JSON from scale.py (exit {proc.returncode})")
    return json.loads(lines[-1])


def summary(order: str, r: dict) -> dict:
    if "failed" in r:
        return {"order": order, "failed": r["failed"], "during": r.get("during")}
    e = r["epochs"][-1]
    steps = e["step_seconds"]
    later = steps[1:] or steps
    return {"order": order, "reorder_s": r.get("reorder_seconds", 0.0),
            "first_s": steps[0], "step_s": round(sum(later) / len(later), 3),
            "steps": steps, "refresh_s": e["refresh"], "h_forward_s": e["h_forward"],
            "eval_s": e["eval"], "epoch_s": e["epoch_seconds"], "recall@20": e["recall@20"],
            "peak_rss_gib": r["peak_rss_gib"]}


def near_share(ds, window: int = 2048) -> float:
    """Share of training edges whose item id is within ``window`` of its user's median item."""
    u, i = ds.train[:, 0], ds.train[:, 1]
    o = np.lexsort((i, u))
    deg = np.bincount(u, minlength=ds.num_users)
    start = np.r_[0, np.cumsum(deg)[:-1]]
    has = deg > 0
    med = np.zeros(ds.num_users, np.int64)
    med[has] = i[o][start[has] + (deg[has] - 1) // 2]
    return float(np.mean(np.abs(i - med[u]) < window))


def kernel_probe(args) -> list:
    """``--kernel``: sk.propagate forward + backward on the sym-normalised interaction graph."""
    import slifmr_kernels as sk
    from scale import make_catalog
    from slifmr.graphs import sym_normalize, to_csr_graph
    base = make_catalog(args.items).with_validation(0.1, 0)
    rows = []
    for order in [o for o in args.orders.split(",") if o]:
        t0 = time.perf_counter()
        ds = base if order == "none" else reorder_dataset(base, order)
        t_order = time.perf_counter() - t0
        R = ds.interaction_matrix("train")
        g = to_csr_graph(sym_normalize(sp.bmat([[None, R], [R.T, None]], format="csr",
                                               dtype=np.float32)), symmetric=True)
        del R
        x = torch.randn(g.shape[1], 64, generator=torch.Generator().manual_seed(0),
                        requires_grad=True)
        times = []
        for _ in range(args.repeats + 1):  # the first call is not counted (allocation, JIT)
            t0 = time.perf_counter()
            y = sk.propagate(g, x)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            times.append((t1 - t0, time.perf_counter() - t1))
            x.grad = None
            del y
        fwd = sum(t[0] for t in times[1:]) / args.repeats
        bwd = sum(t[1] for t in times[1:]) / args.repeats
        rows.append({"order": order, "reorder_s": round(t_order, 2), "near": round(near_share(ds), 3),
                     "forward_s": round(fwd, 3), "backward_s": round(bwd, 3)})
        print(f"{order:<10} reorder {t_order:6.1f} s  near {rows[-1]['near']:.3f}  forward "
              f"{fwd:.3f} s  backward {bwd:.3f} s  ({args.repeats} calls each)", flush=True)
        del g, x, ds
    print(json.dumps({"items": args.items, "kernel": True, "rows": rows}, sort_keys=True))
    return rows


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=300000)
    p.add_argument("--batch-size", type=int, default=2 ** 17)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--orders", default="none,features,graph",
                   help="comma-separated: none and the methods " + ", ".join(REORDER_METHODS))
    p.add_argument("--eval-users", type=int, default=10000)
    p.add_argument("--rss-limit-gib", type=float, default=17.0)
    p.add_argument("--kernel", action="store_true",
                   help="time sk.propagate alone on the interaction graph (see the docstring)")
    p.add_argument("--repeats", type=int, default=3, help="--kernel: timed calls per order")
    args = p.parse_args(argv)
    if args.kernel:
        return kernel_probe(args)
    rows = [summary(o, run_one(o, args)) for o in args.orders.split(",") if o]
    base = next((r for r in rows if r["order"] == "none" and "step_s" in r), None)
    print(f"{'order':<10} {'reorder s':>9} {'first s':>8} {'step s':>8} {'speed-up':>8} "
          f"{'refresh s':>9} {'epoch s':>9} {'recall@20':>9} {'peak GiB':>8}")
    for r in rows:
        if "failed" in r:
            print(f"{r['order']:<10} failed: {r['failed']} during {r['during']}")
            continue
        sp = f"{base['step_s'] / r['step_s']:.2f}x" if base else "-"
        print(f"{r['order']:<10} {r['reorder_s']:9.1f} {r['first_s']:8.2f} {r['step_s']:8.2f} "
              f"{sp:>8} {r['refresh_s']:9.1f} {r['epoch_s']:9.1f} {r['recall@20']:9.4f} "
              f"{r['peak_rss_gib']:8.2f}")
    print(json.dumps({"items": args.items, "batch_size": args.batch_size,
                      "max_steps": args.max_steps, "rows": rows}, sort_keys=True))
    return rows


if __name__ == "__main__":
    main()
