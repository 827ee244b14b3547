"""bench/gpu_check.py without a GPU: arguments, the power-law graph and its transpose, the
byte and flop models, recall with ties, the report, and the whole script end to end on tiny
CPU sizes (Triton under the interpreter)."""

import importlib
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_gpu_check_help_and_args(gpu_check):
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "--out" in r.stdout
    a = gpu_check.parse_args(["--knn", "1000,2000", "--backends", "triton"])
    assert a.knn_sizes == [1000, 2000] and a.backend_list == ["triton"]
    assert a.edges == 20_000_000 and a.dim == 64
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", "/nonexistent"]) == 2  # refuses cleanly, writes nothing


def test_gpu_check_power_law_graph_and_transpose(gpu_check):
    indptr, indices, values, rel = gpu_check.power_law_csr(
        500, 500, 4000, 3, generator=torch.Generator().manual_seed(1)
    )
    deg = indptr[1:] - indptr[:-1]
    assert int(indptr[-1]) == 4000 and indices.numel() == 4000
    assert int(deg.max()) > 20 * 4000 / 500  # heavy rows exist
    assert int((deg == 0).sum()) > 0  # and empty ones
    assert int(indices.max()) < 500 and int(rel.max()) < 3 and rel.dtype == torch.int32
    t = gpu_check.transpose_csr(indptr, indices, values, rel, 500)
    dense = torch.zeros(3, 500, 500, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(500), deg)
    dense.index_put_((rel.long(), rows, indices.long()), values.double(), accumulate=True)
    dense_t = torch.zeros(3, 500, 500, dtype=torch.float64)
    rows_t = torch.repeat_interleave(torch.arange(500), t[0][1:] - t[0][:-1])
    dense_t.index_put_((t[3].long(), rows_t, t[1].long()), t[2].double(), accumulate=True)
    assert torch.equal(dense_t, dense.transpose(1, 2))


def test_gpu_check_models_recall_and_report(gpu_check, tmp_path):
    comp, gath = gpu_check.propagate_bytes(10, 20, 100, 4, itemsize=4)
    # indptr 88 + edges 100 * 12 + x 20*4*4 + y 10*4*4 ; gathered: x per edge 100*16
    assert comp == 88 + 1200 + 320 + 160 and gath == 88 + 1200 + 1600 + 160
    assert gpu_check.knn_flops(3, 5, 7) == 210
    ref_i = torch.tensor([[0, 1], [2, 3]])
    ref_v = torch.tensor([[0.9, 0.5], [0.8, 0.7]])
    tie, exact = gpu_check.recall_with_ties(
        torch.tensor([[0, 4], [2, 3]]), torch.tensor([[0.9, 0.5], [0.8, 0.7]]), ref_i, ref_v
    )
    assert exact == 0.75 and tie == 1.0  # id 4 ties the k-th score: counted by the tie rule
    tie, _ = gpu_check.recall_with_ties(
        torch.tensor([[0, 4], [2, -1]]), torch.tensor([[0.9, 0.1], [0.8, float("-inf")]]), ref_i, ref_v
    )
    assert tie == 0.5
    assert gpu_check.knn_chunk_rows(1_000_000) == 1073
    rows = [
        dict(section="s", impl="a", ms=1.5, rate_str="3 GB/s", vs_peer=2.0, of_ceiling=0.5, check="ok"),
        dict(section="s", impl="b", check="skipped"),
    ]
    gpu_check.write_report(str(tmp_path), {"device": "none"}, rows)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| s | a | 1.500 | 3 GB/s | 2.00x | 50% | ok |" in md
    import json

    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][1]["impl"] == "b"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke mode is for CPU machines")
def test_gpu_check_cpu_smoke_run_with_triton_interpreter(tmp_path):
    """The whole script end to end on tiny CPU sizes (triton under the interpreter): its
    correctness checks must pass and the report must be written."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            os.path.join(ROOT, "bench", "gpu_check.py"),
            "--device",
            "cpu",
            "--backends",
            "triton",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| propagate spmm_rel | triton |" in md and "ok det" in md and "FAIL" not in md
    # kNN at two sizes (exact kernel, tf32+rerank path, the public op) and topk_scores (exact
    # kernel, tf32+rerank path)
    assert md.count("recall 1.0000") == 8
    assert "topk_scores" in md and "EXCLUDED RETURNED" not in md and "error" not in md
    # fuse_views forward + backward against float64, run twice for the bits
    assert "| fuse_views fwd+bwd N=70 V=3 d=16 | triton |" in md
    assert md.count("ok det out=") == 1
