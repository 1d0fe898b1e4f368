"""Harness-style scoring: lm-evaluation-harness's prompts and its log-likelihoods, computed in batches."""

from __future__ import annotations

import pytest
import torch

from medjson.core.harness import CONTINUATIONS, harness_context
from medjson.core.scoring import loglik_metrics, loglik_record
from medjson.data.layouts import harness_task_of

QUESTION = "Antidote for organophosphate poisoning is"
OPTIONS = ["Naloxone", "Flumazenil", "Dimercaprol", "Atropine with pralidoxime"]


def test_contexts_are_the_harness_prompts_letter_for_letter():
    # The texts lm_eval/tasks/{medmcqa/utils_medmcqa.py, medqa/preprocess_medqa.py,
    # mmlu/default/_default_template_yaml} build, the MMLU one after its subject's description.
    assert harness_context("medmcqa", QUESTION, OPTIONS) == (
        "Question: Antidote for organophosphate poisoning is\nChoices:\nA. Naloxone\nB. Flumazenil\n"
        "C. Dimercaprol\nD. Atropine with pralidoxime\nAnswer:"
    )
    assert harness_context("medqa_4options", QUESTION, OPTIONS) == (
        "Question: Antidote for organophosphate poisoning is\nA. Naloxone\nB. Flumazenil\nC. Dimercaprol\n"
        "D. Atropine with pralidoxime\nAnswer:"
    )
    assert harness_context("mmlu", f" {QUESTION} ", OPTIONS, "Clinical Knowledge") == (
        "The following are multiple choice questions (with answers) about clinical knowledge.\n\n"
        "Antidote for organophosphate poisoning is\nA. Naloxone\nB. Flumazenil\nC. Dimercaprol\n"
        "D. Atropine with pralidoxime\nAnswer:"
    )
    assert CONTINUATIONS == (" A", " B", " C", " D")
    with pytest.raises(ValueError, match="medmcqa"):
        harness_context("arc", QUESTION, OPTIONS)


def test_each_layout_names_its_harness_task():
    assert [harness_task_of(layout) for layout in ("hub", "original", "columns")] == ["medmcqa"] * 3
    assert harness_task_of("medqa") == harness_task_of("medqa_hub") == "medqa_4options"
    assert harness_task_of("mmlu") == harness_task_of("mmlu_hub") == "mmlu"


@torch.inference_mode()
def _one_at_a_time(model, tokenizer, context: str, continuation: str) -> float:
    """The harness's arithmetic for one request, unbatched: encode the pair, run once, sum the continuation."""
    if context.endswith(" "):  # HFLM._encode_pair moves a context's trailing space onto the continuation
        context, continuation = context[:-1], " " + continuation
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    continuation_ids = whole[len(context_ids) :]
    log_probs = torch.log_softmax(model(torch.tensor([context_ids + continuation_ids])).logits[0], dim=-1)
    return sum(log_probs[len(context_ids) - 1 + k, t].item() for k, t in enumerate(continuation_ids))


def test_batched_logliks_equal_the_harness_arithmetic_one_request_at_a_time(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.loglik import continuation_logliks

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    contexts = [
        harness_context("medmcqa", QUESTION, OPTIONS),
        harness_context(
            "medqa_4options", "Which nerve supplies the deltoid muscle?", ["Axillary", "Radial", "Ulnar", "Median"]
        ),
        "Answer: ",  # a trailing space moves onto the continuation, as in the harness
    ]
    # Continuations of one token and of several: the second kind takes its own rows.
    for continuations in (CONTINUATIONS, (" A", " Atropine with pralidoxime", " organophosphate", " B")):
        scores, seconds = continuation_logliks(model, tokenizer, contexts, continuations, batch_size=2)
        assert seconds > 0
        for context, row in zip(contexts, scores):
            expected = [_one_at_a_time(model, tokenizer, context, c) for c in continuations]
            assert row == pytest.approx(expected, abs=1e-4)
            assert all(score < 0 for score in row)


def test_the_highest_loglik_is_the_answer_and_ties_go_to_the_first_letter():
    question = {"id": "q1", "answer": "C"}
    picked = loglik_record(question, [-3.0, -2.5, -1.0, -4.0])
    assert picked == {
        "id": "q1",
        "gold": "C",
        "logliks": {"A": -3.0, "B": -2.5, "C": -1.0, "D": -4.0},
        "predicted": "C",
        "correct": True,
    }
    tied = loglik_record(question, [-2.0, -1.0, -1.0, -3.0])
    assert tied["predicted"] == "B" and not tied["correct"]  # numpy's argmax: the first maximum
    metrics = loglik_metrics([picked, tied])
    assert metrics["loglik_accuracy"] == 0.5
    assert 0 < metrics["loglik_accuracy_ci_low"] < 0.5 < metrics["loglik_accuracy_ci_high"] < 1
