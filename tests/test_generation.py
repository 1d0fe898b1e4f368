"""Batched greedy generation gives exactly what one-at-a-time `generate` gives."""

from __future__ import annotations

import torch

from medjson.core.prompts import build_messages, render_prompt
from medjson.model.generation import generate
from medjson.model.modeling import end_of_turn_ids


def test_batched_pruned_greedy_matches_one_at_a_time_generate(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [build_messages(f"Question {i}? " + "long " * (i % 5) * 7, ["a", "b", "c", f"d{i}"]) for i in range(12)]
    batched = generate(model, tokenizer, questions, False, batch_size=5, max_new_tokens=24)
    for messages, got in zip(questions, batched.outputs):
        encoded = tokenizer(render_prompt(tokenizer, messages, False), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                max_new_tokens=24,
                do_sample=False,
                eos_token_id=end_of_turn_ids(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, encoded["input_ids"].shape[1] :]
        assert got.text == tokenizer.decode(new, skip_special_tokens=True)
        assert got.new_tokens == len(new)
    assert batched.new_tokens == sum(o.new_tokens for o in batched.outputs)


def test_common_prefix_leaves_every_row_a_token_of_its_own():
    from medjson.model.generation import _common_prefix_length

    assert _common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert _common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert _common_prefix_length([[7], [8, 9]]) == 0


def test_rows_that_stop_early_leave_the_batch(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.generation import greedy_pruned

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [
        tokenizer(
            render_prompt(tokenizer, build_messages(f"Q{i}?" + " x" * i, ["a", "b", "c", "d"]), False),
            add_special_tokens=False,
        )["input_ids"]
        for i in range(4)
    ]
    free, _ = greedy_pruned(model, prompts, tokenizer.pad_token_id, 10, stop_ids=set())
    assert [len(t) for t in free] == [10] * 4
    # Make each row's third token a stop token: every row ends there, and nothing runs on.
    stops = {row[2] for row in free}
    stopped, _ = greedy_pruned(model, prompts, tokenizer.pad_token_id, 10, stop_ids=stops)
    for row, full in zip(stopped, free):
        first_stop = next(i for i, t in enumerate(full) if t in stops)
        assert row == full[: first_stop + 1]


def test_the_answer_grammar_makes_an_untrained_model_answer_in_schema_and_end(tiny_model):
    """The tiny random model never writes JSON alone; under the grammar every answer is schema-valid and ends."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.parsing import parse_answer
    from medjson.model.grammar import AnswerGrammar

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [
        build_messages(f"Which nerve {i}? " + "long " * (i % 4) * 9, ["a", "b", "c", f"d{i}"]) for i in range(24)
    ]
    free = generate(model, tokenizer, questions, False, batch_size=7, max_new_tokens=72)
    assert not any(parse_answer(o.text).valid_json for o in free.outputs)
    grammar = AnswerGrammar(tokenizer, model.config.vocab_size, end_of_turn_ids(tokenizer), max_new_tokens=72)
    constrained = generate(model, tokenizer, questions, False, batch_size=7, max_new_tokens=72, grammar=grammar)
    parsed = [parse_answer(o.text) for o in constrained.outputs]
    assert all(p.schema_valid for p in parsed), [o.text for o in constrained.outputs]
    assert all(o.new_tokens <= 72 for o in constrained.outputs)


def test_a_budget_too_small_for_any_answer_is_refused(tiny_model):
    import pytest
    from transformers import AutoTokenizer

    from medjson.model.grammar import AnswerGrammar

    with pytest.raises(ValueError, match="max_new_tokens = 30 is too small"):
        AnswerGrammar(AutoTokenizer.from_pretrained(tiny_model), 1024, [1], max_new_tokens=30)


def test_letter_probability_equals_a_direct_forward_pass(tiny_model):
    """Taken from the generation pass itself, it matches the model's own softmax over A-D at that position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.generation import LETTER_PREFIX, greedy_pruned, letter_probabilities, letter_token_ids
    from medjson.model.grammar import AnswerGrammar

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [build_messages(f"Which nerve {i}?" + " more" * i, ["a", "b", "c", "d"]) for i in range(6)]
    prompts = [tokenizer(render_prompt(tokenizer, m, False), add_special_tokens=False)["input_ids"] for m in questions]
    stops = end_of_turn_ids(tokenizer)
    grammar = AnswerGrammar(tokenizer, model.config.vocab_size, stops, max_new_tokens=72)
    letters = letter_token_ids(tokenizer)
    rows, per_step = greedy_pruned(model, prompts, tokenizer.pad_token_id, 72, set(stops), grammar, letters)
    via_generate = generate(model, tokenizer, questions, False, batch_size=6, max_new_tokens=72, grammar=grammar)
    for prompt, new, steps, output in zip(prompts, rows, per_step, via_generate.outputs):
        probs = letter_probabilities(tokenizer, new, steps, letters)
        assert probs is not None and abs(sum(probs) - 1) < 1e-9 and output.letter_probs == probs
        step = next(k for k, t in enumerate(new) if t in letters and LETTER_PREFIX.search(tokenizer.decode(new[:k])))
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + new[:step]])).logits[0, -1, letters]
        expected = torch.softmax(logits.double(), dim=0).tolist()
        assert max(abs(a - b) for a, b in zip(probs, expected)) < 1e-4


def test_a_timed_out_question_stops_generating(tiny_model):
    """Its row leaves the batch at the next step; the other rows' answers are unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.prompts import build_messages
    from medjson.model.generation import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    conversations = [build_messages(f"Which nerve {i}?", ["a", "b", "c", "d"]) for i in range(3)]
    alone = generate(model, tokenizer, conversations, False, 3, 40).outputs
    steps = {"seen": 0}

    def stopped(row: int) -> bool:  # row 1's caller gives up after a few steps
        steps["seen"] += row == 1
        return row == 1 and steps["seen"] > 3

    together = generate(model, tokenizer, conversations, False, 3, 40, stopped=stopped).outputs
    assert together[1].new_tokens <= 5 < alone[1].new_tokens
    assert [together[0].text, together[2].text] == [alone[0].text, alone[2].text]
