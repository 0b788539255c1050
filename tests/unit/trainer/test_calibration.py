"""Reliability bins and the expected calibration error of the positive-class probability."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.calibration import (
    TEMPERATURE_RANGE,
    calibration_figures,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    tempered,
)
from trainer.model import HeadConfig, build_head, temper_head


def test_a_calibrated_model_has_no_gap() -> None:
    # In each bin, the share of positives equals the probability given.
    p = np.repeat([0.05, 0.25, 0.75, 0.95], 20)
    y = np.concatenate([np.arange(20) < k for k in (1, 5, 15, 19)])
    assert expected_calibration_error(p, y) == pytest.approx(0.0)


def test_an_overconfident_model_has_the_gap_it_shows() -> None:
    # Says 0.95 for everything; right half the time.
    p = np.full(40, 0.95)
    y = np.arange(40) % 2 == 0
    assert expected_calibration_error(p, y) == pytest.approx(0.45)
    table = reliability(p, y)
    assert [b.n for b in table] == [0] * 9 + [40]
    assert table[-1].mean_probability == pytest.approx(0.95)
    assert table[-1].observed_rate == pytest.approx(0.5)
    assert table[0].mean_probability is None


def test_probability_one_falls_in_the_last_bin_and_empty_input_has_no_ece() -> None:
    assert reliability([1.0, 0.0], [True, False])[-1].n == 1
    assert reliability([1.0, 0.0], [True, False])[0].n == 1
    assert expected_calibration_error([], []) is None


def test_the_figures_of_a_scored_split_use_the_positive_column() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    figures = calibration_figures(probabilities, np.array([0, 1, 0]), positive_index=1)
    assert figures["ece"] == pytest.approx((0.1 + abs(0.8 - 1) + 0.7) / 3)
    assert len(figures["bins"]) == 10  # type: ignore[arg-type]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("squeeze", [0.4, 2.5])
def test_the_fitted_temperature_undoes_a_known_squeeze(squeeze: float) -> None:
    # Labels drawn from calibrated probabilities; the model reports logits / squeeze.
    rng = np.random.default_rng(3)
    margin = rng.normal(0.0, 3.0, 4000)
    truth = (rng.random(4000) < 1 / (1 + np.exp(-margin))).astype(np.int64)
    logits = np.stack([np.zeros_like(margin), margin], axis=1)
    reported = _softmax(logits / squeeze)
    temperature = fit_temperature(reported, truth)
    assert temperature == pytest.approx(1 / squeeze, rel=0.1)
    before = expected_calibration_error(reported[:, 1], truth == 1)
    after = expected_calibration_error(tempered(reported, temperature)[:, 1], truth == 1)
    assert before is not None
    assert after is not None
    assert after < before / 2
    assert negative_log_likelihood(reported, truth, temperature) < negative_log_likelihood(
        reported, truth, 1.0
    )


def test_tempering_keeps_the_ranking_and_one_is_no_change() -> None:
    p = _softmax(np.random.default_rng(0).normal(0, 2, (50, 2)))
    np.testing.assert_allclose(tempered(p, 1.0), p, atol=1e-6)
    order = np.argsort(p[:, 1])
    assert (np.diff(tempered(p, 0.3)[order, 1]) >= -1e-7).all()


def test_a_separable_folder_cannot_drive_the_temperature_to_zero() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    truth = np.array([0, 1, 0, 1])
    assert fit_temperature(p, truth) == pytest.approx(TEMPERATURE_RANGE[0], rel=0.05)


def test_the_tempered_head_gives_the_tempered_probabilities() -> None:
    head = build_head((2, 2, 3), 2, HeadConfig(dropout=0.0), seed=1)
    features = np.random.default_rng(1).normal(0, 3, (16, 2, 2, 3)).astype(np.float32)
    before = np.asarray(head.predict(features, verbose=0))
    temper_head(head, 0.25)
    np.testing.assert_allclose(head.predict(features, verbose=0), tempered(before, 0.25), atol=1e-5)
