"""The peer: SLIF-MR written the way MMRec-style code (LATTICE, FREEDOM) writes its graphs.

Same catalog, same model (same parameters, views, fusion, losses, batch size, optimiser) as
``bench/scale.py``; only the graph machinery differs, as in that family of code:

* item-item kNN graphs from a **dense N x N similarity** (``xn @ xn.T``), ``torch.topk`` per row
  (self excluded), then COO adjacency, ``S + S^T``, symmetric normalisation with torch sparse ops;
* the per-epoch feedback rebuild = the same dense similarity over the learned item embeddings;
* propagation with ``torch.sparse.mm`` on COO tensors, the KG view as one ``torch.sparse.mm`` per
  relation (``sum_r A_r (X * e_r)``), autograd through ``torch.sparse.mm``;
* evaluation: a dense (users x N) score block per user batch, known items set to -inf,
  ``torch.topk``.

``--sim dense`` (default) is the literal form: one N x N float32 matrix, 4 N^2 bytes, so N is
capped by memory. ``--sim chunked`` computes the same similarity a row block at a time (memory
O(block * N), time still O(N^2 d)): the most favourable version of the peer, used to time it at
sizes where the literal form does not fit.

    python bench/peer_dense.py --items 20000 [--sim dense|chunked]

Prints the same phase lines and a last-line JSON object with the keys of ``bench/scale.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from scale import MemoryMeter, catalog_args, epoch_summary, make_catalog  # noqa: E402

from slifmr.config import Config  # noqa: E402
from slifmr.evaluate import metrics_from_topk  # noqa: E402
from slifmr.losses import bpr_loss, consistency_loss, l2_reg  # noqa: E402
from slifmr.models import SLIFMR, ModelOutput  # noqa: E402
from slifmr.sampling import NegativeSampler  # noqa: E402

__all__ = ["dense_knn", "PeerGraphs", "PeerModel", "run", "main"]


# --------------------------------------------------------------------------- graphs
def dense_knn(x: torch.Tensor, k: int, chunk: int = 0) -> tuple:
    """Cosine top-k of every row over all rows, self excluded, from the dense similarity.

    ``chunk = 0``: one (N, N) matrix (MMRec's ``build_sim`` + ``torch.topk``); ``chunk > 0``:
    row blocks of that many rows. Returns ((N, k) int64 idx, (N, k) float32 val).
    """
    xn = F.normalize(x.detach().float(), dim=1)
    n = xn.shape[0]
    k = min(k, n - 1)
    if chunk <= 0:
        sim = xn @ xn.T
        sim.fill_diagonal_(-math.inf)
        val, idx = torch.topk(sim, k, dim=1)
        return idx, val
    idx = torch.empty(n, k, dtype=torch.int64)
    val = torch.empty(n, k)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sim = xn[s:e] @ xn.T
        sim[torch.arange(e - s), torch.arange(s, e)] = -math.inf
        val[s:e], idx[s:e] = torch.topk(sim, k, dim=1)
    return idx, val


def _coo(rows, cols, vals, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape, check_invariants=False).coalesce()


def _sym_norm(a: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of a coalesced COO matrix (row / column sums)."""
    i, v = a.indices(), a.values()
    rs = torch.zeros(a.shape[0]).index_add_(0, i[0], v)
    cs = torch.zeros(a.shape[1]).index_add_(0, i[1], v)
    ir = torch.where(rs > 0, rs.clamp_min(1e-30).rsqrt(), torch.zeros_like(rs))
    ic = torch.where(cs > 0, cs.clamp_min(1e-30).rsqrt(), torch.zeros_like(cs))
    return torch.sparse_coo_tensor(i, v * ir[i[0]] * ic[i[1]], a.shape, check_invariants=False).coalesce()


def _row_norm(rows, vals, n) -> torch.Tensor:
    rs = torch.zeros(n).index_add_(0, rows, vals)
    return vals * torch.where(rs > 0, 1.0 / rs.clamp_min(1e-30), torch.zeros_like(rs))[rows]


class PeerGraphs:
    """The graphs of SLIF-MR (same definitions as ``slifmr.graphs``) as torch sparse COO.

    ``build(idx, val)`` takes the feedback kNN (top-k indices/similarities of the item
    representations) and returns ``(adj, user_item, modality dict, kg list per relation)``.
    """

    def __init__(self, ds, cfg: Config, chunk: int = 0):
        self.U, self.I = ds.num_users, ds.num_items
        self.cfg, self.chunk = cfg, chunk
        tr = torch.from_numpy(ds.train)
        u, i = tr[:, 0], tr[:, 1]
        ones = torch.ones(u.numel())
        self.R_rows, self.R_cols = u, i
        self.user_item = _coo(u, i, _row_norm(u, ones, self.U), (self.U, self.I))
        self.modality_knn = {}
        for m in cfg.modalities:
            idx, val = dense_knn(torch.from_numpy(ds.features[m]), cfg.knn_k, chunk)
            self.modality_knn[m] = self._knn_sym(idx, val)
        self.E = ds.num_entities
        self.R_kg = ds.num_relations
        kg = torch.from_numpy(ds.kg) if ds.has_kg else torch.zeros(0, 3, dtype=torch.int64)
        self.kg_src = torch.cat([kg[:, 0], kg[:, 2]])
        self.kg_dst = torch.cat([kg[:, 2], kg[:, 0]])
        self.kg_rel = torch.cat([kg[:, 1], kg[:, 1] + self.R_kg])

    def _knn_sym(self, idx, val) -> torch.Tensor:
        """S = sym_norm(K + K^T) from a directed top-k list, negative similarities dropped."""
        n, k = idx.shape
        rows = torch.arange(n).repeat_interleave(k)
        cols, v = idx.reshape(-1), val.reshape(-1).clamp_min(0)
        keep = v > 0
        rows, cols, v = rows[keep], cols[keep], v[keep]
        return _sym_norm(_coo(torch.cat([rows, cols]), torch.cat([cols, rows]), torch.cat([v, v]), (n, n)))

    def build(self, idx, val):
        cfg, U, I = self.cfg, self.U, self.I
        S = self._knn_sym(idx, val)
        si, sv = S.indices(), S.values()
        rows = torch.cat([self.R_rows, self.R_cols + U, si[0] + U])
        cols = torch.cat([self.R_cols + U, self.R_rows, si[1] + U])
        vals = torch.cat([torch.ones(2 * self.R_rows.numel()), cfg.feedback_gamma * sv])
        adj = _sym_norm(_coo(rows, cols, vals, (U + I, U + I)))
        modality = {}
        for m, base in self.modality_knn.items():
            modality[m] = ((1 - cfg.feedback_beta) * base + cfg.feedback_beta * S).coalesce()
        # KG: triples, inverses, feedback relation (directed kNN, weight = similarity), rows
        # normalised jointly over all relations, then one COO matrix per relation.
        n, k = idx.shape
        fr = torch.arange(n).repeat_interleave(k)
        fc, fv = idx.reshape(-1), val.reshape(-1).clamp_min(0)
        keep = fv > 0
        src = torch.cat([self.kg_src, fr[keep]])
        dst = torch.cat([self.kg_dst, fc[keep]])
        rel = torch.cat([self.kg_rel, torch.full((int(keep.sum()),), 2 * self.R_kg)])
        w = _row_norm(src, torch.cat([torch.ones(self.kg_src.numel()), fv[keep]]), self.E)
        kg = []
        for r in range(2 * self.R_kg + 1):
            sel = rel == r
            kg.append(_coo(src[sel], dst[sel], w[sel], (self.E, self.E)))
        return adj, self.user_item, modality, kg


# --------------------------------------------------------------------------- model
class PeerModel(SLIFMR):
    """SLIF-MR's parameters and formulas with ``torch.sparse.mm`` in place of ``sk.propagate``."""

    def forward(self, g) -> ModelOutput:
        adj, user_item, modality, kg = g
        mm = torch.sparse.mm
        x = torch.cat([self.user_emb, self.item_emb], 0)
        h, acc = x, x
        for _ in range(self.cfg.num_layers):
            h = mm(adj, h)
            acc = acc + h
        z = acc / (self.cfg.num_layers + 1)
        zu_cf, zi_cf = z[: self.num_users], z[self.num_users :]
        views = {}
        for name in self.view_names:
            if name == "kg":
                # The library's layer-0 entity table (item rows may be the item embeddings).
                h = acc = self.entities() if hasattr(self, "entities") else self.entity_emb
                for _ in range(self.cfg.kg_layers):
                    h = sum(mm(a, h * self.relation_emb[r]) for r, a in enumerate(kg))
                    acc = acc + h
                zi = (acc / (self.cfg.kg_layers + 1))[: self.num_items]
            else:
                h = acc = self.project(name)
                for _ in range(self.cfg.modality_layers):
                    h = mm(modality[name], h)
                    acc = acc + h
                zi = acc / (self.cfg.modality_layers + 1)
            views[name] = (mm(user_item, zi), zi)
        # The fusion as the peers write it: one normalised copy per view.
        zu, zi = zu_cf, zi_cf
        for k, (vu, vi) in enumerate(views.values()):
            zu = zu + self.alpha[k] * F.normalize(vu, dim=1)
            zi = zi + self.alpha[k] * F.normalize(vi, dim=1)
        return ModelOutput(zu, zi, cf=(zu_cf, zi_cf), views=views)


def dense_rank(user_emb, item_emb, users, k, exclude, batch: int = 1024) -> np.ndarray:
    """MMRec-style full ranking: dense score block per user batch, known items to -inf."""
    out = np.empty((users.size, k), np.int64)
    for s in range(0, users.size, batch):
        uc = users[s : s + batch]
        scores = user_emb[torch.from_numpy(uc)] @ item_emb.T
        ex = exclude[uc].tocoo()
        scores[torch.from_numpy(ex.row).long(), torch.from_numpy(ex.col).long()] = -math.inf
        out[s : s + uc.size] = torch.topk(scores, k, dim=1).indices.numpy()
    return out


# --------------------------------------------------------------------------- the run
def run(args, log=print) -> dict:
    """Generate the same catalog as bench/scale.py and train the peer; returns the result dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mem = MemoryMeter()
    chunk = 0 if args.sim == "dense" else args.chunk
    result: dict = {"items": args.items, "implementation": f"peer-{args.sim}", "batch_size": args.batch_size}
    mem.watch(args.rss_limit_gib, result)
    log(f"peer ({args.sim} similarity, torch.sparse.mm) scale run: {args.items} items")
    t0 = time.perf_counter()
    ds = make_catalog(
        args.items,
        args.users,
        args.interactions,
        args.triples,
        args.dims.split(","),
        args.clusters,
        args.seed,
    ).with_validation(0.1, args.seed)
    mem.mark("generate", time.perf_counter() - t0, log)
    result.update(
        users=ds.num_users,
        interactions=int(ds.train.shape[0] + ds.valid.shape[0] + ds.test.shape[0]),
        train=int(ds.train.shape[0]),
        batch_size=args.batch_size,
        sim=args.sim,
    )
    # backend="torch": the peer uses no slifmr kernel; its view fusion is the torch form
    # (one view at a time, no normalised copies kept), as written in MMRec-style code.
    cfg = Config(
        model="slifmr",
        embed_dim=args.embed_dim,
        batch_size=args.batch_size,
        knn_k=args.knn_k,
        feedback_k=args.knn_k,
        seed=args.seed,
        modalities=sorted(ds.features),
        progress=False,
        backend="torch",
    )
    t0 = time.perf_counter()
    pg = PeerGraphs(ds, cfg, chunk)
    model = PeerModel(
        ds.num_users,
        ds.num_items,
        cfg,
        num_entities=ds.num_entities,
        num_view_relations=2 * ds.num_relations + 1,
        features=ds.features,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NegativeSampler(ds.train, ds.num_users, ds.num_items)
    train_csr, valid_csr = ds.interaction_matrix("train"), ds.interaction_matrix("valid")
    mem.mark("static_graphs+model", time.perf_counter() - t0, log)
    result["static_graphs_seconds"] = round(time.perf_counter() - t0, 3)

    # H(-1): the initial item representations, through the static graphs (no feedback yet).
    t0 = time.perf_counter()
    feats = torch.cat([F.normalize(torch.from_numpy(ds.features[m]), dim=1) for m in cfg.modalities], 1)
    g = pg.build(*dense_knn(feats, cfg.feedback_k, chunk))
    model.eval()
    with torch.no_grad():
        h_prev = model(g).item
    del g, feats
    mem.mark("seed H(-1)", time.perf_counter() - t0, log)

    rng0 = np.random.default_rng(args.seed)
    valid_users = np.nonzero(np.diff(valid_csr.indptr) > 0)[0]
    eval_users = np.sort(rng0.choice(valid_users, min(args.eval_users, valid_users.size), replace=False))
    epochs: list = []
    result["epochs"] = epochs
    for epoch in range(args.epochs):
        log(f"epoch {epoch + 1}")
        rec: dict = {"epoch": epoch + 1}
        t0 = time.perf_counter()
        g = pg.build(*dense_knn(h_prev, cfg.feedback_k, chunk))
        rec["refresh"] = time.perf_counter() - t0
        mem.mark("refresh", rec["refresh"], log)

        rng = np.random.default_rng([cfg.seed, epoch])
        n = ds.train.shape[0]
        perm = rng.permutation(n)
        steps = max(1, math.ceil(n / cfg.batch_size))
        run_steps = min(steps, args.max_steps) if args.max_steps else steps
        fwd = 0.0
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for b in range(run_steps):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            users, pos = ds.train[idx, 0], ds.train[idx, 1]
            neg = sampler(users, rng)
            u, ip, ineg = (torch.from_numpy(a) for a in (users, pos, neg))
            tf = time.perf_counter()
            out = model(g)
            fwd += time.perf_counter() - tf
            zu, zi = out.user, out.item
            eu = zu[u]
            loss = bpr_loss((eu * zi[ip]).sum(1), (eu * zi[ineg]).sum(1))
            loss = loss + cfg.reg_weight * l2_reg(model.user_emb[u], model.item_emb[ip], model.item_emb[ineg])
            loss = loss + cfg.sc_weight * consistency_loss(
                out, users, pos, max_batch=cfg.sc_max_batch, temperature=cfg.sc_temperature, rng=rng
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        train_s = time.perf_counter() - t0
        scale_up = steps / run_steps  # extrapolate a --max-steps epoch from its mean step
        rec.update(
            propagation=fwd * scale_up,
            loss_backward=(train_s - fwd) * scale_up,
            steps=steps,
            steps_run=run_steps,
            loss=round(total / run_steps, 5),
        )
        mem.mark(f"train ({run_steps}/{steps} steps)", train_s, log)
        log(
            f"    of which propagation {fwd:.2f} s, loss/backward/step {train_s - fwd:.2f} s"
            + (f"; x{scale_up:.2f} for the full epoch" if scale_up != 1 else "")
        )

        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            out = model(g)
        h_prev = out.item.detach()
        rec["h_forward"] = time.perf_counter() - t0
        mem.mark("h_forward", rec["h_forward"], log)

        t0 = time.perf_counter()
        with torch.no_grad():
            top = dense_rank(out.user, out.item, eval_users, 20, train_csr)
        m = metrics_from_topk(top, eval_users, valid_csr, [10, 20])
        rec["eval"] = time.perf_counter() - t0
        rec["recall@20"] = round(m["recall@20"], 5)
        mem.mark(f"eval ({eval_users.size} users)", rec["eval"], log)
        del out, g
        rec["epoch_seconds"] = sum(
            rec[k] for k in ("refresh", "propagation", "loss_backward", "h_forward", "eval")
        )
        log(f"  epoch {epoch + 1}: {rec['epoch_seconds']:.1f} s, refresh {rec['refresh']:.1f} s")
        epochs.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()})
    result.update(epoch_summary(epochs, mem))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    catalog_args(p)
    p.add_argument(
        "--sim",
        choices=("dense", "chunked"),
        default="dense",
        help="dense: one N x N similarity matrix; chunked: row blocks of it",
    )
    p.add_argument("--chunk", type=int, default=4096, help="rows per block for --sim chunked")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except (MemoryError, RuntimeError) as exc:  # an allocation refused under a memory limit
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        result = {
            "items": args.items,
            "implementation": f"peer-{args.sim}",
            "failed": "out of memory",
            "error": str(exc)[:200],
            "peak_rss_gib": round(MemoryMeter.peak_gib(), 3),
        }
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
