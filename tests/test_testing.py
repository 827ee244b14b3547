"""slifmr_kernels.testing (generators, sym_normalize, recall with ties, the timer) and the
benchmark harness built on it (bench/harness.py: machine description, tables, reports)."""

import json
import os
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from slifmr_kernels import CSRGraph
from slifmr_kernels.testing import (
    neighbour_lists,
    power_law_csr,
    power_law_ids,
    power_law_pairs,
    recall_with_ties,
    sym_normalize,
    time_call,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- generators
def test_power_law_ids_range_skew_and_replay():
    ids = power_law_ids(1000, 20000, alpha=1.2, generator=_gen(0))
    assert ids.shape == (20000,) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < 1000
    counts = torch.bincount(ids, minlength=1000)
    assert int(counts.max()) > 50 * 20000 / 1000  # one id far above the mean: power law
    assert torch.equal(ids, power_law_ids(1000, 20000, alpha=1.2, generator=_gen(0)))
    assert not torch.equal(ids, power_law_ids(1000, 20000, alpha=1.2, generator=_gen(1)))
    assert power_law_ids(0, 5).numel() == 0 and power_law_ids(5, 0).numel() == 0


def test_power_law_pairs_with_repeats_are_the_two_id_draws():
    a, b = power_law_pairs(300, 200, 5000, (1.0, 0.5), generator=_gen(3))
    g = _gen(3)
    assert torch.equal(a, power_law_ids(300, 5000, 1.0, g))
    assert torch.equal(b, power_law_ids(200, 5000, 0.5, g))
    assert int(a.max()) < 300 and int(b.max()) < 200
    # one exponent for both sides
    a1, b1 = power_law_pairs(300, 200, 5000, 1.0, generator=_gen(3))
    assert torch.equal(a1, a) and not torch.equal(b1, b)


def test_power_law_pairs_distinct():
    a, b = power_law_pairs(100, 50, 3000, 1.0, distinct=True, generator=_gen(0))
    assert a.shape == b.shape == (3000,)
    assert int(a.max()) < 100 and int(b.max()) < 50 and int(a.min()) >= 0 and int(b.min()) >= 0
    assert torch.unique(a * 50 + b).numel() == 3000  # no pair twice
    a2, b2 = power_law_pairs(100, 50, 3000, 1.0, distinct=True, generator=_gen(0))
    assert torch.equal(a, a2) and torch.equal(b, b2)
    # every possible pair: rounds of drawing go on until all are found
    a, b = power_law_pairs(10, 10, 100, 1.0, distinct=True, generator=_gen(1))
    assert torch.unique(a * 10 + b).numel() == 100
    with pytest.raises(ValueError, match="101 distinct pairs"):
        power_law_pairs(10, 10, 101, distinct=True)


def test_power_law_csr_arrays():
    indptr, indices, values, relation = power_law_csr(400, 300, 6000, 3, generator=_gen(2))
    assert indptr.dtype == torch.int64 and indptr.shape == (401,)
    assert indices.dtype == torch.int32 and relation.dtype == torch.int32
    assert values.dtype == torch.float32 and values.shape == (6000,)
    assert int(indptr[0]) == 0 and int(indptr[-1]) == 6000
    deg = indptr[1:] - indptr[:-1]
    assert bool((deg >= 0).all())
    assert int(deg.max()) > 20 * 6000 / 400 and int((deg == 0).sum()) > 0  # heavy and empty rows
    assert int(indices.min()) >= 0 and int(indices.max()) < 300
    assert int(relation.min()) >= 0 and int(relation.max()) == 2
    assert float(values.min()) >= 0.5 and float(values.max()) < 1.5
    again = power_law_csr(400, 300, 6000, 3, generator=_gen(2))
    assert all(torch.equal(x, y) for x, y in zip((indptr, indices, values, relation), again))
    # duplicates are kept: the edge count is exact, some (row, column) pairs repeat
    rows = torch.repeat_interleave(torch.arange(400), deg)
    assert torch.unique(rows * 300 + indices.long()).numel() < 6000
    f64 = power_law_csr(10, 10, 50, dtype=torch.float64, generator=_gen(0))
    assert f64[2].dtype == torch.float64 and int(f64[3].max()) == 0


def test_sym_normalize_uses_row_sums_on_both_sides():
    # not symmetric: row sums (3, 1, 0) differ from column sums (1, 2, 1); row 2 is empty
    m = sp.csr_matrix(np.array([[0, 2, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    out = sym_normalize(m)
    assert isinstance(out, sp.csr_matrix) and out.dtype == np.float32 and out.has_sorted_indices
    r = np.array([3.0, 1.0, 0.0])
    inv = np.where(r > 0, 1 / np.sqrt(np.maximum(r, 1e-30)), 0.0)
    np.testing.assert_allclose(out.toarray(), inv[:, None] * m.toarray() * inv[None, :], rtol=1e-6)
    assert np.isfinite(out.toarray()).all()
    c = np.array([1.0, 2.0, 1.0])
    np.testing.assert_allclose(
        sym_normalize(m, "sym").toarray(), inv[:, None] * m.toarray() / np.sqrt(c)[None, :], rtol=1e-6
    )


# --------------------------------------------------------------------------- recall
def test_neighbour_lists_pads_rows_to_the_widest():
    g = CSRGraph.from_edges(torch.tensor([0, 0, 0, 2]), torch.tensor([3, 1, 2, 0]), shape=(4, 4))
    assert torch.equal(neighbour_lists(g), torch.tensor([[1, 2, 3], [-1, -1, -1], [0, -1, -1], [-1, -1, -1]]))
    assert torch.equal(neighbour_lists(g, torch.tensor([2, 1])), torch.tensor([[0], [-1]]))
    assert neighbour_lists(g, torch.tensor([1, 3])).shape == (2, 0)
    empty = CSRGraph.from_edges(
        torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64), shape=(2, 2)
    )
    assert neighbour_lists(empty).shape == (2, 0)


def test_recall_with_ties_counts_swapped_equal_scores():
    ref_i = torch.tensor([[0, 1], [2, 3]])
    ref_v = torch.tensor([[0.9, 0.5], [0.8, 0.7]])
    # id 4 has the k-th score 0.5 of row 0: a tie, right by scores, wrong by ids
    tie, exact = recall_with_ties(
        torch.tensor([[0, 4], [2, 3]]), torch.tensor([[0.9, 0.5], [0.8, 0.7]]), ref_i, ref_v
    )
    assert tie == 1.0 and exact == 0.75
    # a score below the k-th by more than the tolerance does not count; padding never does
    tie, exact = recall_with_ties(
        torch.tensor([[0, 4], [2, -1]]), torch.tensor([[0.9, 0.49], [0.8, float("-inf")]]), ref_i, ref_v
    )
    assert tie == 0.5 and exact == 0.5
    # within rtol * (1 + |k-th|) of the k-th score: a tie up to rounding
    tie, _ = recall_with_ties(
        torch.tensor([[0, 4], [2, 3]]), torch.tensor([[0.9, 0.5 - 1e-6], [0.8, 0.7]]), ref_i, ref_v
    )
    assert tie == 1.0
    tie, _ = recall_with_ties(
        torch.tensor([[0, 4], [2, 3]]), torch.tensor([[0.9, 0.5 - 1e-6], [0.8, 0.7]]), ref_i, ref_v, rtol=1e-8
    )
    assert tie == 0.75


def test_recall_with_ties_exact_ignores_padding_in_the_reference():
    ref_i = torch.tensor([[5, -1], [1, 2]])
    ref_v = torch.tensor([[0.3, float("-inf")], [0.9, 0.1]])
    _, exact = recall_with_ties(
        torch.tensor([[5, -1], [2, 7]]), torch.tensor([[0.3, float("-inf")], [0.1, 0.05]]), ref_i, ref_v
    )
    assert exact == pytest.approx(2 / 3)  # 3 real reference ids, 2 found; -1 matches nothing


# --------------------------------------------------------------------------- timer
class _FakeClock:
    """A clock that advances by the given steps, one per reading."""

    def __init__(self, steps):
        self.t, self.steps = 0.0, list(steps)

    def __call__(self):
        self.t += self.steps.pop(0) if self.steps else 0.0
        return self.t


def test_time_call_median_min_warmup_and_result():
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    # readings (start, end) per timed call: durations 3, 1, 2
    t = time_call(fn, repeats=3, warmup=2, clock=_FakeClock([0, 3, 0, 1, 0, 2]))
    assert len(calls) == 5 and t.result == 5
    assert t.samples == [3.0, 1.0, 2.0] and t.seconds == 2.0
    t = time_call(fn, repeats=3, stat="min", clock=_FakeClock([0, 3, 0, 1, 0, 2]))
    assert t.seconds == 1.0 and t.cpu_seconds >= 0
    assert len(time_call(fn, repeats=0).samples) == 1  # at least one call is timed
    with pytest.raises(ValueError, match="stat"):
        time_call(fn, stat="mean")


def test_time_call_cap_and_wall_clock():
    t = time_call(lambda: time.sleep(0.02), repeats=50, max_seconds=0.05)
    assert 1 <= len(t.samples) < 10
    assert all(s >= 0.015 for s in t.samples)
    assert t.cpu_seconds < 0.015  # sleeping costs no CPU
    assert t.peak_extra_bytes != t.peak_extra_bytes  # NaN unless asked for


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux peak-RSS reset")
def test_time_call_peak_memory():
    def alloc():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        return float(x[-1])

    t = time_call(alloc, track_memory=True)
    if t.peak_extra_bytes != t.peak_extra_bytes:
        pytest.skip("clear_refs is not writable here")
    assert t.peak_extra_bytes > 48 * 2**20 and t.result == 1.0


# --------------------------------------------------------------------------- bench/harness.py
@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import harness as h

        yield h
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_markdown_table_plain_right_aligned_and_padded(harness):
    rows = [{"a": "x", "bb": 1.5}, {"a": "long"}]
    assert (
        harness.markdown_table(rows, ["a", "bb"], right=["bb"])
        == "| a | bb |\n|---|---:|\n| x | 1.5 |\n| long |  |"
    )
    assert (
        harness.markdown_table(rows, ["a", "bb"], pad=True)
        == "| a    | bb  |\n|------|-----|\n| x    | 1.5 |\n| long |     |"
    )
    assert harness.markdown_table([], ["a"], pad=True) == "| a |\n|---|"


def test_write_report_and_jsonl(harness, tmp_path):
    md = harness.write_report(tmp_path / "sub" / "r.md", "# r\n", {"x": 1, "dev": torch.device("cpu")})
    assert md.read_text() == "# r\n"
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"x": 1, "dev": "cpu"}
    harness.append_jsonl(tmp_path / "log.jsonl", {"a": 1})
    harness.append_jsonl(tmp_path / "log.jsonl", {"a": 2})
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(s)["a"] for s in lines] == [1, 2]


def test_environment(harness, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    env = harness.environment()
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["threads"] == torch.get_num_threads()
    assert env["cores"] == os.cpu_count() and env["cpu_model"]
    assert ("gpu" in env) == torch.cuda.is_available()
    json.dumps(env)  # one JSON object
