"""slifmr/curves.py: the learning curves a run writes as curves.png."""

import os

import pytest

from slifmr.curves import write_curves
from slifmr.data.prepare import prepare_data
from slifmr.train import Trainer
from tests.helpers import tiny_train_config


def test_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    cfg = tiny_train_config(epochs=6, eval_every=2)
    out = tmp_path / "run"
    t = Trainer(cfg, prepare_data(cfg), str(out), log=lambda s: None)
    t.fit()
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(str(png))
    assert img.shape[0] > 300 and img.shape[1] > 2 * img.shape[0]  # two panels side by side
    assert img[..., :3].std() > 0.05  # not blank
    # histories without validation, or with nothing at all, still draw
    assert write_curves([{"epoch": 1, "loss": 0.5}], str(tmp_path / "a.png"))
    assert write_curves([], str(tmp_path / "b.png"))
    assert not [f for f in os.listdir(out) if ".tmp" in f]
