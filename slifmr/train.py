"""Training: the :class:`Trainer` drives any model of :mod:`slifmr.models` (its
``calculate_loss`` / ``begin_epoch``) with negatives from :mod:`slifmr.sampling`, the per-epoch
self-loop (:mod:`slifmr.selfloop`), early stopping on validation, atomic checkpoints with resume
(:mod:`slifmr.checkpoint`), a JSON-lines metrics log, TensorBoard events (:mod:`slifmr.tracking`)
and the learning curves (:mod:`slifmr.curves`). A per-evaluation callback (``on_evaluation``)
can stop a run after any validation (the pruning of :mod:`slifmr.tune`).

Output directory layout::

    config.json      the effective configuration and data source
    metrics.jsonl    one record per epoch (loss parts, seconds, rebuild seconds, valid metrics,
                     feedback-graph edges and the share of them changed since the previous
                     epoch, the view weights alpha_<view>)
    tb/              the same as TensorBoard scalars (Config.tensorboard; needs tensorboard)
    curves.png       training loss and validation Recall/NDCG@20 per epoch, best epoch marked
                     (needs matplotlib)
    last.pt          everything needed to resume (model, optimiser, feedback state, history;
                     in the trainer's ids, with the relabelling ``Config.reorder`` made)
    best.pt          the best-on-validation model and its final user/item embeddings, rows in
                     the dataset's original user and item ids
    metrics.json     test metrics of the best model (+ run statistics)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from .checkpoint import (
    TrainingInterrupted,
    atomic_save,
    deferred_interrupts,
    interrupts_as_exceptions,
    load_checkpoint,
    remove_stale_temporaries,
    require_keys,
    write_json_atomic,
    write_text_atomic,
)
from .config import Config
from .curves import MISSING_MATPLOTLIB, write_curves
from .data import Dataset
from .data.reorder import to_original_rows
from .evaluate import rank_metrics
from .graphs import GraphBuilder
from .models import Batch, build_model
from .sampling import NegativeSampler
from .selfloop import SelfLoop
from .tracking import log_epoch, open_writer

__all__ = ["Trainer"]


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Trains one model on one dataset into ``output`` (see module docstring).

    Args:
        cfg: the configuration.
        ds: dataset with a validation split (``prepare_data`` makes one).
        output: output directory (created).
        data_source: how to reload the data later (written to config.json), e.g. a path.
        log: function receiving human-readable progress lines.
        on_evaluation: called after every validation, once the epoch's files are written, as
            ``on_evaluation(epoch, record)`` (``record``: the epoch's line of metrics.jsonl, with
            ``valid_recall@20`` ...); a true return value ends training there (``stopped``:
            "callback" in metrics.json). Exceptions it raises propagate out of :meth:`fit`.
    """

    # seconds between redraws of curves.png while training (it is always drawn at the end)
    CURVES_EVERY_S = 30.0

    def __init__(
        self,
        cfg: Config,
        ds: Dataset,
        output: str,
        data_source: str | None = None,
        log: Callable[[str], None] = print,
        on_evaluation: Callable[[int, dict], bool | None] | None = None,
    ):
        self.cfg = cfg.resolved()
        self.ds = ds
        if ds.valid is None:
            raise ValueError(
                "the dataset needs a validation split (use prepare_data or Dataset.with_validation)"
            )
        self.output = output
        self.log = log
        self.on_evaluation = on_evaluation
        os.makedirs(output, exist_ok=True)
        self.data_source = data_source
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        torch.manual_seed(self.cfg.seed)
        self.device = torch.device(self.cfg.device)
        mods = self.cfg.modalities
        mods = sorted(ds.features) if mods is None else [m for m in mods if m in ds.features]
        missing = [m for m in (self.cfg.modalities or []) if m not in ds.features]
        if missing and self.cfg.model != "lightgcn":
            log(f"note: modalities {missing} not in the dataset; using {mods or 'none'}")
        self.cfg = dataclasses.replace(self.cfg, modalities=mods)
        t0 = time.perf_counter()
        # SLIF-MR's modality graphs; FREEDOM and LATTICE build their own item graphs
        self.builder = GraphBuilder(
            ds,
            modalities=mods if self.cfg.model == "slifmr" else [],
            use_kg=self.cfg.use_kg,
            knn_k=self.cfg.knn_k,
            beta=self.cfg.feedback_beta,
            gamma=self.cfg.feedback_gamma,
            feedback_in=self.cfg.feedback_in,
            device=self.device,
            backend=self.cfg.backend,
            knn_exact_max=self.cfg.knn_exact_max,
            edge_dropout=self.cfg.edge_dropout,
            # with feedback the no-feedback graphs are not used per epoch
            cache_static=not self.cfg.feedback,
        )
        self.static_graph_s = time.perf_counter() - t0
        self.model = build_model(self.cfg, ds, self.builder.num_view_relations).to(self.device)
        # fused=True: one multi-tensor kernel per step instead of ~10 element-wise passes per
        # parameter (the full-graph embedding tables make Adam ~2 % of a step otherwise).
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, fused=self.device.type in ("cpu", "cuda")
        )
        self.sampler = NegativeSampler(ds.train, ds.num_users, ds.num_items)
        self.train_csr = ds.interaction_matrix("train")
        self.valid_csr = ds.interaction_matrix("valid")
        self.test_csr = ds.interaction_matrix("test")
        # state that a resume restores
        self.epoch = 0
        self.history: list = []
        self.best = {"recall@20": -1.0, "epoch": -1}
        self.bad_epochs = 0
        self.stopped_early = False
        self.stopped_by_callback = False
        self._tb = None  # SummaryWriter while training, if any
        self._curves_t: float | None = None  # when curves.png was last drawn (None: not yet)
        # H(t-1) and the previous kNN graph: the self-loop's state, checkpointed whole
        self.selfloop = SelfLoop(
            self.builder,
            ds.features,
            enabled=self.cfg.feedback,
            k=self.cfg.feedback_k,
            refine=self.cfg.feedback_refine,
            initial=self.cfg.feedback_init,
            modalities=mods,
            device=self.device,
        )

    # ------------------------------------------------------------------ paths
    def _p(self, name: str) -> str:
        return os.path.join(self.output, name)

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, graphs, epoch: int) -> dict:
        """One pass over the training pairs in random order; the mean of each loss part."""
        cfg, ds = self.cfg, self.ds
        rng = np.random.default_rng([cfg.seed, epoch])
        n = ds.train.shape[0]
        perm = rng.permutation(n)
        n_batches = max(1, math.ceil(n / cfg.batch_size))
        sums = dict.fromkeys(("loss",) + tuple(self.model.loss_parts), 0.0)
        self.model.train()
        self.model.begin_epoch(epoch, rng)
        it = range(n_batches)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(
                it,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False,
                mininterval=1.0,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            it = bar
        for b in it:
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            users = ds.train[idx, 0]
            pos = ds.train[idx, 1]
            neg = self.sampler(users, rng)
            if cfg.neg_candidates > 1:  # (B, M): the model keeps the hardest of each row's M
                more = [self.sampler(users, rng) for _ in range(cfg.neg_candidates - 1)]
                neg = np.stack([neg] + more, 1)
            parts = self._step(graphs, users, pos, neg, rng)
            for k, v in parts.items():
                sums[k] += v
            if bar is not None:
                bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.4f}", refresh=False)
        if bar is not None:
            bar.close()
        return {k: v / n_batches for k, v in sums.items()}

    def _step(self, graphs, users: np.ndarray, pos: np.ndarray, neg: np.ndarray, rng) -> dict:
        """One optimiser step; the loss parts as floats.

        A method of its own so that the forward's full-graph outputs (the fused, per-view and
        stacked representations: GiBs at a million items) are dropped when the loss is
        computed: during the backward pass autograd then frees each one as soon as its last
        use is done, instead of all of them staying alive until the step ends.
        """
        dev = self.device
        batch = Batch(
            torch.from_numpy(users).to(dev),
            torch.from_numpy(pos).to(dev),
            torch.from_numpy(neg).to(dev),
            users,
            pos,
            rng,
        )
        parts = self.model.calculate_loss(graphs, batch)
        self.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.opt.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "selfloop": self.selfloop.state_dict(),
            "config": self.cfg.to_dict(),
            # numpy arrays are not loadable with weights_only: stored as tensors
            "orig_users": _as_tensor(self.ds.orig_users),
            "orig_items": _as_tensor(self.ds.orig_items),
        }

    def _check_order(self, st: dict) -> None:
        """A resumed run must see its users and items under the ids it was trained with."""
        for name in ("orig_users", "orig_items"):
            saved, now = st.get(name), getattr(self.ds, name)
            saved = saved.numpy() if isinstance(saved, torch.Tensor) else saved
            same = (saved is None and now is None) or (
                saved is not None and now is not None and np.array_equal(saved, now)
            )
            if not same:
                raise ValueError(
                    f"--resume: the dataset's {name[5:]} are not in the order the "
                    f"checkpoint in {self.output} was trained with (Config.reorder)"
                )

    def _original_ids(self, sd: dict) -> dict:
        """A model state dict with the user / item (and item-entity) rows in original ids."""
        ou, oi = self.ds.orig_users, self.ds.orig_items
        sd = dict(sd)
        sd["user_emb"] = to_original_rows(sd["user_emb"], ou)
        sd["item_emb"] = to_original_rows(sd["item_emb"], oi)
        if oi is not None and "entity_emb" in sd and not getattr(self.model, "share_item_entity", True):
            ent = sd["entity_emb"].clone()
            ent[: oi.size] = to_original_rows(ent[: oi.size], oi)
            sd["entity_emb"] = ent
        return sd

    def _load_state(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.epoch = int(st["epoch"])
        self.history = list(st["history"])
        self.best = dict(st["best"])
        self.bad_epochs = int(st["bad_epochs"])
        self.stopped_early = bool(self.cfg.patience) and self.bad_epochs >= self.cfg.patience
        # checkpoints from before the self-loop kept its state kept only H(t-1)
        self.selfloop.load_state_dict(st["selfloop"] if "selfloop" in st else {"h_prev": st.get("h_prev")})

    def _write_log(self) -> None:
        write_text_atomic(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.history), self._p("metrics.jsonl")
        )

    def _write_curves(self, force: bool = False) -> None:
        """curves.png, at most every CURVES_EVERY_S seconds unless ``force``; without matplotlib
        one log line says what to install."""
        now = time.monotonic()
        if not self.history or (
            not force and self._curves_t is not None and now - self._curves_t < self.CURVES_EVERY_S
        ):
            return
        first = self._curves_t is None
        self._curves_t = now
        best = int(self.best["epoch"]) if self.best["epoch"] > 0 else None
        if not write_curves(self.history, self._p("curves.png"), best_epoch=best) and first:
            self.log(MISSING_MATPLOTLIB)

    def _alpha(self) -> dict:
        """The view weights alpha by view name (models with views: SLIF-MR), else {}."""
        alpha = getattr(self.model, "alpha", None)
        names = list(getattr(self.model, "view_names", []) or [])
        if not isinstance(alpha, torch.Tensor) or alpha.numel() != len(names):
            return {}
        return {n: round(float(a), 6) for n, a in zip(names, alpha.detach().cpu().tolist())}

    # ------------------------------------------------------------------ main loop
    def fit(self, resume: bool = False) -> dict:
        """Train (or resume) until ``epochs`` or early stopping; evaluate the best model on test;
        write metrics.json. Returns the test metrics dict."""
        self.train(resume)
        return self.test()

    def restore(self) -> bool:
        """Load OUTPUT/last.pt (model, optimiser, history, self-loop state), checked against
        this configuration; False when there is none."""
        if not os.path.isfile(self._p("last.pt")):
            return False
        st = load_checkpoint(self._p("last.pt"), map_location=self.device)
        require_keys(
            st, self._p("last.pt"), ("model", "opt", "epoch", "history", "best", "bad_epochs", "config")
        )
        # A key the checkpoint predates had its default value then; keys that do not change
        # what is trained may differ.
        defaults = Config().to_dict()
        free = ("epochs", "progress", "patience", "tensorboard")
        saved = {k: st["config"].get(k, defaults[k]) for k in self.cfg.to_dict() if k not in free}
        now = {k: v for k, v in self.cfg.to_dict().items() if k not in free}
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise ValueError(
                f"--resume: the checkpoint in {self.output} was trained with a "
                f"different configuration (keys {diff})"
            )
        self._check_order(st)
        self._load_state(st)
        return True

    def train(self, resume: bool = False) -> dict:
        """Train (or resume) until ``epochs``, early stopping or the ``on_evaluation`` callback;
        no test evaluation. Returns the best validation score and its epoch
        (``{"recall@20": ..., "epoch": ...}``)."""
        cfg = self.cfg
        stale = remove_stale_temporaries(self.output)
        if stale:
            self.log(f"removed {len(stale)} temporary file(s) left by an interrupted write: {stale}")
        write_json_atomic(
            {"config": cfg.to_dict(), "data": self.data_source, "dataset": self.ds.summary()},
            self._p("config.json"),
        )
        if resume and self.restore():
            self.log(f"resumed from {self._p('last.pt')} after epoch {self.epoch}")
        elif resume:
            self.log(f"--resume: no checkpoint in {self.output}, starting from scratch")
        self._tb = open_writer(cfg.tensorboard, self._p("tb"), cfg.to_dict())
        self.log(self.ds.summary())
        self.log(
            f"model {cfg.model}: views {['cf'] + self.model.view_names}, feedback "
            f"{'on' if cfg.feedback else 'off'}, sc_weight {cfg.sc_weight}; "
            f"{sum(p.numel() for p in self.model.parameters())} parameters; static graphs "
            f"{self.static_graph_s:.2f}s"
        )
        try:
            with interrupts_as_exceptions():
                stopped = self._run_epochs()
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", 2)
            done = (
                f"last.pt holds epoch {self.epoch}; continue with --resume"
                if self.epoch
                else "no epoch had finished, nothing was saved"
            )
            self.log(
                f"interrupted ({'SIGTERM' if signum == 15 else 'SIGINT'}) during epoch "
                f"{self.epoch + 1}: {done}"
            )
            raise TrainingInterrupted(signum) from None
        finally:
            if self._tb is not None:
                with deferred_interrupts():
                    self._tb.close()
                self._tb = None
        self._write_curves(force=True)
        if self.stopped_by_callback:
            self.log(
                f"stopped by on_evaluation after epoch {self.epoch} (best at epoch {self.best['epoch']})"
            )
        elif stopped:
            self.log(
                f"early stop: no better validation recall@20 for {cfg.patience} evaluations "
                f"(best at epoch {self.best['epoch']})"
            )
        return dict(self.best)

    def _run_epochs(self) -> bool:
        """The epochs left; True when early stopping ended them. Every epoch ends with best.pt
        (if better), last.pt and the logs written as one step that SIGINT / SIGTERM cannot cut:
        an interrupt then leaves the files of the last completed epoch."""
        cfg = self.cfg
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            epoch = self.epoch
            t0 = time.perf_counter()
            # edge dropout's own stream (drawn only with edge_dropout > 0): the batches' order and
            # negatives stay those of a run without it
            graphs, rebuild_s = self.selfloop.graphs(rng=np.random.default_rng([cfg.seed, epoch, 1]))
            t1 = time.perf_counter()
            parts = self._train_epoch(graphs, epoch)
            t2 = time.perf_counter()
            # One forward without gradient: H(t) for the next feedback graph and the validation
            # embeddings.
            self.model.eval()
            with torch.no_grad():
                out = self.model(graphs)
            self.selfloop.observe(out.item)
            best_ckpt = None
            rec = {
                "epoch": epoch + 1,
                **{k: round(v, 6) for k, v in parts.items()},
                "train_s": round(t2 - t1, 3),
                "rebuild_s": round(rebuild_s, 3),
                "feedback_edges": graphs.feedback_edges,
            }
            if self.selfloop.changed_share is not None and graphs.feedback_edges:
                rec["feedback_changed"] = round(self.selfloop.changed_share, 6)
            alpha = self._alpha()
            rec.update({f"alpha_{n}": a for n, a in alpha.items()})
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                vm = rank_metrics(
                    out.user, out.item, self.valid_csr, self.train_csr, cfg.eval_ks, backend=cfg.backend
                )
                for k in cfg.eval_ks:
                    rec[f"valid_recall@{k}"] = round(vm[f"recall@{k}"], 6)
                    rec[f"valid_ndcg@{k}"] = round(vm[f"ndcg@{k}"], 6)
                score = vm.get("recall@20", vm[f"recall@{max(cfg.eval_ks)}"])
                if score > self.best["recall@20"]:
                    self.best = {"recall@20": score, "epoch": epoch + 1}
                    self.bad_epochs = 0
                    ou, oi = self.ds.orig_users, self.ds.orig_items
                    best_ckpt = {
                        "model": self._original_ids(self.model.state_dict()),
                        "epoch": epoch + 1,
                        "user": to_original_rows(out.user.detach().cpu(), ou),
                        "item": to_original_rows(out.item.detach().cpu(), oi),
                        "config": cfg.to_dict(),
                    }
                else:
                    self.bad_epochs += 1
                    if cfg.patience and self.bad_epochs >= cfg.patience:
                        stopped = True
            # The next epoch's refresh and steps must not hold this epoch's graphs and outputs.
            del graphs, out
            rec["epoch_s"] = round(time.perf_counter() - t0, 3)
            self.history.append(rec)
            self.epoch = epoch + 1
            self.stopped_early = stopped
            # Held as well: the TensorBoard writer and matplotlib, whose locks and queues an
            # exception raised inside them can leave so that closing the writer never returns.
            with deferred_interrupts():
                if best_ckpt is not None:
                    atomic_save(best_ckpt, self._p("best.pt"))
                del best_ckpt
                atomic_save(self._state(), self._p("last.pt"))
                self._write_log()
                v = rec.get("valid_recall@20")
                terms = ", ".join(f"{k} {parts[k]:.4f}" for k in self.model.loss_parts)
                self.log(
                    f"epoch {epoch + 1:3d}  loss {parts['loss']:.4f} ({terms})  "
                    f"valid recall@20 {'-' if v is None else f'{v:.4f}'}  "
                    f"ndcg@20 {rec.get('valid_ndcg@20', '-')}  {rec['epoch_s']:.1f}s "
                    f"(rebuild {rebuild_s:.2f}s)"
                )
                if self._tb is not None:
                    log_epoch(self._tb, rec, ("loss",) + tuple(self.model.loss_parts), alpha)
                self._write_curves()
            if (
                self.on_evaluation is not None
                and any(k.startswith("valid_") for k in rec)
                and self.on_evaluation(epoch + 1, dict(rec))
            ):
                self.stopped_by_callback = stopped = True
        return stopped

    def test(self) -> dict:
        """Test metrics of the best checkpoint (train + validation items excluded); writes
        metrics.json and returns it."""
        best = load_checkpoint(self._p("best.pt"))
        require_keys(best, self._p("best.pt"), ("user", "item", "epoch"))
        exclude = (self.train_csr + self.valid_csr).tocsr()
        # best.pt holds rows in original ids; the trainer's matrices are in its own
        ou, oi = self.ds.orig_users, self.ds.orig_items
        user = best["user"] if ou is None else best["user"][torch.from_numpy(ou)]
        item = best["item"] if oi is None else best["item"][torch.from_numpy(oi)]
        m = rank_metrics(user, item, self.test_csr, exclude, self.cfg.eval_ks, backend=self.cfg.backend)
        epochs = [r for r in self.history if "epoch_s" in r]
        n_run = len(epochs)
        # The first epoch of a process pays the one-off JIT compilation of the kernels: the
        # per-epoch figures average the later epochs when there are any.
        steady = epochs[1:] if len(epochs) > 1 else epochs
        train_s = [r["train_s"] for r in steady]
        rebuild = [r["rebuild_s"] for r in steady]
        tot = [r["epoch_s"] for r in steady]
        m.update(
            {
                "model": self.cfg.model,
                "best_epoch": int(best["epoch"]),
                "epochs_run": n_run,
                # "early_stop": validation stopped improving; "epoch_cap": cfg.epochs ran out;
                # "callback": the on_evaluation callback ended it
                "stopped": (
                    "callback"
                    if self.stopped_by_callback
                    else "early_stop"
                    if self.stopped_early
                    else "epoch_cap"
                ),
                "first_epoch_seconds": float(epochs[0]["epoch_s"]) if epochs else 0.0,
                "seconds_per_epoch": float(np.mean(tot)) if tot else 0.0,
                "train_seconds_per_epoch": float(np.mean(train_s)) if train_s else 0.0,
                "rebuild_seconds_per_epoch": float(np.mean(rebuild)) if rebuild else 0.0,
                "rebuild_share": float(np.sum(rebuild) / max(np.sum(tot), 1e-12)) if tot else 0.0,
                "dataset": self.ds.name,
                "feedback": self.cfg.feedback,
                "use_kg": getattr(self.model, "use_kg", False),
                "modalities": list(getattr(self.model, "modalities", [])),
                "sc_weight": self.cfg.sc_weight,
            }
        )
        write_json_atomic(m, self._p("metrics.json"))
        ks = ", ".join(
            f"{n}@{k} {m[f'{n}@{k}']:.4f}"
            for k in self.cfg.eval_ks
            for n in ("recall", "ndcg", "precision", "hit")
        )
        self.log(f"test ({m['num_users']} users, best epoch {m['best_epoch']}): {ks}")
        return m


def _as_tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))
