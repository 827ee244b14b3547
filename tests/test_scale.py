"""Smoke tests of the scale benchmark (bench/scale.py) and its peer (bench/peer_dense.py) at a
tiny size, and a check that the peer computes the same model as the library, so that the two
are timed on the same work."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

import peer_dense  # noqa: E402
import scale  # noqa: E402

from slifmr.config import Config  # noqa: E402
from slifmr.graphs import GraphBuilder, feedback_knn  # noqa: E402
from slifmr.models import SLIFMR  # noqa: E402

SIZE = [
    "--items",
    "400",
    "--dims",
    "16,24",
    "--batch-size",
    "2048",
    "--eval-users",
    "100",
    "--threads",
    "1",
    "--epochs",
    "2",
]
KEYS = {"items", "epoch_seconds", "refresh_seconds", "peak_rss_gib"}


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """The runs below pass --threads 1 (fast and steady on a shared 2-core machine); put the
    process-wide torch setting back for the tests that follow."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "main, extra",
    [
        (scale.main, ["--static-knn", "bucket", "--refresh", "refine"]),
        (scale.main, ["--static-knn", "exact", "--refresh", "exact", "--max-steps", "1"]),
        (scale.main, ["--refresh", "refine", "--max-steps", "1", "--reorder", "graph"]),
        (peer_dense.main, ["--sim", "chunked", "--chunk", "64"]),
    ],
)
def test_command_prints_json_last(main, extra, capsys):
    """The documented command runs two epochs end to end and ends with the JSON summary whose
    phases add up to the epoch time."""
    main(SIZE + extra)
    res = _last_json(capsys.readouterr().out)
    assert KEYS <= set(res)
    assert res["items"] == 400 and len(res["epochs"]) == 2
    assert res["peak_rss_gib"] > 0 and res["epoch_seconds"] > 0
    ep = res["epochs"][-1]
    parts = sum(ep[k] for k in ("refresh", "propagation", "loss_backward", "h_forward", "eval"))
    assert abs(parts - ep["epoch_seconds"]) < 0.01
    assert ep["steps"] == -(-res["train"] // 2048)
    assert res["extrapolated"] == ("--max-steps" in extra)
    if "--reorder" in extra:  # bench/reorder.py's relabelling, timed on its own
        assert res["reorder"] == "graph" and res["reorder_seconds"] > 0


@pytest.mark.parametrize("script", ["scale.py", "peer_dense.py"])
def test_script_from_a_shell_and_rss_watchdog(script):
    """``python bench/<script>`` runs from any directory without an install, and past
    --rss-limit-gib it stops with exit status 3 and a last-line JSON saying so."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", script),
            "--items",
            "200",
            "--dims",
            "8,8",
            "--threads",
            "1",
            "--rss-limit-gib",
            "0.01",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env=env,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    res = _last_json(proc.stdout)
    assert res["failed"] == "rss limit" and res["items"] == 200


def test_catalog_sizes_scale_with_items():
    ds = scale.make_catalog(1000, dims=(8, 12))
    assert ds.num_users == 2000 and ds.kg.shape[0] == 5000
    n = ds.train.shape[0] + ds.test.shape[0]
    assert 0.8 * 20000 < n <= 20000 * 1.05  # target before deduplication
    assert {m: f.shape[1] for m, f in ds.features.items()} == {"image": 8, "text": 12}


def test_bucket_knn_is_exact_within_one_block():
    x = torch.randn(300, 8)
    g = scale.bucket_knn(x, 5, block=512)
    assert scale.knn_recall(x, g, 5, sample=300) == 1.0
    g = scale.bucket_knn(x, 5, block=64)
    assert g.nnz == 300 * 5 and 0.0 < scale.knn_recall(x, g, 5, sample=300) < 1.0


def test_peer_computes_the_library_model():
    """Same parameters, same feedback kNN: the peer's dense/torch.sparse.mm forward equals
    the library's fused-kernel forward (so the timing comparison is like for like)."""
    ds = scale.make_catalog(300, dims=(8, 12), seed=3).with_validation(0.1, 0)
    cfg = Config(modalities=["image", "text"], knn_k=5, feedback_k=5)
    builder = GraphBuilder(
        ds, modalities=cfg.modalities, knn_k=5, beta=cfg.feedback_beta, gamma=cfg.feedback_gamma
    )
    kw = dict(
        num_entities=ds.num_entities, num_view_relations=builder.num_view_relations, features=ds.features
    )
    torch.manual_seed(0)
    lib = SLIFMR(ds.num_users, ds.num_items, cfg, **kw)
    peer = peer_dense.PeerModel(ds.num_users, ds.num_items, cfg, **kw)
    peer.load_state_dict(lib.state_dict())
    h = torch.randn(ds.num_items, 16)
    S, raw, _ = feedback_knn(h, 5, backend="torch")
    pg = peer_dense.PeerGraphs(ds, cfg)
    for chunk in (0, 37):
        idx, val = peer_dense.dense_knn(h, 5, chunk)
        assert np.array_equal(np.sort(idx.numpy(), 1), np.sort(raw.toarray().nonzero()[1].reshape(-1, 5), 1))
    a = lib(builder.build(S, raw))
    b = peer(pg.build(*peer_dense.dense_knn(h, 5)))
    for key in ("user", "item"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-5)
