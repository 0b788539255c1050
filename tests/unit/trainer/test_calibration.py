"""Reliability bins and the expected calibration error of the positive-class probability."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.calibration import calibration_figures, expected_calibration_error, reliability


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
