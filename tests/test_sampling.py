"""slifmr/sampling.py: negatives are never seen items and uniform over the unseen ones."""

import numpy as np

from slifmr.sampling import NegativeSampler, sample_negatives


def test_negative_sampler_is_exact_and_uniform():
    rng = np.random.default_rng(0)
    U, I = 30, 12
    from slifmr.data import unique_pairs

    train = unique_pairs(np.stack([rng.integers(0, U, 250), rng.integers(0, I, 250)], 1), I)
    full_user = np.stack([np.full(I, U), np.arange(I)], 1)  # user U has seen every item
    train = np.concatenate([train, full_user])
    sampler = NegativeSampler(train, U + 1, I)
    batch = np.repeat(np.arange(U + 1), 400)
    neg = sampler(batch, np.random.default_rng(1))
    seen = set((train[:, 0] * I + train[:, 1]).tolist())
    assert neg.min() >= 0 and neg.max() < I
    assert not [1 for u, i in zip(batch, neg) if u < U and u * I + i in seen]
    for u in (0, 7, 19):  # uniform over the user's unseen items
        unseen = [i for i in range(I) if u * I + i not in seen]
        counts = np.bincount(neg[batch == u], minlength=I)[unseen]
        assert counts.sum() == 400 and counts.min() > 400 / len(unseen) * 0.4
    assert np.array_equal(sample_negatives(batch, train, U + 1, I, np.random.default_rng(1)), neg)
