"""Schema-constrained decoding: every answer is the schema's JSON, and every answer ends.

At each step of greedy decoding, tokens that cannot continue a valid answer are masked
out of the logits (xgrammar: a grammar matcher per row and a token bitmask; chosen over
llguidance and outlines for its lower per-token cost on CPU, measured in
``bench/grammar_overhead.py``, and because it is the engine vLLM and SGLang default to).

The grammar is the answer's JSON schema (``parsing.ANSWER_SCHEMA``) written out in the
exact form SFT teaches (``prompts.target_json``: key order, ``", "`` and ``": "``), with
three bounds that make every answer finish within ``max_new_tokens``:
- ``predicted_category`` is one of A-D;
- ``confidence`` is 0, 1, or a number in between with at most two decimals;
- ``reason`` is printable ASCII without quote or backslash, at most ``reason_max_chars``
  characters: with a byte-level tokenizer no token is shorter than one such character,
  so the reason costs at most that many tokens, and the budget is what
  ``max_new_tokens`` leaves after the rest of the answer and the end-of-turn token.
"""

from __future__ import annotations

from medjson.prompts import LETTERS, target_json

# Printable ASCII except `"` (0x22) and `\\` (0x5c): no escapes, one character per token at most.
REASON_CHARS = r"[ !#-\[\]-~]"
CONFIDENCE_EBNF = '"0" | "0." [0-9] | "0." [0-9] [0-9] | "1" | "1.0" | "1.00"'


def answer_ebnf(reason_max_chars: int) -> str:
    """The answer grammar in xgrammar's EBNF."""
    letters = "".join(LETTERS)
    return (
        f'root ::= "{{\\"predicted_category\\": \\"" [{letters}] "\\", \\"confidence\\": " confidence '
        f'", \\"reason\\": \\"" {REASON_CHARS}{{0,{reason_max_chars}}} "\\"}}"\n'
        f"confidence ::= {CONFIDENCE_EBNF}\n"
    )


def reason_budget(tokenizer, max_new_tokens: int) -> int:
    """Characters the reason may take so that the whole answer and its end token fit ``max_new_tokens``."""
    skeleton = target_json(LETTERS[0], 0.85, "")
    overhead = len(tokenizer(skeleton, add_special_tokens=False)["input_ids"]) + 2  # + end-of-turn, + slack
    budget = max_new_tokens - overhead
    if budget < 1:
        raise ValueError(
            f"max_new_tokens = {max_new_tokens} leaves no room for a reason: a constrained answer needs at least "
            f"{overhead + 1} tokens"
        )
    return budget


class AnswerGrammar:
    """The compiled answer grammar for one tokenizer and budget; hands out a matcher per answer."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int], max_new_tokens: int):
        import xgrammar as xgr

        self.vocab_size = vocab_size
        self.reason_max_chars = reason_budget(tokenizer, max_new_tokens)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.compiled = xgr.GrammarCompiler(info).compile_grammar(answer_ebnf(self.reason_max_chars))

    def matchers(self, count: int) -> list:
        import xgrammar as xgr

        return [xgr.GrammarMatcher(self.compiled) for _ in range(count)]

    def mask(self, logits, matchers: list) -> None:
        """Set to -inf, in place, every logit a row's matcher does not allow next."""
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(len(matchers), self.vocab_size)
        for row, matcher in enumerate(matchers):
            matcher.fill_next_token_bitmask(bitmask, row)
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device))

    @staticmethod
    def accept(matcher, token: int) -> None:
        if not matcher.accept_token(token):
            raise RuntimeError(f"grammar rejected token {token} that its own mask allowed")
