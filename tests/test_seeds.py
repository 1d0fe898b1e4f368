"""Across seeds: each seed's difference and their mean with an interval over seeds and questions, the
verdicts the seeds agree on, and the rule that chooses between settings. The command itself, on real
DVC experiments of the tiny pipeline, is tested in test_pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medjson.commands.seeds.report import MIN_SEEDS_TO_CHOOSE, choose
from medjson.commands.seeds.runs import Run, check_seed_group, flatten, stale_stages
from medjson.commands.seeds.stats import (
    LARGEST_LETTER_SHARE,
    across_seeds,
    agreement,
    interval_verdict,
    largest_letter_share,
    setting_difference,
)
from medjson.errors import StageError


def test_across_seeds_gives_each_seeds_difference_their_mean_and_an_interval_around_it():
    new = np.array([[1, 1, 1, 0, 1, 1, 0, 1], [1, 0, 1, 0, 1, 1, 0, 1]], dtype=float)
    old = np.array([[0, 1, 0, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 0, 0, 1]], dtype=float)
    result = across_seeds(new, old, "accuracy")
    assert result.per_seed == pytest.approx([3 / 8, 2 / 8])
    assert result.mean == pytest.approx(5 / 16)
    assert result.ci_low <= result.mean <= result.ci_high and result.ci_low > -0.2 and result.se > 0
    same = across_seeds(old[0], old[0], "accuracy")  # one seed, no difference: nothing to draw but zero
    assert (same.per_seed, same.ci_low, same.ci_high) == ([0.0], 0.0, 0.0)


def test_the_interval_widens_when_seeds_disagree_though_the_mean_is_the_same():
    questions = 200
    agreeing = np.tile(np.r_[np.ones(questions // 4), np.zeros(3 * questions // 4)], (3, 1))
    split = np.stack([np.r_[np.ones(k), np.zeros(questions - k)] for k in (0, 50, 100)])
    old = np.zeros((3, questions))
    narrow, wide = across_seeds(agreeing, old, "accuracy"), across_seeds(split, old, "accuracy")
    assert narrow.mean == pytest.approx(wide.mean) == pytest.approx(0.25)
    assert wide.ci_high - wide.ci_low > 2 * (narrow.ci_high - narrow.ci_low)


def test_the_largest_letter_share_counts_answers_without_a_letter_in_the_total_only():
    assert largest_letter_share(np.array([0, 0, 1, -1])) == pytest.approx(0.5)
    collapsed, spread = np.array([[1] * 8]), np.array([[0, 1, 2, 3] * 2])
    result = across_seeds(spread, collapsed, LARGEST_LETTER_SHARE)
    assert result.per_seed == pytest.approx([0.25 - 1.0])
    assert interval_verdict(result.ci_low, result.ci_high, None) == "lower"


@pytest.mark.parametrize(
    "low, high, lower_is_better, verdict",
    [
        (0.01, 0.2, False, "better"),
        (-0.2, -0.01, False, "worse"),
        (-0.2, -0.01, True, "better"),
        (-0.1, 0.1, True, "no clear difference"),
        (0.0, 0.1, False, "no clear difference"),
        (0.05, 0.1, None, "higher"),
    ],
)
def test_an_interval_that_excludes_zero_gives_the_verdict(low, high, lower_is_better, verdict):
    assert interval_verdict(low, high, lower_is_better) == verdict


def test_agreement_is_the_most_common_verdict_and_its_count():
    assert agreement(["better", "no clear difference", "better"]) == ("better", 2)
    assert agreement(["worse", "better"]) == ("worse", 1)  # a tie: the first seed's


def test_a_setting_difference_separates_a_real_gap_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, size=(3, 100))
    clear = setting_difference(base + 0.3, base)
    assert clear.mean == pytest.approx(0.3) and clear.ci_low > 0 and clear.se > 0
    noise = setting_difference(base[[1, 2, 0]], base)
    assert noise.ci_low < 0 < noise.ci_high


def test_a_seed_group_may_differ_in_its_seeds_only():
    params = [
        {"seed": 42, "grpo.seed": None, "grpo.trainer.beta": 0.2},
        {"seed": 42, "grpo.seed": 7, "grpo.trainer.beta": 0.2},
    ]
    check_seed_group("kl", ["HEAD", "s7"], params)
    with pytest.raises(
        StageError, match=r"run s7 differs from HEAD in more than its seed: grpo.trainer.beta \(0.2 in HEAD, 0.1\)"
    ):
        check_seed_group("kl", ["HEAD", "s7"], [params[0], {**params[1], "grpo.trainer.beta": 0.1}])
    with pytest.raises(StageError, match=r"seed 42 is run twice \(HEAD, s42\)"):
        check_seed_group("kl", ["HEAD", "s42"], [params[0], {**params[1], "grpo.seed": 42}])


def test_a_stage_run_with_other_params_or_on_an_input_changed_since_is_stale():
    lock = {
        "stages": {
            "grpo": {"params": {"params.yaml": {"grpo": {"seed": 1}}}, "outs": [{"path": "models/a", "md5": "x"}]},
            "merge@grpo": {"deps": [{"path": "models/a", "md5": "old"}], "outs": [{"path": "models/m", "md5": "m"}]},
            "compare": {"deps": [{"path": "models/m/config.json", "md5": "c"}]},
        }
    }
    assert stale_stages(lock, flatten({"grpo": {"seed": 1}}), ("compare",)) == [
        "merge@grpo (its input models/a has changed since)"
    ]
    lock["stages"]["merge@grpo"]["deps"][0]["md5"] = "x"
    assert stale_stages(lock, flatten({"grpo": {"seed": 1}}), ("compare",)) == []
    assert stale_stages(lock, flatten({"grpo": {"seed": 2}}), ("compare",)) == ["grpo (ran with other grpo.seed)"]
    assert stale_stages(lock, {}, ("calibrate@grpo",)) == ["calibrate@grpo (never ran)"]


def _answer(letter: str) -> str:
    return json.dumps({"predicted_category": letter, "confidence": 0.9, "reason": "r"})


def _runs(name: str, right: list[int], gold: str = "ABCD" * 10) -> list[Run]:
    """Runs of one setting, a seed each, answering the first ``right[i]`` selection questions right
    and the rest with the letter after the right one."""
    weights = {"correct_answer": 1.0, "valid_json": 0.25}
    runs = []
    for seed, k in enumerate(right):
        selection = [
            {"id": str(i), "gold": g, "raw_output": _answer(g if i < k else "ABCD"[("ABCD".index(g) + 1) % 4])}
            for i, g in enumerate(gold)
        ]
        params = {"seed": 42, "grpo.seed": seed, **{f"grpo.rewards.{k}": v for k, v in weights.items()}}
        summary = {"heldout_reward_end": 1.0}
        runs.append(Run(f"{name}-{seed}", "0" * 40, seed, params, {}, summary, {}, selection, {}))
    return runs


def test_a_setting_replaces_the_incumbent_only_when_its_lead_is_beyond_noise():
    clear = choose({"incumbent": _runs("a", [10, 12, 11]), "rival": _runs("b", [30, 31, 29])})
    assert clear["best"] == clear["chosen"] == "rival"
    assert clear["settings"]["incumbent"]["best_minus_this"]["ci_low"] > 0
    assert clear["settings"]["rival"]["mean"] == pytest.approx(0.25 + 30 / 40)
    noise = choose({"incumbent": _runs("a", [10, 12, 11]), "rival": _runs("b", [11, 12, 12])})
    assert noise["best"] == "rival" and noise["chosen"] == "incumbent" and "within noise" in noise["why"]
    few = choose({"incumbent": _runs("a", [10, 12]), "rival": _runs("b", [30, 31, 29])})
    assert few["chosen"] is None and f"fewer than {MIN_SEEDS_TO_CHOOSE} seeds" in few["why"]
