"""What training watches on the held-out pool: trends, first and last values, GRPO's held-out rewards."""

from __future__ import annotations

import json
import logging

import pytest

from medjson.core.prompts import build_messages, target_json
from medjson.training.heldout import start_and_end, warn_if_worsening, worsening_run
from medjson.training.heldout_rewards import HeldoutRewards, heldout_scores
from medjson.training.rewards import HELDOUT_REWARD, weighted_rewards

WEIGHTS = {"valid_json": 0.25, "valid_schema": 0.25, "correct_answer": 1.0, "calibration": 0.5, "letter_balance": 0.5}


@pytest.mark.parametrize(
    "values, higher_is_better, run",
    [
        ([0.5, 0.4, 0.3, 0.2], True, 3),
        ([0.5, 0.4, 0.45, 0.3], True, 1),  # the rise at the third broke the run
        ([0.5, 0.5, 0.4], True, 1),  # equal is not worse
        ([0.2, 0.3, 0.4, 0.5], True, 0),
        ([1.0, 1.1, 1.2, 1.3], False, 3),  # a loss that rises
        ([1.3], False, 0),
        ([], True, 0),
    ],
)
def test_worsening_run_counts_consecutive_worse_evaluations_up_to_the_last(values, higher_is_better, run):
    assert worsening_run(values, higher_is_better) == run


def test_a_held_out_reward_falling_three_evaluations_running_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="medjson.heldout"):
        assert not warn_if_worsening([0.6, 0.5, 0.4], "reward", True, step=10)
        assert warn_if_worsening([0.6, 0.5, 0.4, 0.3], "reward", True, step=15)
    (record,) = caplog.records
    assert "held-out reward has fallen for 3 evaluations running (now 0.3000 at step 15, was 0.6000)" in record.message


def test_first_and_last_come_from_the_records_that_hold_the_key():
    history = [{"step": 0, "eval_loss": 2.0}, {"step": 1, "loss": 9.0}, {"step": 2, "eval_loss": 1.5}]
    assert start_and_end(history, "eval_loss", "heldout_loss") == {"heldout_loss_start": 2.0, "heldout_loss_end": 1.5}
    assert start_and_end(history, "missing") == {"missing_start": None, "missing_end": None}


def test_held_out_scores_are_the_weighted_rewards_and_the_top_letter_share():
    texts = [
        target_json("A", 0.9, "right and sure"),
        target_json("B", 0.2, "wrong, and says so"),
        target_json("B", 0.8, "wrong and sure"),
        "no JSON at all",
    ]
    gold = ["A", "A", "A", "A"]
    scores = heldout_scores(texts, gold, WEIGHTS)
    calibration = [1 - 0.1**2, 1 - 0.2**2, 1 - 0.8**2, 0.0]
    assert scores["heldout_valid_json"] == 0.75 and scores["heldout_correct_answer"] == 0.25
    assert scores["heldout_calibration"] == pytest.approx(sum(calibration) / 4)
    balance = [1 - 1 / 4, 1 - 2 / 4, 1 - 2 / 4, 0.0]  # shares across the whole held-out batch, as in training
    assert scores["heldout_letter_balance"] == pytest.approx(sum(balance) / 4)
    expected_total = 0.25 * 0.75 + 0.25 * 0.75 + 1.0 * 0.25 + 0.5 * sum(calibration) / 4 + 0.5 * sum(balance) / 4
    assert scores[HELDOUT_REWARD] == pytest.approx(expected_total)
    totals, _ = weighted_rewards(texts, gold, WEIGHTS)
    assert scores[HELDOUT_REWARD] == pytest.approx(sum(totals) / 4)
    assert scores["heldout_top_letter_share"] == 0.5  # two of four answers say B; the invalid one names none


class _Curves:
    def __init__(self):
        self.written = []

    def write(self, step, record):
        self.written.append((step, record))


class _State:
    def __init__(self, global_step, max_steps, log_history=None):
        self.global_step, self.max_steps, self.log_history = global_step, max_steps, log_history or []


def test_held_out_rewards_are_measured_at_the_start_every_n_steps_and_kept_across_a_resume(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    records = [
        {"messages": build_messages(f"Question {i}?", ["a", "b", "c", "d"]), "answer": "ABCD"[i]} for i in range(3)
    ]
    curves = _Curves()
    watch = HeldoutRewards(tokenizer, records, WEIGHTS, False, max_new_tokens=8, batch_size=2, every=2, curves=curves)
    state = _State(0, 5)
    watch.on_train_begin(None, state, None, model=model)
    for step in range(1, 6):
        state.global_step = step
        watch.on_step_end(None, state, None, model=model)
    assert [r["step"] for r in state.log_history] == [0, 2, 4, 5]  # the start, every 2nd step, the last
    assert [step for step, _ in curves.written] == [0, 2, 4, 5]
    assert model.training  # put back in training mode after each greedy pass
    assert all(set(WEIGHTS) <= {k.removeprefix("heldout_") for k in r} for r in state.log_history)
    json.dumps(state.log_history)  # a checkpoint's trainer state must hold them as JSON
    # Resumed at step 4: the records before come back from the checkpoint; no new start measurement.
    resumed = HeldoutRewards(tokenizer, records, WEIGHTS, False, 8, 2, 2, _Curves())
    resumed.on_train_begin(None, _State(4, 5, [dict(r) for r in state.log_history[:3]]), None, model=model)
    assert [r["step"] for r in resumed.history] == [0, 2, 4]


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best_leaves_the_policy_of_the_highest_held_out_reward(tiny_model, tmp_path, monkeypatch, keep_best):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import medjson.training.heldout_rewards as heldout_rewards

    # The held-out rewards of the policies at steps 0, 2, 4, 5: the best at step 2, then a drift off.
    rewards = iter([0.5, 0.9, 0.7, 0.6])
    scores = heldout_rewards.heldout_scores
    monkeypatch.setattr(heldout_rewards, "heldout_scores", lambda *a: {**scores(*a), HELDOUT_REWARD: next(rewards)})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    for name, p in model.named_parameters():
        p.requires_grad = name == "model.norm.weight"  # the one "trained" weight, as a LoRA's would be
    frozen_before = model.lm_head.weight.detach().clone()
    records = [{"messages": build_messages("Question?", ["a", "b", "c", "d"]), "answer": "A"}]
    best_file = tmp_path / "scratch" / "heldout_best.safetensors"
    watch = HeldoutRewards(
        tokenizer, records, WEIGHTS, False, 8, 1, 2, _Curves(), best_weights=best_file if keep_best else None
    )
    state = _State(0, 5)
    watch.on_train_begin(None, state, None, model=model)
    for step in range(1, 6):
        with torch.no_grad():
            model.model.norm.weight.fill_(float(step))  # a policy of its own at every step
        state.global_step = step
        watch.on_step_end(None, state, None, model=model)
    watch.on_train_end(None, state, None, model=model)

    assert [r[HELDOUT_REWARD] for r in watch.history] == [0.5, 0.9, 0.7, 0.6]
    assert best_file.exists() == keep_best
    assert watch.kept_step == (2 if keep_best else 5)
    assert watch.kept[HELDOUT_REWARD] == (0.9 if keep_best else 0.6)  # what the training metrics report as kept
    assert torch.all(model.model.norm.weight == (2.0 if keep_best else 5.0))  # the weights of the kept step
    assert torch.equal(model.lm_head.weight, frozen_before)  # nothing else touched
