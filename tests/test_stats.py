"""Metric maths on hand-made predictions: intervals, McNemar, calibration, empty and tied cases."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medjson.core.scoring import compare, comparison_rows, plot_data, score
from medjson.core.stats import (
    BETTER,
    NO_CLEAR_DIFFERENCE,
    UNSETTLED,
    WORSE,
    brier_score,
    expected_calibration_error,
    mcnemar_exact,
    newcombe_paired_interval,
    paired_comparison,
    paired_loss_comparison,
    reliability_bins,
    student_t_quantile,
    student_t_two_sided_p,
    wilson_interval,
)


def test_wilson_interval_known_values():
    # Reference: 81/263 -> (0.2553, 0.3662); 0/10 -> (0, 0.2775); 10/10 -> (0.7225, 1).
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_holds_its_estimate_exactly_at_no_or_all_successes():
    # 0/50 once came out as (6.9e-18, 0.07): a lower bound above the estimate, a negative error bar.
    for n in range(1, 400):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0, n
        low, high = wilson_interval(n // 2, n)
        assert low <= (n // 2) / n <= high, n


def test_half_width_at_200_questions_matches_the_field_notes():
    low, high = wilson_interval(100, 200)
    assert (high - low) / 2 == pytest.approx(0.068, abs=0.005)


@pytest.mark.parametrize(
    "b, c, p",
    [(0, 0, 1.0), (5, 5, 1.0), (10, 0, 0.001953125), (7, 2, 0.1796875), (1, 0, 1.0)],
)
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p)
    assert mcnemar_exact(c, b) == pytest.approx(p)


def test_paired_comparison():
    new = [True] * 6 + [False] * 4
    old = [True] * 3 + [False] * 7
    result = paired_comparison(new, old)
    assert result.diff == pytest.approx(0.3)
    assert (result.new_only, result.old_only) == (3, 0)
    assert result.p == pytest.approx(0.25)
    assert result.ci_low < 0.3 < result.ci_high
    tied = paired_comparison([True, False], [False, True])
    assert tied.diff == 0 and tied.p == 1.0
    with pytest.raises(ValueError):
        paired_comparison([True], [True, False])


# Published worked examples of Newcombe's method 10, as (both, new only, old only, neither):
# Newcombe RG (1998), Statistics in Medicine 17:2635-2650, Table II, examples (a)-(d); and
# Fagerland MW, Lydersen S, Laake P (2014), "Recommended tests and confidence intervals for paired
# binomial proportions", Statistics in Medicine 33:2850-2875, the Cavo et al. (2012) example
# (-0.0621, 95% CI -0.1186 to -0.0046; also their book, Statistical Analysis of Contingency Tables, ch. 8).
@pytest.mark.parametrize(
    "table, interval",
    [
        ((36, 12, 2, 0), (0.0569, 0.3404)),
        ((18, 12, 2, 18), (0.0562, 0.3290)),
        ((53, 0, 0, 1), (-0.0729, 0.0729)),
        ((0, 30, 0, 0), (0.8395, 1.0)),
        ((59, 6, 16, 80), (-0.1186, -0.0046)),
    ],
)
def test_newcombe_interval_matches_published_examples(table, interval):
    assert newcombe_paired_interval(*table) == pytest.approx(interval, abs=1e-4)


def test_four_discordant_pairs_one_way_in_fifty_claim_no_gain():
    # The normal interval once said +0.080 [+0.004, +0.156] here while the exact test said p = 0.125.
    for both in range(47):
        new = [True] * both + [True] * 4 + [False] * (46 - both)
        old = [True] * both + [False] * 4 + [False] * (46 - both)
        gain = paired_comparison(new, old)
        assert gain.diff == pytest.approx(0.08) and gain.p == pytest.approx(0.125)
        assert gain.ci_low < 0 < gain.ci_high, both
        assert gain.verdict == NO_CLEAR_DIFFERENCE
        loss = paired_comparison(old, new)
        assert loss.ci_low < 0 < loss.ci_high and loss.verdict == NO_CLEAR_DIFFERENCE


def test_no_discordant_pairs_is_never_a_zero_width_interval():
    # The normal interval said +0.000 [+0.000, +0.000] on 8 questions, as if certain.
    for right in range(9):
        result = paired_comparison([True] * right + [False] * (8 - right), [True] * right + [False] * (8 - right))
        assert result.ci_low < 0 < result.ci_high and result.ci_high - result.ci_low > 0.2, right
    assert newcombe_paired_interval(0, 0, 0, 0) == (-1.0, 1.0)


def test_interval_holds_its_estimate_and_excludes_zero_only_on_its_side():
    for n in (5, 12, 40):
        for new_only in range(n + 1):
            for old_only in range(n - new_only + 1):
                for both in range(0, n - new_only - old_only + 1, 3):
                    neither = n - new_only - old_only - both
                    low, high = newcombe_paired_interval(both, new_only, old_only, neither)
                    diff = (new_only - old_only) / n
                    assert -1 <= low <= diff <= high <= 1 and high > low
                    if low > 0:
                        assert new_only > old_only
                    if high < 0:
                        assert old_only > new_only


def test_verdict_needs_the_interval_and_the_exact_test():
    ten = [True] * 10
    assert paired_comparison(ten + [True] * 20, ten + [False] * 20).verdict == BETTER
    assert paired_comparison(ten + [False] * 20, ten + [True] * 20).verdict == WORSE
    # Five discordant pairs one way in 20: the score interval excludes zero, the exact test (p = 0.0625) does not.
    disputed = paired_comparison([True] * 5 + [False] * 15, [False] * 20)
    assert disputed.ci_low > 0 and disputed.p == pytest.approx(0.0625)
    assert disputed.verdict == UNSETTLED


def test_calibration_maths():
    confidences = [0.95, 0.95, 0.55, 0.55, 0.0]
    correct = [True, False, True, True, False]
    bins = reliability_bins(confidences, correct)
    assert bins[0]["count"] == 1 and bins[9]["count"] == 2 and bins[5]["count"] == 2
    # |0.95-0.5|*2/5 + |0.55-1|*2/5 + |0-0|*1/5
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.36)
    assert brier_score([1.0, 0.0], [True, True]) == pytest.approx(0.5)
    assert expected_calibration_error([], []) == 0.0 and brier_score([], []) == 0.0


def _prediction(qid, gold, predicted, confidence=0.9, subject="Anatomy", letter_probability=None):
    valid = predicted is not None
    return {
        "letter_probability": letter_probability if valid else None,
        "id": qid,
        "subject": subject,
        "gold": gold,
        "predicted": predicted,
        "confidence": confidence if valid else None,
        "valid_json": valid,
        "schema_valid": valid,
        "correct": valid and predicted == gold,
        "lenient_only": False,
        "lenient_correct": False,
    }


def test_score_on_hand_made_predictions():
    predictions = [
        _prediction("1", "A", "A"),
        _prediction("2", "A", "B"),
        _prediction("3", "B", "B"),
        _prediction("4", "C", None),
    ]
    metrics = score(predictions)
    assert metrics["n"] == 4
    assert metrics["accuracy"] == 0.5
    assert metrics["valid_json_rate"] == 0.75 and metrics["schema_pass_rate"] == 0.75
    assert metrics["accuracy_on_schema"] == pytest.approx(2 / 3)
    assert metrics["majority_baseline"] == 0.5
    assert metrics["predicted_share_invalid"] == 0.25 and metrics["predicted_share_B"] == 0.5
    assert metrics["calibration_n"] == 3


def test_score_reports_both_confidences_side_by_side():
    # Stated confidence is a constant 0.9 (no information); the letter probability ranks right above wrong.
    predictions = [
        _prediction("1", "A", "A", letter_probability=0.9),
        _prediction("2", "A", "B", letter_probability=0.3),
        _prediction("3", "B", "B", letter_probability=0.7),
        _prediction("4", "C", None),
    ]
    metrics = score(predictions)
    assert metrics["auroc_stated"] == 0.5 and metrics["auroc_letter"] == 1.0
    assert metrics["letter_calibration_n"] == 3
    assert metrics["letter_brier"] == pytest.approx((0.1**2 + 0.3**2 + 0.3**2) / 3)
    # Letter: kept in order 0.9 (right), 0.7 (right), 0.3 (wrong), invalid (wrong).
    assert metrics["aurc_letter"] == pytest.approx(0.25 * (0 + 0 + 1 / 3 + 1 / 2))
    assert metrics["accuracy_at_50_coverage_letter"] == 1.0 and metrics["accuracy_at_50_coverage_stated"] == 2 / 3
    data = plot_data(predictions)
    assert [p["coverage"] for p in data["risk_coverage_letter"]] == [0.25, 0.5, 0.75, 1.0]


def test_score_all_invalid_and_empty():
    metrics = score([_prediction(str(i), "A", None) for i in range(5)])
    assert metrics["accuracy"] == 0 and metrics["accuracy_on_schema"] == 0 and metrics["calibration_n"] == 0
    assert metrics["predicted_share_invalid"] == 1.0
    empty = score([])
    assert empty["n"] == 0 and empty["accuracy_ci_low"] == 0.0 and empty["accuracy_ci_high"] == 1.0


def test_plot_data_has_an_invalid_label_and_subjects():
    predictions = [_prediction("1", "A", "A", subject="X"), _prediction("2", "B", None, subject="Y")]
    data = plot_data(predictions)
    assert {"gold": "B", "predicted": "invalid"} in data["confusion"]
    assert [s["subject"] for s in data["subjects"]] == ["X", "Y"]
    assert data["reliability"] == [
        {"bin": 8, "bin_low": 0.8, "bin_high": 0.9, "count": 1, "confidence": 0.9, "accuracy": 1.0}
    ]


def test_compare_refuses_different_questions():
    from medjson.errors import StageError

    same = [_prediction("1", "A", "A")]
    models = ("base", "sft", "grpo", "sft_constrained", "grpo_constrained")
    with pytest.raises(StageError, match="different questions"):
        compare({**{name: same for name in models}, "grpo": [_prediction("2", "A", "A")]})
    result = compare({name: same for name in models})
    assert set(result) == {
        "sft_vs_base",
        "grpo_vs_sft",
        "grpo_vs_base",
        "sft_constrained_vs_sft",
        "grpo_constrained_vs_grpo",
    }


def test_majority_accuracy():
    from medjson.core.stats import majority_accuracy

    assert majority_accuracy(list("AABCA")) == pytest.approx(0.6)
    assert majority_accuracy(list("ABAB")) == 0.5  # a tie still scores the tied share
    assert majority_accuracy([]) == 0.0


def test_model_output_with_a_lone_surrogate_is_written_and_scored(tmp_path):
    import json

    from medjson.core.parsing import Answer
    from medjson.core.records import read_jsonl, write_jsonl
    from medjson.core.scoring import prediction_record

    output = '{"predicted_category": "B", "confidence": 0.7, "reason": "\\ud83d cut"}'
    question = {"id": "q1", "subject": "Anatomy", "answer": "B"}
    record = prediction_record(question, Answer.read(json.loads(json.dumps(output)), 12, None))
    record["raw_output"] += "\ud83d"  # as decoded text can also carry it
    assert write_jsonl(tmp_path / "p.jsonl", [record]) == 1
    (back,) = read_jsonl(tmp_path / "p.jsonl")
    assert back["correct"] is True and back["reason"] == "\ud83d cut"
    assert score([back])["accuracy"] == 1.0


@pytest.mark.parametrize(
    "scores, correct, expected",
    [
        ([0.9, 0.8, 0.3, 0.1], [True, True, False, False], 1.0),  # perfect separation
        ([0.9, 0.8, 0.3, 0.1], [False, False, True, True], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),  # all tied: chance
        ([0.9, 0.5, 0.5, 0.1], [True, True, False, False], 0.875),  # one tie across classes counts half: 3.5/4
        ([0.9, 0.8], [True, True], None),  # all right: one class, undefined
        ([0.9, 0.8], [False, False], None),  # all wrong
    ],
)
def test_auroc_by_hand(scores, correct, expected):
    from medjson.core.stats import auroc

    assert auroc(scores, correct) == (None if expected is None else pytest.approx(expected))


def test_risk_coverage_aurc_and_accuracy_at_coverage_by_hand():
    from medjson.core.stats import accuracy_at_coverage, aurc, risk_coverage

    confidences, correct = [0.9, 0.8, 0.8, 0.2], [True, False, True, False]
    assert risk_coverage(confidences, correct) == [
        {"threshold": 0.9, "coverage": 0.25, "accuracy": 1.0},
        {"threshold": 0.8, "coverage": 0.75, "accuracy": 2 / 3},  # the tie at 0.8 is kept together
        {"threshold": 0.2, "coverage": 1.0, "accuracy": 0.5},
    ]
    # Risk 0 over the first quarter, 1/3 over the next half, 1/2 over the last quarter.
    assert aurc(confidences, correct) == pytest.approx(0.5 / 3 + 0.125)
    assert accuracy_at_coverage(confidences, correct, 0.5) == pytest.approx(2 / 3)
    assert accuracy_at_coverage(confidences, correct, 0.8) == pytest.approx(0.5)
    assert aurc([0.7] * 3, [True] * 3) == 0.0 and aurc([0.7] * 3, [False] * 3) == 1.0  # all right, all wrong
    assert aurc([], []) is None and accuracy_at_coverage([], [], 0.5) is None


# Student's t, checked against the printed table (two-sided critical values; e.g. Fisher & Yates,
# Statistical Tables, Table III): df 1, 9, 30 at 0.05, and df 5 at 0.10, 0.05 and 0.01.
@pytest.mark.parametrize(
    "df, two_sided, critical",
    [(1, 0.05, 12.706), (9, 0.05, 2.262), (30, 0.05, 2.042), (5, 0.10, 2.015), (5, 0.05, 2.571), (5, 0.01, 4.032)],
)
def test_student_t_matches_the_printed_table(df, two_sided, critical):
    assert student_t_quantile(1 - two_sided / 2, df) == pytest.approx(critical, abs=5e-4)
    assert student_t_two_sided_p(critical, df) == pytest.approx(two_sided, rel=2e-3)


def test_paired_loss_comparison_matches_students_sleep_data():
    # Cushny & Peebles' hours of extra sleep under two drugs, the paired example of Student (1908),
    # "The probable error of a mean", Biometrika 6:1-25; R's t.test(extra ~ group, data = sleep,
    # paired = TRUE) gives t = 4.0621, df = 9, p = 0.002833, 95% CI [0.7001, 2.4599], mean 1.58.
    first = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    second = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = paired_loss_comparison(second, first)
    assert result.diff == pytest.approx(1.58) and result.t == pytest.approx(4.0621, abs=1e-4)
    assert result.p == pytest.approx(0.002833, abs=1e-6)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.7001, 2.4599), abs=1e-4)
    assert result.verdict == WORSE  # a higher loss
    assert paired_loss_comparison(first, second).verdict == BETTER


def test_paired_loss_comparison_without_evidence_claims_nothing():
    same = [0.3, 0.5, 0.1]
    assert paired_loss_comparison(same, same).verdict == NO_CLEAR_DIFFERENCE
    noisy = paired_loss_comparison([0.2, 0.8, 0.2, 0.8], [0.8, 0.2, 0.8, 0.2])
    assert noisy.diff == 0 and noisy.p == pytest.approx(1.0) and noisy.verdict == NO_CLEAR_DIFFERENCE
    one = paired_loss_comparison([0.1], [0.9])  # one question: no interval to speak of
    assert one.verdict == NO_CLEAR_DIFFERENCE and (one.ci_low, one.ci_high) == (-1.0, 1.0)
    # Every comparison is written as JSON, which holds no infinity.
    for result in (one, paired_loss_comparison(same, same), paired_loss_comparison([0.5, 0.5], [0.25, 0.25])):
        json.dumps(dataclasses.asdict(result), allow_nan=False)


def test_compare_covers_every_measure_and_its_brier_is_the_scores_difference():
    gold = "AABBCCDD"
    old = [_prediction(str(i), g, "A", confidence=0.9) for i, g in enumerate(gold)]
    new = [_prediction(str(i), g, g if i % 2 else None, confidence=0.6) for i, g in enumerate(gold)]
    result = compare({"sft": old, "grpo": new}, (("grpo", "sft"),))["grpo_vs_sft"]
    assert set(result) == {"n", "accuracy", "valid_json", "schema_pass", "brier_stated"}
    assert result["valid_json"]["diff"] == -0.5 and result["valid_json"]["old_only"] == 4
    assert result["accuracy"]["diff"] == pytest.approx(score(new)["accuracy"] - score(old)["accuracy"])
    brier = score(new)["brier_stated_all"] - score(old)["brier_stated_all"]
    assert result["brier_stated"]["diff"] == pytest.approx(brier)
    # Four invalid answers score 1 each, four right ones 0.16: (4 + 0.64) / 8 against the old's.
    assert score(new)["brier_stated_all"] == pytest.approx((4 + 4 * 0.16) / 8)
    rows = comparison_rows({"grpo_vs_sft": result})
    assert [r["measure"] for r in rows] == ["accuracy", "valid JSON", "schema pass", "Brier (stated)"]
