"""The abstention threshold, the letter-probability temperature and the choice of confidence, on hand-made cases."""

from __future__ import annotations

import json
import math

import pytest

from medjson.core.abstention import (
    Abstention,
    fit_abstention,
    fit_temperature,
    fit_threshold,
    letter_nll,
    scale_letter_probs,
)
from medjson.core.scoring import abstention_metrics
from medjson.errors import DataError
from medjson.params import CalibrateParams


def test_threshold_is_the_lowest_that_reaches_the_target():
    confidences = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, False, True, False]
    # kept accuracy going down the list: 1, 1, 2/3, 3/4, 3/5
    threshold = fit_threshold(confidences, correct, target=0.75, min_kept=1)
    assert threshold.value == 0.6 and threshold.kept == 4
    assert threshold.coverage == pytest.approx(0.8) and threshold.accuracy == pytest.approx(0.75)


def test_threshold_keeps_equal_confidences_together_and_never_keeps_an_answer_without_one():
    confidences = [0.9, 0.8, 0.8, 0.8, None, None]
    correct = [True, True, False, False, True, True]
    # 0.8 would keep all three 0.8s (accuracy 2/4), never only the right one
    assert fit_threshold(confidences, correct, target=0.6, min_kept=1).value == 0.9
    everything = fit_threshold(confidences, correct, target=0.5, min_kept=1)
    assert everything.value == 0.8 and everything.coverage == pytest.approx(4 / 6)


def test_threshold_needs_min_kept_answers_and_is_none_when_unreachable():
    confidences, correct = [0.9, 0.8, 0.7], [True, False, False]
    assert fit_threshold(confidences, correct, target=0.9, min_kept=2).value is None
    assert fit_threshold(confidences, correct, target=0.95, min_kept=1).value == 0.9
    unreachable = fit_threshold([0.9, 0.8], [False, False], target=0.1, min_kept=1)
    assert unreachable.value is None and unreachable.coverage == 0.0 and unreachable.accuracy is None
    all_right = fit_threshold([0.3, 0.2, None], [True, True, False], target=1.0, min_kept=1)
    assert all_right.value == 0.2 and all_right.coverage == pytest.approx(2 / 3)


def test_temperature_scaling_keeps_the_letter_order_and_sums_to_one():
    probs = [0.1, 0.6, 0.2, 0.1]
    for temperature in (0.3, 1.0, 4.0):
        scaled = scale_letter_probs(probs, temperature)
        assert sum(scaled) == pytest.approx(1.0) and max(range(4), key=scaled.__getitem__) == 1
    assert scale_letter_probs(probs, 1.0) == pytest.approx(probs)
    assert scale_letter_probs(probs, 4.0)[1] < 0.6 < scale_letter_probs(probs, 0.3)[1]


def test_fitted_temperature_cools_an_overconfident_model_and_warms_an_underconfident_one():
    # Says 0.97 for its letter, right half the time: needs T > 1.
    over = [[0.97, 0.01, 0.01, 0.01]] * 20
    half_right = [0] * 10 + [1] * 10
    hot = fit_temperature(over, half_right)
    assert hot > 1.5 and letter_nll(over, half_right, hot) < letter_nll(over, half_right, 1.0)
    # Says 0.4 for its letter, always right: needs T < 1.
    under = [[0.4, 0.2, 0.2, 0.2]] * 20
    cold = fit_temperature(under, [0] * 20)
    assert cold < 0.5
    assert fit_temperature([], []) == 1.0


def _prediction(i: int, stated: float, letter_probs: list[float] | None, gold: str = "A") -> dict:
    predicted = "ABCD"[max(range(4), key=letter_probs.__getitem__)] if letter_probs else None
    return {
        "id": f"q{i}",
        "gold": gold,
        "predicted": predicted,
        "confidence": stated if letter_probs else None,
        "schema_valid": letter_probs is not None,
        "correct": predicted == gold,
        "letter_probs": letter_probs,
        "letter_probability": max(letter_probs) if letter_probs else None,
    }


def _settings(**changes) -> CalibrateParams:
    return CalibrateParams(
        **{"target_accuracy": 0.9, "confidence": "auto", "fit_temperature": True, "min_kept": 1, **changes}
    )


