"""slifmr/losses.py: BPR, InfoNCE and the L2 penalty against their definitions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slifmr.losses import bpr_loss, info_nce, l2_reg


def test_losses():
    pos = torch.tensor([2.0, 0.0, -1.0])
    neg = torch.tensor([1.0, 0.0, 1.0])
    expect = -np.mean([math.log(1 / (1 + math.exp(-d))) for d in (1.0, 0.0, -2.0)])
    assert abs(float(bpr_loss(pos, neg)) - expect) < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        bpr_loss(pos, neg[:2])
    a = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    aligned = info_nce(a, a * 3.0, 0.2)
    shuffled = info_nce(a, a[torch.randperm(16, generator=torch.Generator().manual_seed(1))], 0.2)
    assert aligned < shuffled
    logits = F.normalize(a, dim=1) @ F.normalize(a, dim=1).t() / 0.2
    ref = F.cross_entropy(logits, torch.arange(16))
    torch.testing.assert_close(aligned, ref)
    assert float(info_nce(a[:0], a[:0])) == 0.0
    x, y = torch.ones(4, 2), torch.ones(4, 3)
    assert float(l2_reg(x, y)) == pytest.approx(0.5 * (8 + 12) / 4)
