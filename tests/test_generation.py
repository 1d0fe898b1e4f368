"""Batched greedy generation gives exactly what one-at-a-time `generate` gives, with either greedy decoder.

``static`` runs every path of the static decoder that a GPU runs, its step eager; the compiled step is
traced whole here with torch.compile's ``eager`` backend, and compiled for real by bench/decode_step.py
(CPU) and bench/gpu_shape.py (a CUDA graph).
"""

from __future__ import annotations

import pytest
import torch

from medjson.core.prompts import build_messages, render_prompt
from medjson.model.generation import generate, greedy_decoder
from medjson.model.modeling import end_of_turn_ids
from medjson.model.pruned_decoding import GreedyBatch

DECODERS = ["pruned", "static"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_batched_greedy_matches_one_at_a_time_generate(tiny_model, decoder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [build_messages(f"Question {i}? " + "long " * (i % 5) * 7, ["a", "b", "c", f"d{i}"]) for i in range(12)]
    # Batches of 5, 5 and 2: the static decoder's cache of 8 rows serves the first two, a fresh one the last.
    batched = generate(model, tokenizer, questions, False, batch_size=5, max_new_tokens=24, decoder=decoder)
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
    from medjson.model.pruned_decoding import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7], [8, 9]]) == 0


@pytest.mark.parametrize("decoder", DECODERS)
def test_rows_that_stop_early_end_there(tiny_model, decoder):
    """A row ends at its stop token (the pruned decoder drops it from the batch; the static one keeps its
    slot, writing padding), and the others run on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [
        tokenizer(
            render_prompt(tokenizer, build_messages(f"Q{i}?" + " x" * i, ["a", "b", "c", "d"]), False),
            add_special_tokens=False,
        )["input_ids"]
        for i in range(4)
    ]
    greedy = greedy_decoder(model, decoder)
    free, _ = greedy(GreedyBatch(prompts, tokenizer.pad_token_id, 10, stop_ids=set()))
    assert [len(t) for t in free] == [10] * 4
    # Make each row's third token a stop token: every row ends there, and nothing runs on.
    stops = {row[2] for row in free}
    stopped, _ = greedy(GreedyBatch(prompts, tokenizer.pad_token_id, 10, stop_ids=stops))
    for row, full in zip(stopped, free):
        first_stop = next(i for i, t in enumerate(full) if t in stops)
        assert row == full[: first_stop + 1]


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_answer_grammar_makes_an_untrained_model_answer_in_schema_and_end(tiny_model, decoder):
    """The tiny random model never writes JSON alone; under the grammar every answer is schema-valid and ends."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.parsing import parse_answer
    from medjson.model.grammar import AnswerGrammar

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [
        build_messages(f"Which nerve {i}? " + "long " * (i % 4) * 9, ["a", "b", "c", f"d{i}"]) for i in range(24)
    ]
    free = generate(model, tokenizer, questions, False, batch_size=7, max_new_tokens=72, decoder=decoder)
    assert not any(parse_answer(o.text).valid_json for o in free.outputs)
    grammar = AnswerGrammar(tokenizer, model.config.vocab_size, end_of_turn_ids(tokenizer), max_new_tokens=72)
    constrained = generate(
        model, tokenizer, questions, False, batch_size=7, max_new_tokens=72, grammar=grammar, decoder=decoder
    )
    parsed = [parse_answer(o.text) for o in constrained.outputs]
    assert all(p.schema_valid for p in parsed), [o.text for o in constrained.outputs]
    assert all(o.new_tokens <= 72 for o in constrained.outputs)


def test_a_budget_too_small_for_any_answer_is_refused(tiny_model):
    import pytest
    from transformers import AutoTokenizer

    from medjson.model.grammar import AnswerGrammar

    with pytest.raises(ValueError, match="max_new_tokens = 30 is too small"):
        AnswerGrammar(AutoTokenizer.from_pretrained(tiny_model), 1024, [1], max_new_tokens=30)


