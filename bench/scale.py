"""Scale benchmark: full SLIF-MR epochs on a generated catalog of N items, on one machine.

One command::

    python bench/scale.py --items 1000000

generates a synthetic catalog (by default 2N users, 20N interactions, 5N KG triples, a 64-d
``image`` and a 384-d ``text`` feature), builds the static graphs, and runs ``--epochs`` full
SLIF-MR epochs through the real library: ``slifmr.train.Trainer`` (its graph builder, model,
negative sampler and ``_train_epoch``), the per-epoch feedback refresh
(``SelfLoop.graphs`` -> ``sk.knn_graph`` or ``sk.knn_refine``), and a full-ranking
evaluation of a user sample (``slifmr.evaluate.recommend`` -> ``sk.topk_scores``).

It prints one line per phase (seconds, resident memory now, peak resident memory so far) and,
as its last line, one JSON object with ``items``, ``epoch_seconds``, ``refresh_seconds``,
``peak_rss_gib`` and the full per-phase breakdown.

Phases of an epoch:

* ``refresh``      feedback graph S(t) from H(t-1) (kNN or incremental refine) + rebuild of
                   A(t), A_m(t), KG(t)  (``SelfLoop.graphs``)
* ``propagation``  the model's forward passes inside the training steps (all views)
* ``loss_backward`` the rest of the steps: BPR + consistency + L2, backward, Adam
* ``h_forward``    one forward without gradient: H(t) for the next refresh and the eval embeddings
* ``eval``         Recall/NDCG@{10,20} of ``--eval-users`` sampled validation users, full ranking

``epoch_seconds`` is the sum of the five. Peak memory is ``ru_maxrss`` of this process (the
whole run, data generation included); ``rss_by_phase`` says which phase set it.

Exact kNN is O(N^2 d): at a million items it takes hours on two cores. ``--static-knn`` and
``--refresh`` choose how the modality graphs (built once) and the feedback graph (every
epoch) are computed; ``auto`` picks exact up to ``--exact-max`` items and the approximate
path above (see ``bucket_knn``; refined with ``sk.knn_refine`` when the library has it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, ROOT)

import slifmr_kernels as sk  # noqa: E402
from slifmr import graphs as sgraphs  # noqa: E402
from slifmr.config import Config  # noqa: E402
from slifmr.data import make_synthetic  # noqa: E402
from slifmr.data.reorder import REORDER_MODES, apply_reorder  # noqa: E402
from slifmr.evaluate import metrics_from_topk, recommend  # noqa: E402
from slifmr.train import Trainer  # noqa: E402
from slifmr_kernels.refine.op import knn_recall as knn_recall_of  # noqa: E402
from slifmr_kernels.testing import neighbour_lists  # noqa: E402

__all__ = ["make_catalog", "bucket_knn", "MemoryMeter", "extrapolate_steps", "run", "main", "catalog_args"]

GIB = float(2**30)


# --------------------------------------------------------------------------- memory
class MemoryMeter:
    """Resident memory now (/proc/self/statm) and the process peak (``ru_maxrss``), per phase.

    ``ru_maxrss`` only grows, so the phase during which it last grew is the one that set the
    peak; :meth:`mark` records both numbers after each phase.
    """

    def __init__(self):
        self.records: list = []
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def rss_gib(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / GIB
        except OSError:
            return float("nan")

    @staticmethod
    def peak_gib() -> float:
        # Linux reports ru_maxrss in KiB (macOS in bytes).
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / GIB if sys.platform == "darwin" else r * 1024 / GIB

    def mark(self, phase: str, seconds: float, log=print) -> dict:
        rec = {
            "phase": phase,
            "seconds": round(seconds, 3),
            "rss_gib": round(self.rss_gib(), 3),
            "peak_gib": round(self.peak_gib(), 3),
        }
        self.records.append(rec)
        log(
            f"  {phase:<26s} {seconds:9.2f} s   rss {rec['rss_gib']:7.2f} GiB   "
            f"peak {rec['peak_gib']:7.2f} GiB"
        )
        return rec

    def watch(self, limit_gib: float, result: dict, interval: float = 0.05) -> None:
        """Abort the process (exit status 3) with a last-line JSON ``{"failed": "rss limit"}``
        once resident memory passes ``limit_gib``: the machine is shared, and a run that would
        not fit must stop before the kernel's OOM killer picks a victim. ``result`` is printed
        with it (sizes, phases so far). 0 disables the watchdog."""
        if not limit_gib or limit_gib <= 0:
            return

        def poll():
            while True:
                rss = self.rss_gib()
                if rss > limit_gib:
                    try:
                        snapshot = dict(result)  # the main thread may be updating it
                    except RuntimeError:
                        continue
                    out = dict(
                        snapshot,
                        failed="rss limit",
                        rss_limit_gib=limit_gib,
                        rss_gib=round(rss, 3),
                        peak_rss_gib=round(self.peak_gib(), 3),
                        during=self.records[-1]["phase"] if self.records else "start",
                        rss_by_phase=self.records,
                    )
                    # Send the main thread's later prints nowhere, flush what it printed so
                    # far, then write the JSON straight to the descriptor and exit at once, so
                    # that it is the last line.
                    stream, sys.stdout = sys.stdout, open(os.devnull, "w")
                    try:
                        stream.flush()
                        fd = stream.fileno()
                    except (OSError, ValueError):
                        fd = 1
                    # (a leading newline ends a line the main thread may have half-printed)
                    os.write(fd, ("\n" + json.dumps(out, sort_keys=True) + "\n").encode())
                    os._exit(3)
                time.sleep(interval)

        threading.Thread(target=poll, name="rss-watchdog", daemon=True).start()


# --------------------------------------------------------------------------- data
def catalog_args(p: argparse.ArgumentParser) -> None:
    """Catalog-size options shared with bench/peer_dense.py."""
    p.add_argument("--items", type=int, default=10000, help="number of items N")
    p.add_argument("--users", type=int, default=None, help="users (default 2N)")
    p.add_argument(
        "--interactions", type=int, default=None, help="target interactions before the splits (default 20N)"
    )
    p.add_argument("--triples", type=int, default=None, help="KG triples (default 5N)")
    p.add_argument("--dims", default="64,384", help="modality feature dims: image,text")
    p.add_argument("--clusters", type=int, default=None, help="planted clusters (default max(20, N // 1000))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2**16, help="BPR batch size")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--knn-k", type=int, default=10, help="neighbours in modality/feedback graphs")
    p.add_argument("--eval-users", type=int, default=10000, help="users in the evaluation sample")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop each epoch's training after this many steps and extrapolate the "
        "epoch from the mean step (0: full epochs)",
    )
    p.add_argument(
        "--rss-limit-gib",
        type=float,
        default=20.0,
        help="abort with a JSON line when resident memory passes this (0: off)",
    )


def make_catalog(
    items: int,
    users: int | None = None,
    interactions: int | None = None,
    triples: int | None = None,
    dims=(64, 384),
    clusters: int | None = None,
    seed: int = 0,
):
    """The synthetic catalog of the scale run (``slifmr.data.make_synthetic``).

    Interactions are drawn per user (mean ``interactions / users``, power-law activity) and
    deduplicated, so the realised count is a little under the target; the generator holds out
    20 % per user as test. KG triples: one per item and relation, ``round(triples / items)``
    relations. Returns the Dataset (no validation split yet).
    """
    users = 2 * items if users is None else users
    interactions = 20 * items if interactions is None else interactions
    triples = 5 * items if triples is None else triples
    clusters = max(20, items // 1000) if clusters is None else clusters
    clusters = min(clusters, items)
    dims = tuple(int(d) for d in dims)
    mods = {"image": dims[0], "text": dims[1]} if len(dims) == 2 else {f"m{i}": d for i, d in enumerate(dims)}
    return make_synthetic(
        num_users=users,
        num_items=items,
        num_clusters=clusters,
        mean_interactions=interactions / users,
        min_interactions=1,
        kg_relations=max(0, round(triples / items)),
        modalities=mods,
        seed=seed,
        name=f"scale-{items}",
    )


# --------------------------------------------------------------------------- approximate kNN
# bucket_knn lives in the library (slifmr.graphs), which builds the static modality graphs of a
# large catalogue with it; re-exported here for the benchmark's users.
bucket_knn = sgraphs.bucket_knn


def knn_recall(x: torch.Tensor, graph: sk.CSRGraph, k: int, sample: int = 256, seed: int = 0) -> float:
    """Recall@k of ``graph``'s rows against exact cosine kNN, on ``sample`` random rows."""
    n = x.shape[0]
    rows = torch.from_numpy(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    xn = sk.normalize_rows(x.detach().float())
    scores = xn[rows] @ xn.T
    scores[torch.arange(rows.numel()), rows] = -float("inf")
    exact = torch.topk(scores, min(k, n - 1), dim=1).indices
    return knn_recall_of(neighbour_lists(graph, rows), exact)


# --------------------------------------------------------------------------- memory model
def memory_model(
    U: int,
    I: int,
    E: int,
    n_train: int,
    n_all: int,
    T: int,
    dims,
    d: int = 64,
    k: int = 10,
    kg_layers: int = 2,
    shared_items: bool = True,
) -> dict:
    """Bytes held by each structure of a SLIF-MR training run (docs/SCALE.md, "Memory model").

    U users, I items, E entities (items included), n_train / n_all training / all interactions,
    T KG triples, ``dims`` the modality feature dims, d the embedding size, k the kNN size.
    A symmetrised kNN graph has at most s = 2 k I edges; the count below uses that bound.
    CSR edge costs: int32 column + float32 value = 8 B; a relation id +4 B; the transpose
    cached by the first backward: column + value + int64 edge permutation = 16 B (+4 relation).
    A(t) and A_m(t) are symmetric and serve as their own transpose; R~ and KG(t) are not.
    ``step`` = what one training step adds on top of ``total``: the forward's outputs that
    backward needs, and its largest gradient (the fusion's (U, V*d) one).
    """
    D, M, n = sum(dims), len(dims), n_train
    V = M + 1  # auxiliary views: kg + modalities
    s = 2 * k * I
    params = 4 * ((U + I + (E - I if shared_items else E)) * d + D * d)
    parts = {
        "dataset": 16 * n_all + 24 * T + 4 * I * D,
        "trainer_csr_sampler": 8 * n_all + 8 * n + 16 * U,
        # [[0,R],[R^T,0]] (scipy), R~, the M sym-normalised modality kNN graphs (scipy), KG
        # edge arrays (int32 head, tail, relation for 2T edges)
        "graphs_static": 8 * 2 * n + 8 * n + M * 8 * s + 24 * T,
        "parameters": params,
        # A(t); A_m(t) = (1-beta) kNN(F_m) + beta S(t) (up to 2s edges); KG(t) with the
        # feedback relation; H(t-1) and the previous directed kNN graph for the refine
        "graphs_epoch": 8 * (2 * n + s) + M * 8 * 2 * s + 12 * (2 * T + k * I) + 4 * I * d + 8 * k * I,
        "graph_transposes": 16 * n + 20 * (2 * T + k * I),
        "grads_adam": 3 * params,
        # alive at the end of the forward: cf z (U+I, d), the KG layers' inputs (E, d) each
        # (saved for the relation gradient), the stacked views (U+I, V*d) (saved by the
        # fusion), the fused representations (U+I, d). The modality projections are not
        # kept (the propagate backward needs no activations).
        "activations": 4 * d * ((U + I) + kg_layers * E + V * (U + I) + (U + I)),
    }
    parts["step"] = parts["activations"] + 4 * d * V * U
    parts["total"] = sum(v for key, v in parts.items() if key not in ("step", "activations"))
    return parts


# --------------------------------------------------------------------------- the run
def _refresh_mode(args, n: int) -> str:
    if args.refresh != "auto":
        return args.refresh
    if hasattr(sk, "knn_refine"):
        return "refine"
    return "exact" if n <= args.exact_max else "bucket"


class _StopEpoch(Exception):
    """Raised inside the training loop to end an epoch after ``--max-steps`` steps."""


class _BucketFeedback:
    """``--refresh bucket``: the builder's feedback kNN through :func:`bucket_knn`, for when
    the library has no incremental refresh and exact kNN is too slow (labelled in the JSON)."""

    def __init__(self, builder, k):
        self.builder, self.k = builder, k
        self._orig = builder.feedback

    def __call__(self, h, k, previous=None):
        t0 = time.perf_counter()
        raw_graph = bucket_knn(h, k, backend=self.builder.backend)
        m = raw_graph.to_scipy().astype(np.float32)
        m.data = np.maximum(m.data, 0.0)
        m.eliminate_zeros()
        return sgraphs.sym_normalize(m + m.T), m, raw_graph, time.perf_counter() - t0


def warmup(backend: str = "auto") -> float:
    """One tiny epoch through every code path, so that JIT compilation (Numba) and first-call
    costs are not charged to the measured phases. Returns its seconds."""
    t0 = time.perf_counter()
    ds = make_catalog(300, dims=(8, 12)).with_validation(0.1, 0)
    cfg = Config(
        batch_size=4096,
        epochs=1,
        progress=False,
        feedback_refine=False,
        modalities=sorted(ds.features),
        backend=backend,
    )
    tr = Trainer(cfg, ds, tempfile.mkdtemp(prefix="slifmr-warmup-"), log=lambda s: None)
    graphs, _ = tr.selfloop.graphs()
    tr._train_epoch(graphs, 0)
    tr.model.eval()
    with torch.no_grad():
        out = tr.model(graphs)
    users = np.arange(min(50, ds.num_users))
    recommend(out.user, out.item, users, 20, tr.train_csr, backend=backend)
    bucket_knn(out.item, 5, block=64, backend=backend)
    if hasattr(sk, "knn_refine"):
        sk.knn_refine(out.item.detach(), tr.selfloop.raw_prev, 5, backend=backend)
    return time.perf_counter() - t0


def _generate(args, mem: MemoryMeter, result: dict, log):
    """Phase ``generate`` (+ ``reorder``): the catalog with its validation split, relabelled
    for locality as ``slifmr.train.prepare_data`` does it (Config.reorder; "auto" relabels
    catalogs of 100k users + items and more). Records the sizes and the memory model in
    ``result``; returns the Dataset."""
    t0 = time.perf_counter()
    ds = make_catalog(
        args.items,
        args.users,
        args.interactions,
        args.triples,
        args.dims.split(","),
        args.clusters,
        args.seed,
    )
    ds = ds.with_validation(0.1, args.seed)
    mem.mark("generate", time.perf_counter() - t0, log)
    t0 = time.perf_counter()
    mode = getattr(args, "reorder", Config.reorder)
    ds = apply_reorder(ds, mode)
    result["reorder"] = "none" if ds.orig_items is None else mode
    if ds.orig_items is not None:
        result["reorder_seconds"] = round(time.perf_counter() - t0, 3)
        mem.mark(f"reorder ({result['reorder']})", result["reorder_seconds"], log)
    n_inter = ds.train.shape[0] + ds.valid.shape[0] + ds.test.shape[0]
    result.update(
        users=ds.num_users,
        interactions=int(n_inter),
        train=int(ds.train.shape[0]),
        triples=int(ds.kg.shape[0]) if ds.has_kg else 0,
        dims={m: int(f.shape[1]) for m, f in ds.features.items()},
    )
    log(f"  {ds.summary()}")
    mm = memory_model(
        ds.num_users,
        ds.num_items,
        ds.num_entities,
        ds.train.shape[0],
        n_inter,
        result["triples"],
        list(result["dims"].values()),
        args.embed_dim,
        args.knn_k,
    )
    result["memory_model_gib"] = {k: round(v / GIB, 3) for k, v in mm.items()}
    return ds


def _make_trainer(args, ds, mem: MemoryMeter, result: dict, log):
    """Phase ``static_graphs+model``: the Trainer (static graphs, model, sampler) with the
    chosen kNN modes, and the recall of a bucketed modality graph. Returns (trainer, cfg)."""
    static_mode = (
        args.static_knn
        if args.static_knn != "auto"
        else ("exact" if args.items <= args.exact_max else "bucket")
    )
    refresh = _refresh_mode(args, args.items)
    # The library's own switch: modality kNN graphs over more than knn_exact_max items are
    # bucketed kNN + knn_refine (slifmr.graphs.approx_knn_scipy).
    exact_max = {"exact": args.items, "bucket": 0}[static_mode]
    cfg = Config(
        model="slifmr",
        embed_dim=args.embed_dim,
        batch_size=args.batch_size,
        epochs=args.epochs,
        progress=False,
        knn_k=args.knn_k,
        feedback_k=args.knn_k,
        feedback_refine=(refresh == "refine"),
        eval_ks=[10, 20],
        seed=args.seed,
        num_threads=args.threads,
        modalities=sorted(ds.features),
        knn_exact_max=exact_max,
        lr=args.lr,
        edge_dropout=args.edge_dropout,
    )
    out_dir = tempfile.mkdtemp(prefix="slifmr-scale-")  # config.json only; no checkpoints
    t0 = time.perf_counter()
    trainer = Trainer(cfg, ds, out_dir, log=lambda s: None)
    mem.mark("static_graphs+model", time.perf_counter() - t0, log)
    result.update(
        static_knn=static_mode,
        refresh_mode=refresh,
        batch_size=args.batch_size,
        embed_dim=args.embed_dim,
        knn_k=args.knn_k,
        lr=args.lr,
        static_graphs_seconds=round(trainer.static_graph_s, 3),
    )
    seed_graph = trainer.selfloop.seed
    if static_mode == "bucket" and seed_graph is not None:
        first = cfg.modalities[0]
        result["static_knn_recall"] = {
            first: round(knn_recall(torch.from_numpy(ds.features[first]), seed_graph, args.knn_k), 4)
        }
    if refresh == "bucket":
        trainer.builder.feedback = _BucketFeedback(trainer.builder, args.knn_k)
    return trainer, cfg


def _seed_feedback(trainer, mem: MemoryMeter, log) -> None:
    """Phase ``seed H(-1)``, for the incremental refreshes: steady state from the first epoch.

    H(-1) = the initial model's item representations, the previous graph = the first
    modality's kNN graph, so that the measured refresh is the per-epoch one (refine over the
    d-dim H). The trainer's own epoch 0 computes S(0) from the 448-d features once per run
    instead."""
    t0 = time.perf_counter()
    graphs0 = trainer.builder.build(None)  # not cached by the builder: freed below
    trainer.model.eval()
    with torch.no_grad():
        trainer.selfloop.prime(trainer.model(graphs0).item, trainer.selfloop.seed)
    del graphs0
    mem.mark("seed H(-1)", time.perf_counter() - t0, log)


def _eval_users(trainer, args) -> np.ndarray:
    """The sorted sample of ``--eval-users`` validation users (seeded), the same each epoch."""
    rng = np.random.default_rng(args.seed)
    valid_users = np.nonzero(np.diff(trainer.valid_csr.indptr) > 0)[0]
    return np.sort(rng.choice(valid_users, min(args.eval_users, valid_users.size), replace=False))


class _StepClock:
    """Times the model's forward inside the real training steps: wraps ``model.forward`` while
    entered (the original is restored on exit, and stays callable as ``original``).

    Per epoch (:meth:`reset`): ``forward`` seconds, ``steps`` run, ``starts`` (perf_counter at
    each step's forward). With ``max_steps`` > 0 the forward of step ``max_steps + 1`` raises
    :class:`_StopEpoch` instead of running, which ends ``Trainer._train_epoch`` early.
    """

    def __init__(self, model, max_steps: int = 0):
        self.model, self.max_steps = model, max_steps
        self.original = model.forward
        self.reset()

    def reset(self) -> None:
        self.forward, self.steps, self.starts = 0.0, 0, []

    def _timed_forward(self, *a, **kw):
        if self.max_steps and self.steps >= self.max_steps:
            raise _StopEpoch  # leaves Trainer._train_epoch before the next step's forward
        t = time.perf_counter()
        self.starts.append(t)
        out = self.original(*a, **kw)
        self.forward += time.perf_counter() - t
        self.steps += 1
        return out

    def __enter__(self):
        self.model.forward = self._timed_forward
        return self

    def __exit__(self, *exc):
        self.model.forward = self.original
        return False


def extrapolate_steps(starts: list, t_end: float, steps_total: int) -> tuple:
    """(step seconds, factor from the steps run to a full epoch of ``steps_total`` steps).

    Step i runs from its forward's start (``starts[i]``) to the next one's (the last to
    ``t_end``). The first step also builds the epoch graphs' transposes (and Adam's state in
    epoch 1), so an epoch cut by ``--max-steps`` is extrapolated as first step + (steps - 1)
    x the mean of the later ones; a full epoch gets factor 1.
    """
    bounds = list(starts) + [t_end]
    step_s = [bounds[i + 1] - bounds[i] for i in range(len(starts))]
    if len(step_s) >= 2 and len(starts) < steps_total:
        est = step_s[0] + (steps_total - 1) * sum(step_s[1:]) / (len(step_s) - 1)
        return step_s, est / max(sum(step_s), 1e-12)
    return step_s, steps_total / max(len(starts), 1)


def _train_phase(
    trainer, graphs, epoch: int, clock: _StepClock, steps_total: int, mem: MemoryMeter, log
) -> dict:
    """Phase ``train``: one ``Trainer._train_epoch`` (cut after ``--max-steps`` steps), split
    into the forward's share (``propagation``) and the rest (``loss_backward``), both
    extrapolated to the full epoch."""
    clock.reset()
    t0 = time.perf_counter()
    try:
        parts = trainer._train_epoch(graphs, epoch)
    except _StopEpoch:
        parts = {"loss": None}  # the trainer's running sums are lost with its frame
    t_end = time.perf_counter()
    train_s = t_end - t0
    step_s, scale_up = extrapolate_steps(clock.starts, t_end, steps_total)
    mem.mark(f"train ({clock.steps}/{steps_total} steps)", train_s, log)
    log(
        f"    of which propagation {clock.forward:.2f} s, loss/backward/step "
        f"{train_s - clock.forward:.2f} s; loss {parts['loss']}"
        + (f"; x{scale_up:.2f} for the full epoch" if scale_up != 1 else "")
    )
    return {
        "step_seconds": [round(x, 3) for x in step_s],
        "propagation": clock.forward * scale_up,
        "loss_backward": (train_s - clock.forward) * scale_up,
        "steps": steps_total,
        "steps_run": clock.steps,
        "loss": None if parts["loss"] is None else round(parts["loss"], 5),
    }


def _eval_phase(out, eval_users: np.ndarray, trainer, backend: str, mem: MemoryMeter, log) -> dict:
    """Phase ``eval``: full-ranking Recall/NDCG@{10,20} of the sampled validation users."""
    t0 = time.perf_counter()
    top, _ = recommend(out.user, out.item, eval_users, 20, trainer.train_csr, backend=backend)
    m = metrics_from_topk(top, eval_users, trainer.valid_csr, [10, 20])
    rec = {
        "eval": time.perf_counter() - t0,
        "recall@20": round(m["recall@20"], 5),
        "ndcg@20": round(m["ndcg@20"], 5),
    }
    mem.mark(f"eval ({eval_users.size} users)", rec["eval"], log)
    return rec


def _run_epoch(
    epoch: int,
    trainer,
    clock: _StepClock,
    eval_users: np.ndarray,
    steps_total: int,
    backend: str,
    mem: MemoryMeter,
    log,
) -> dict:
    """One measured epoch: refresh, train, h_forward, eval. Returns its record (seconds
    rounded to ms), ``epoch_seconds`` the sum of the five phases."""
    log(f"epoch {epoch + 1}")
    rec: dict = {"epoch": epoch + 1}
    t0 = time.perf_counter()
    graphs, _ = trainer.selfloop.graphs()
    rec["refresh"] = time.perf_counter() - t0
    rec["feedback_edges"] = graphs.feedback_edges
    mem.mark("refresh", rec["refresh"], log)

    rec.update(_train_phase(trainer, graphs, epoch, clock, steps_total, mem, log))

    t0 = time.perf_counter()
    trainer.model.eval()
    with torch.no_grad():
        out = clock.original(graphs)
    trainer.selfloop.observe(out.item)
    rec["h_forward"] = time.perf_counter() - t0
    mem.mark("h_forward", rec["h_forward"], log)

    rec.update(_eval_phase(out, eval_users, trainer, backend, mem, log))
    del out, graphs
    rec["epoch_seconds"] = sum(
        rec[k] for k in ("refresh", "propagation", "loss_backward", "h_forward", "eval")
    )
    log(
        f"  epoch {epoch + 1}: {rec['epoch_seconds']:.1f} s, refresh "
        f"{rec['refresh']:.1f} s ({100 * rec['refresh'] / rec['epoch_seconds']:.1f} %), "
        f"recall@20 {rec['recall@20']:.4f}"
    )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()}


