"""The LR range test's suggestion on real curves, and the class-weighted loss option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skyclass.model import build_model, set_trainable
from skyclass.train import loop
from skyclass.train.config import ConfigError, TrainConfig
from skyclass.train.lr_find import suggest

# The smoothed curve the flagship's third stage (blocks 8-18) recorded on its first run: the model
# already fit its data, the loss was ~0.04 and noise; its minimum fell at the third rate (4.3e-6).
FLAT_LRS = np.geomspace(1e-6, 1.27e-2, 14)
FLAT_LOSS = np.array(
    [
        0.059,
        0.042,
        0.039,
        0.064,
        0.077,
        0.103,
        0.087,
        0.077,
        0.084,
        0.085,
        0.100,
        0.105,
        0.147,
        0.48,
    ]
)


def test_flat_curve_takes_the_steepest_rate_not_a_tenth_of_its_noisy_minimum() -> None:
    chosen, min_lr, steepest = suggest(FLAT_LRS, FLAT_LOSS, "min10")
    assert min_lr == pytest.approx(FLAT_LRS[2])
    assert chosen == steepest
    assert chosen > min_lr  # the old rule's min/10 = 4e-7 trained nothing


def test_a_descending_curve_keeps_min_over_ten() -> None:
    lrs = np.geomspace(1e-6, 1.0, 30)
    loss = 1.4 - 1.2 / (1 + np.exp(-(np.log10(lrs) + 3.5) * 3))  # falls around 3e-4
    loss[-4:] = [0.5, 0.9, 1.6, 3.0]  # then diverges
    chosen, min_lr, _ = suggest(lrs, loss, "min10")
    assert chosen == pytest.approx(min_lr / 10)
    assert 1e-3 < min_lr < 0.5


def _head_only_model() -> torch.nn.Module:
    """A 2-class MobileNetV2 (seeded, no pretrained weights) with every feature block frozen."""
    torch.manual_seed(0)
    model = build_model(2, weights=None, dropout=0.0)
    set_trainable(model, [])
    return model


def test_class_weights_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="class_weights"):
        TrainConfig(name="x", data_root=".", train="a.csv", val="b.csv", class_weights="auto")


def test_weighted_loss_counts_a_small_class_more() -> None:
    model = _head_only_model()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    grads = []
    for weights in (None, torch.tensor([0.5, 1.5])):
        model.zero_grad()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        loop.train_one_epoch(model, [(x, y)], opt, None, class_weights=weights, progress=False)
        grads.append(model.classifier[1].bias.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_label_smoothing_is_checked_and_changes_the_loss() -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(name="x", data_root=".", train="a.csv", val="b.csv", label_smoothing=1.0)
    model = _head_only_model()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    plain = loop.train_one_epoch(model, [(x, y)], opt, None, progress=False).loss
    smooth = loop.train_one_epoch(model, [(x, y)], opt, None, label_smoothing=0.5, progress=False)
    with torch.no_grad():
        model.eval()
        logp = model(x)
    expected = 0.5 * plain - 0.5 * float(logp.mean())
    assert smooth.loss == pytest.approx(expected, rel=1e-4)


def test_mixup_is_checked_and_trains_on_the_blend_of_two_targets() -> None:
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TrainConfig(name="x", data_root=".", train="a.csv", val="b.csv", mixup_alpha=-0.1)
    model = _head_only_model()
    # Cached-prefix inputs at the last block (manifold mixup there): pooled, then the head.
    x = torch.randn(4, 1280, 2, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def epoch(**kw):
        return loop.train_one_epoch(
            model, [(x, y)], opt, None, start_block=19, progress=False, **kw
        )

    torch.manual_seed(2)
    mixed = epoch(mixup_alpha=0.4)
    torch.manual_seed(2)  # the same draws: lam, then the permutation
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(4)
    with torch.no_grad():
        model.eval()
        logp = model.classifier((lam * x + (1 - lam) * x[perm]).mean(dim=(2, 3)))
    nll = torch.nn.functional.nll_loss
    expected = lam * nll(logp, y) + (1 - lam) * nll(logp, y[perm])
    assert 0.2 < lam < 0.8 and not torch.equal(perm, torch.arange(4))
    assert mixed.loss == pytest.approx(float(expected), rel=1e-4)
    assert abs(epoch().loss - mixed.loss) > 0.01  # without mixup the loss is another number