@pytest.mark.parametrize("decoder", DECODERS)
def test_letter_probability_equals_a_direct_forward_pass(tiny_model, decoder):
    """Taken from the generation pass itself, it matches the model's own softmax over A-D at that position."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.generation import LETTER_PREFIX, letter_probabilities, letter_token_ids
    from medjson.model.grammar import AnswerGrammar

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    questions = [build_messages(f"Which nerve {i}?" + " more" * i, ["a", "b", "c", "d"]) for i in range(6)]
    prompts = [tokenizer(render_prompt(tokenizer, m, False), add_special_tokens=False)["input_ids"] for m in questions]
    stops = end_of_turn_ids(tokenizer)
    grammar = AnswerGrammar(tokenizer, model.config.vocab_size, stops, max_new_tokens=72)
    letters = letter_token_ids(tokenizer)
    rows, per_step = greedy_decoder(model, decoder)(
        GreedyBatch(prompts, tokenizer.pad_token_id, 72, set(stops), grammar, letters)
    )
    via_generate = generate(
        model, tokenizer, questions, False, batch_size=6, max_new_tokens=72, grammar=grammar, decoder=decoder
    )
    for prompt, new, steps, output in zip(prompts, rows, per_step, via_generate.outputs):
        probs = letter_probabilities(tokenizer, new, steps, letters)
        assert probs is not None and abs(sum(probs) - 1) < 1e-9 and output.letter_probs == probs
        step = next(k for k, t in enumerate(new) if t in letters and LETTER_PREFIX.search(tokenizer.decode(new[:k])))
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + new[:step]])).logits[0, -1, letters]
        expected = torch.softmax(logits.double(), dim=0).tolist()
        assert max(abs(a - b) for a, b in zip(probs, expected)) < 1e-4


@pytest.mark.parametrize("decoder, asked_every", [("pruned", 1), ("static", 16)])
def test_a_timed_out_question_stops_generating(tiny_model, decoder, asked_every):
    """Its row stops the next time its caller is asked (after each step in the pruned decoder; at each of
    the static decoder's host reads, every ``CHECK_EVERY`` steps); the other rows' answers are unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.prompts import build_messages
    from medjson.model.static_decoding import CHECK_EVERY

    assert CHECK_EVERY == 16
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    conversations = [build_messages(f"Which nerve {i}?", ["a", "b", "c", "d"]) for i in range(3)]
    alone = generate(model, tokenizer, conversations, False, 3, 40, decoder=decoder).outputs
    asked = {"times": 0}

    def stopped(row: int) -> bool:  # row 1's caller gives up the second time it is asked
        asked["times"] += row == 1
        return row == 1 and asked["times"] > 1

    together = generate(model, tokenizer, conversations, False, 3, 40, stopped=stopped, decoder=decoder).outputs
    assert together[1].new_tokens == 2 * asked_every < alone[1].new_tokens
    assert [together[0].text, together[2].text] == [alone[0].text, alone[2].text]


@pytest.mark.parametrize("constrained", [False, True])
def test_the_static_decoder_streams_what_the_pruned_one_streams(tiny_model, constrained):
    """Token by token, in the same order per row, with the same letter logits beside each token (the
    service's streams and its cancellation hear exactly this)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.generation import letter_token_ids
    from medjson.model.grammar import AnswerGrammar

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    conversations = [build_messages(f"Which muscle {i}?" + " more" * i, ["a", "b", "c", "d"]) for i in range(5)]
    grammar = AnswerGrammar.for_model(model, tokenizer, 72) if constrained else None
    heard = {}
    for decoder in DECODERS:
        streams: dict[int, list] = {}
        generate(
            model, tokenizer, conversations, False, 5, 72, grammar=grammar, decoder=decoder,
            on_token=lambda row, token, letters: streams.setdefault(row, []).append((token, letters)),
        )  # fmt: skip
        heard[decoder] = streams
    assert letter_token_ids(tokenizer) is not None
    for row, pruned in heard["pruned"].items():
        static = heard["static"][row]
        assert [token for token, _ in static] == [token for token, _ in pruned]
        assert all(max(abs(a - b) for a, b in zip(s, p)) < 1e-4 for (_, s), (_, p) in zip(static, pruned))


def test_the_compiled_step_traces_as_one_graph_and_answers_as_the_eager_one(tiny_model):
    """``fullgraph=True`` fails on any graph break: what a CUDA graph needs. The eager backend traces the
    step without generating code, so this runs in seconds; the capture itself is the GPU script's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.grammar import AnswerGrammar
    from medjson.model.static_decoding import StaticDecoder, greedy_static

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [
        tokenizer(render_prompt(tokenizer, build_messages(f"Q{i}?" + " x" * i, list("abcd")), False))["input_ids"]
        for i in range(3)
    ]
    grammar = AnswerGrammar.for_model(model, tokenizer, 72)
    stops = set(end_of_turn_ids(tokenizer))
    eager, _ = greedy_static(
        StaticDecoder(model, compiled=False), GreedyBatch(prompts, tokenizer.pad_token_id, 72, stops, grammar)
    )
    traced = StaticDecoder(model, compiled=True, backend="eager")
    compiled, _ = greedy_static(traced, GreedyBatch(prompts, tokenizer.pad_token_id, 72, stops, grammar))
    assert compiled == eager and traced.compile_seconds > 0


def test_a_step_that_does_not_compile_is_said_once_and_decoded_eagerly(tiny_model, caplog):
    """Where torch cannot compile for a card or a setup, answers still come, the same ones, and the log
    says why and which setting chooses the eager step up front."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.model.static_decoding import StaticDecoder, greedy_static

    def refuses(graph, example_inputs):
        raise RuntimeError("no compiler for this card")

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [
        tokenizer(render_prompt(tokenizer, build_messages(f"Q{i}?", list("abcd")), False))["input_ids"]
        for i in range(2)
    ]
    eager, _ = greedy_static(
        StaticDecoder(model, compiled=False), GreedyBatch(prompts, tokenizer.pad_token_id, 12, set())
    )
    failing = StaticDecoder(model, compiled=True, backend=refuses)
    with caplog.at_level("WARNING", logger="medjson.decoding"):
        got, _ = greedy_static(failing, GreedyBatch(prompts, tokenizer.pad_token_id, 12, set()))
    assert got == eager and not failing.compiled
    assert [r.message for r in caplog.records if "did not compile" in r.message and "no compiler" in r.message]


def test_a_cache_is_kept_for_batches_it_holds_with_at_most_twice_their_length(tiny_model):
    """Each kept cache is one compiled graph less; one per row count bounds the memory."""
    from transformers import AutoModelForCausalLM

    from medjson.model.static_decoding import StaticDecoder

    decoder = StaticDecoder(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), compiled=False)
    first = decoder.cache(8, 300)
    assert first.layers[0].max_cache_len == 384  # a multiple of 128
    assert decoder.cache(8, 200) is first  # 384 <= 2 x 256
    shorter = decoder.cache(8, 100)
    assert shorter is not first and shorter.layers[0].max_cache_len == 128
    assert decoder.cache(8, 500).layers[0].max_cache_len == 512
    assert decoder.cache(4, 500) is not decoder.cache(8, 500) and len(decoder._caches) == 2


def test_the_service_compiles_every_batch_size_before_it_opens(tiny_model, tiny_params, caplog):
    """serve calls ``warm_up(serve.max_batch_size)``: each power-of-two batch up to it compiles then, not
    in a request's time. (Traced here with the eager backend in place of inductor.)"""
    from medjson.core.questions import Question
    from medjson.model.answering import Answerer
    from medjson.model.static_decoding import _DECODERS, StaticDecoder

    answerer = Answerer(str(tiny_model), tiny_params.model, "constrained", 72)
    assert answerer.decoder == "pruned"  # auto, on CPU
    answerer.warm_up(5)  # the pruned decoder compiles nothing: nothing to warm
    assert answerer.model not in _DECODERS
    answerer.decoder = "compiled"
    traced = _DECODERS.setdefault(answerer.model, {})[True] = StaticDecoder(answerer.model, True, backend="eager")
    with caplog.at_level("INFO", logger="medjson.answering"):
        answerer.warm_up(5)
    assert sorted(rows for rows, _ in traced._seen_shapes) == [1, 2, 4, 8]
    assert len([r for r in caplog.records if "warmed up" in r.message]) == 4
    compiled = len(traced._seen_shapes)
    question = Question("q", "Which muscle abducts the arm?", ["Deltoid", "Biceps", "Triceps", "Pectoralis"])
    answers = answerer.answer([question] * 3)  # a batch of 3 runs on the 4-row graph: no new compile
    assert len(traced._seen_shapes) == compiled and all(a.predicted_category for a in answers)


def test_auto_compiles_on_cuda_and_keeps_the_pruned_decoder_elsewhere():
    from medjson.model.generation import resolve_decoder

    assert resolve_decoder("auto", torch.device("cuda")) == "compiled"
    assert resolve_decoder("auto", torch.device("cpu")) == "pruned"
    assert resolve_decoder("static", torch.device("cpu")) == "static"
    with pytest.raises(ValueError, match=r"decoder 'vllm': choose one of"):
        resolve_decoder("vllm", torch.device("cpu"))