def epoch_summary(epochs: list, mem: MemoryMeter) -> dict:
    """What a scale run reports after its epochs (this engine's and bench/peer_dense.py's): the
    per-epoch records, the last epoch's seconds and refresh share, whether any epoch's steps
    were extrapolated, the peak and per-phase RSS and the thread count."""
    last = epochs[-1]
    return dict(
        epochs=epochs,
        epoch_seconds=last["epoch_seconds"],
        extrapolated=any(e["steps_run"] < e["steps"] for e in epochs),
        refresh_seconds=last["refresh"],
        refresh_share=round(last["refresh"] / max(last["epoch_seconds"], 1e-12), 4),
        peak_rss_gib=round(mem.peak_gib(), 3),
        rss_by_phase=mem.records,
        threads=torch.get_num_threads(),
    )


def run(args, log=print) -> dict:
    """Generate, build, train ``args.epochs`` epochs; returns the result dict (see module doc)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    mem = MemoryMeter()
    result: dict = {"items": args.items, "implementation": "slifmr", "batch_size": args.batch_size}
    mem.watch(args.rss_limit_gib, result)
    mem.mark("warmup (JIT, tiny epoch)", warmup(), log)
    log(
        f"slifmr scale run: {args.items} items  (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()})"
    )
    ds = _generate(args, mem, result, log)
    trainer, cfg = _make_trainer(args, ds, mem, result, log)
    if result["refresh_mode"] in ("refine", "bucket"):
        _seed_feedback(trainer, mem, log)
    eval_users = _eval_users(trainer, args)
    steps_total = max(1, math.ceil(ds.train.shape[0] / args.batch_size))
    epochs: list = []
    result["epochs"] = epochs  # filled as epochs finish (the watchdog prints what there is)
    with _StepClock(trainer.model, args.max_steps) as clock:
        for epoch in range(args.epochs):
            epochs.append(_run_epoch(epoch, trainer, clock, eval_users, steps_total, cfg.backend, mem, log))

    result.update(epoch_summary(epochs, mem), backend=sk.last_backend())
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    catalog_args(p)
    p.add_argument(
        "--static-knn",
        choices=("auto", "exact", "bucket"),
        default="auto",
        help="modality kNN graphs (built once): exact or bucketed (+ knn_refine)",
    )
    p.add_argument(
        "--refresh",
        choices=("auto", "exact", "refine", "bucket"),
        default="auto",
        help="per-epoch feedback kNN: exact sk.knn_graph, sk.knn_refine seeded by "
        "the previous epoch's graph, or bucket_knn",
    )
    p.add_argument("--lr", type=float, default=Config.lr, help="Adam learning rate")
    p.add_argument(
        "--edge-dropout",
        type=float,
        default=0.0,
        help="share of the user-item edges dropped per training epoch (SLIF-MR's training default "
        "is 0.5; the runs in docs/SCALE.md predate it and used 0)",
    )
    p.add_argument("--exact-max", type=int, default=20000, help="'auto' uses exact kNN up to this many items")
    p.add_argument(
        "--reorder",
        choices=REORDER_MODES,
        default=Config.reorder,
        help="relabel users and items for locality after generating "
        "(Config.reorder, slifmr.data.reorder; not charged to the epoch)",
    )
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
