"""slifmr/evaluate.py: ranking metrics against a brute-force count, exclusion of training
items, users without test or training items."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from slifmr.evaluate import metrics_from_topk, rank_metrics


def _brute_metrics(top, users, truth, ks):
    out = {}
    for k in ks:
        rec, nd, pr, hit = [], [], [], []
        for row, u in zip(top, users):
            rel = set(truth[u].indices.tolist())
            got = [i for i in row[:k]]
            h = [1.0 if (i >= 0 and i in rel) else 0.0 for i in got]
            rec.append(sum(h) / len(rel))
            pr.append(sum(h) / k)
            hit.append(float(sum(h) > 0))
            dcg = sum(x / math.log2(j + 2) for j, x in enumerate(h))
            idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
            nd.append(dcg / idcg)
        out.update(
            {
                f"recall@{k}": np.mean(rec),
                f"ndcg@{k}": np.mean(nd),
                f"precision@{k}": np.mean(pr),
                f"hit@{k}": np.mean(hit),
            }
        )
    return out


def test_metrics_match_brute_force():
    rng = np.random.default_rng(5)
    U, I = 25, 40
    truth = sp.random(U, I, density=0.1, random_state=2, format="csr")
    truth.data[:] = 1
    users = np.nonzero(np.diff(truth.indptr))[0]
    top = np.stack([rng.permutation(I)[:20] for _ in users])
    top[0, 15:] = -1  # padding never counts
    m = metrics_from_topk(top, users, truth, [10, 20])
    ref = _brute_metrics(top, users, truth, [10, 20])
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    assert m["num_users"] == users.size
    with pytest.raises(ValueError, match="cut-off"):
        metrics_from_topk(top[:, :5], users, truth, [10])


def test_rank_metrics_excludes_and_copes_with_empty_users():
    # 4 users: 0 normal, 1 with test items but no training items, 2 with nothing, 3 train only
    U, I = 4, 6
    train = sp.csr_matrix((np.ones(3), ([0, 0, 3], [0, 1, 2])), shape=(U, I))
    test = sp.csr_matrix((np.ones(3), ([0, 1, 1], [2, 0, 5])), shape=(U, I))
    ue = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0.5, 0.5]])
    ie = torch.tensor([[3.0, 0], [2.5, 0], [2, 0], [1, 0], [0, 1], [0, 2]])
    m = rank_metrics(ue, ie, test, train, ks=[1, 2])
    assert m["num_users"] == 2
    # user 0: items 0, 1 excluded -> ranks 2 first: hit; user 1: ranks 5 first: hit
    assert m["recall@1"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["hit@1"] == 1.0
    empty = rank_metrics(ue, ie, sp.csr_matrix((U, I)), train, ks=[1])
    assert empty["num_users"] == 0 and empty["recall@1"] == 0.0
