"""The synthetic datasets of the model tests (small enough for dense references)."""

import pytest

from slifmr.data import make_synthetic


@pytest.fixture(scope="module")
def ds():
    """Users, items, two modalities and a two-relation KG: every view of SLIF-MR."""
    return make_synthetic(
        40,
        30,
        num_clusters=3,
        mean_interactions=6,
        min_interactions=2,
        modalities={"image": 6, "text": 5},
        kg_relations=2,
        seed=3,
    )


@pytest.fixture(scope="module")
def peer_ds():
    """Two modalities and no KG, as FREEDOM and LATTICE use them."""
    return make_synthetic(
        30,
        26,
        num_clusters=3,
        mean_interactions=6,
        min_interactions=2,
        modalities={"image": 6, "text": 5},
        kg_relations=0,
        seed=5,
    )
