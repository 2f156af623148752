"""The gradient noise scale against linear regression, where tr(Sigma) and |G|^2 are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import epochlab as el
from epochlab.diagnose.noise_scale import (
    GradientNoiseScale,
    batch_size_advice,
    estimate,
    noise_scale,
)

D, N, SIGMA = 5, 2000, 0.5


def _problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D))
    w_star = rng.standard_normal(D)
    y = x @ w_star + SIGMA * rng.standard_normal(N)
    w = w_star + 0.3 * rng.standard_normal(D)  # where the gradients are measured
    return x, y, w


def _exact(x, y, w):
    """|G|^2 and tr(Sigma) over the N rows: per-row gradients of (w.x - y)^2 are 2 (w.x - y) x."""
    g = 2 * (x @ w - y)[:, None] * x
    mean = g.mean(axis=0)
    return float(mean @ mean), float(((g - mean) ** 2).sum(axis=1).mean())


def _linear(w):
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(w)[None])
    return model


def test_estimators_recover_the_exact_noise_scale_of_linear_regression():
    x, y, w = _problem()
    g2_true, s_true = _exact(x, y, w)
    model = _linear(w)
    gns = GradientNoiseScale((x, y), small=10, parts=8, every=1)
    # SGD at a negligible rate: the weights stay where G and Sigma were computed.
    h = el.fit(model, (x, y), epochs=5, batch_size=50, optimizer="sgd", lr=1e-30, loss="mse",
               metrics=(), callbacks=[gns], verbose=0)
    assert np.allclose(model.weight.detach().numpy()[0], w)
    g2 = np.array([r["g2"] for r in gns.records])
    s = np.array([r["s"] for r in gns.records])
    assert len(g2) == 5 * 40
    # Unbiased: the means are within 4 standard errors of the exact values, and close.
    for est, true in ((g2, g2_true), (s, s_true)):
        se = est.std(ddof=1) / math.sqrt(len(est))
        assert abs(est.mean() - true) < 4 * se
        assert est.mean() == pytest.approx(true, rel=0.1)
    b, err = noise_scale(g2, s)
    assert abs(b - s_true / g2_true) < 4 * err
    # And per epoch in the History, with an error bar.
    col = h.history["gns"]
    assert len(col) == 5 and all(math.isfinite(v) for v in col)
    assert all(e > 0 for e in h.history["gns_err"])
    assert h.history["gns_measurements"] == [40] * 5
    assert h.history["gns_smoothed"][-1] == pytest.approx(s_true / g2_true, rel=0.3)


def test_population_formula_for_gaussian_inputs():
    # For x ~ N(0, I): |G|^2 = 4|d|^2 and tr(Sigma) = 4((D+1)|d|^2 + SIGMA^2 D), d = w - w*.
    rng = np.random.default_rng(1)
    n = 200_000
    x = rng.standard_normal((n, D))
    w_star = np.zeros(D)
    y = SIGMA * rng.standard_normal(n)
    w = w_star + 0.2
    g2, s = _exact(x, y, w)
    d2 = float(((w - w_star) ** 2).sum())
    assert g2 == pytest.approx(4 * d2, rel=0.05)
    assert s == pytest.approx(4 * ((D + 1) * d2 + SIGMA**2 * D), rel=0.05)


def test_measuring_does_not_change_training():
    d = el.data.synthetic(n_samples=200)
    runs = []
    for cbs in ([], [GradientNoiseScale(d.train, parts=4)]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                              nn.Linear(16, 1))
        h = el.fit(model, d.train, epochs=2, batch_size=16, callbacks=cbs, verbose=0)
        runs.append((h.iterations["loss"], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


def test_estimate_and_bad_parameters():
    assert estimate(9.0, 2.0, 8, 64) == (1.0, 64.0)
    with pytest.raises(el.ParameterError, match="parts"):
        GradientNoiseScale((np.zeros((4, 2)), np.zeros(4)), parts=1)
    with pytest.raises(el.ParameterError, match="noise"):
        batch_size_advice(-3.0, n_train=100, batch_size=10, epochs_reached=5)


def test_batch_size_advice_follows_the_papers_tradeoff():
    a = batch_size_advice(200.0, n_train=1000, batch_size=50, epochs_reached=5)
    rows = {r["batch_size"]: r for r in a["rows"]}
    assert rows[50]["epochs"] == pytest.approx(5)
    # E(B) = E_min (1 + B/noise): at B = noise, twice the minimum epochs.
    assert rows[256]["epochs"] / rows[16]["epochs"] == pytest.approx((1 + 256 / 200) / (1 + 16 / 200))
    assert a["e_min_epochs"] == pytest.approx(5 / 1.25)
    assert "batches beyond about 200 give diminishing returns" in a["text"]


def test_figure_with_advice_passes_the_report_figure_check():
    from epochlab.report.figures import check_figure
    from epochlab.report.noise_scale import plot_noise_scale

    d = el.data.synthetic(n_samples=200)
    h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=16, verbose=0,
               callbacks=[GradientNoiseScale(d.train, parts=4)])
    advice = batch_size_advice(50.0, n_train=h.n_train, batch_size=16, epochs_reached=2)
    check_figure(plot_noise_scale(h, advice))