def _calibration_answers() -> list[dict]:
    """Stated 0.85 on every answer (no information); the letter probability high when right."""
    right = [_prediction(i, 0.85, [0.8, 0.1, 0.05, 0.05]) for i in range(6)]
    wrong = [_prediction(10 + i, 0.85, [0.2, 0.5, 0.2, 0.1]) for i in range(6)]
    invalid = [_prediction(20, 0.0, None)]
    return right + wrong + invalid


def test_auto_picks_the_better_calibrated_confidence_and_fits_only_the_given_questions():
    answers = _calibration_answers()
    fitted = fit_abstention(answers, _settings(), "org/model", None, "abc123", "constrained")
    assert fitted.confidence == "letter"
    assert fitted.calibration_ece["letter"] < fitted.calibration_ece["stated"]
    assert fitted.threshold is not None and fitted.calibration_accuracy == 1.0
    assert fitted.calibration_coverage == pytest.approx(6 / 13)
    assert fitted.fitted_on == [a["id"] for a in answers]
    stated = fit_abstention(answers, _settings(confidence="stated"), "org/model", None, "abc123", "constrained")
    assert stated.confidence == "stated" and stated.threshold is None  # all 12 answers tie, accuracy 0.5
    stated = fit_abstention(
        answers, _settings(confidence="stated", target_accuracy=0.5), "org/model", None, None, "free"
    )
    assert stated.threshold == 0.85 and stated.calibration_coverage == pytest.approx(12 / 13)
    assert stated.temperature == fitted.temperature  # the temperature is fitted either way
    no_temperature = fit_abstention(answers, _settings(fit_temperature=False), "org/model", None, None, "free")
    assert no_temperature.temperature == 1.0


def test_abstention_metrics_report_the_out_of_sample_coverage_and_accuracy():
    fitted = fit_abstention(_calibration_answers(), _settings(), "org/model", None, None, "free")
    evaluation = [_prediction(100 + i, 0.85, [0.9, 0.05, 0.03, 0.02], gold="AB"[i % 2]) for i in range(4)]
    evaluation += [_prediction(200, 0.85, [0.3, 0.4, 0.2, 0.1])] + [_prediction(201, 0.0, None)]
    metrics = abstention_metrics(evaluation, fitted)
    assert [p["abstained"] for p in evaluation] == [False] * 4 + [True, True]
    assert metrics["abstain_coverage"] == pytest.approx(4 / 6) and metrics["abstain_accuracy"] == 0.5
    assert metrics["abstain_calibration_accuracy"] == 1.0 and metrics["abstain_letter_confidence"] == 1
    assert 0 <= metrics["abstain_accuracy_ci_low"] < 0.5 < metrics["abstain_accuracy_ci_high"] <= 1


def test_an_abstention_file_round_trips_and_refuses_questions_it_was_fitted_on(tmp_path):
    fitted = fit_abstention(_calibration_answers(), _settings(), "org/model", None, None, "constrained")
    path = tmp_path / "abstention.json"
    fitted.write(path)
    again = Abstention.read(path)
    assert again == fitted
    with pytest.raises(DataError, match="fitted on 1 of these questions.*'q3'"):
        again.check_unseen(["new-1", "q3"])
    again.check_unseen(["new-1", "new-2"])
    with pytest.raises(DataError, match="fitted for org/model \\(constrained decoding\\), not for org/model \\(free"):
        again.check_fits("org/model", None, "free")
    with pytest.raises(DataError, match="not for models/other"):
        again.check_fits("models/other", "0" * 64, "constrained")
    again.check_fits("org/model", None, "constrained")


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "cannot be read"), (json.dumps({"model": "m"}), "lacks \\['calibration_accuracy'"), ("[]", "lacks")],
)
def test_a_broken_abstention_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "abstention.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        Abstention.read(path)


def test_letter_confidence_is_the_scaled_probability_of_the_written_letter():
    fitted = fit_abstention(_calibration_answers(), _settings(), "org/model", None, None, "free")
    probs = [0.1, 0.6, 0.2, 0.1]
    assert fitted.confidence_of(0.85, probs, "B") == pytest.approx(scale_letter_probs(probs, fitted.temperature)[1])
    assert fitted.confidence_of(0.85, None, None) is None
    assert math.isfinite(fitted.temperature)
