"""Schema-constrained decoding: every answer is the schema's JSON, and every answer ends.

At each step of greedy decoding, tokens that cannot continue a valid answer are masked
out of the logits (xgrammar: a grammar matcher per row and a token bitmask). Its cost per
token is of the same order as llguidance's (``bench/grammar_overhead.py``); it was chosen
for how it plugs into transformers and custom decoders, and as vLLM's and SGLang's default.

The grammar is the answer's JSON schema (``parsing.ANSWER_SCHEMA``) written out in the
exact form SFT teaches (``prompts.target_json``: key order, ``", "`` and ``": "``), with
bounds that make every answer finish within ``max_new_tokens``:
- ``predicted_category`` is one of A-D;
- ``confidence`` is 0, 1, or a number in between with at most two decimals;
- ``reason`` is printable ASCII without quote or backslash, so that the string can be
  closed after any token of it;
- once only the tokens to close the answer are left (``"``, ``}`` and the end of turn),
  nothing else is allowed, so the reason is as long as the budget lets it be, and no longer.
With a byte-level tokenizer no token is shorter than one character, so the answer's fixed
part costs at most its length in characters: ``max_new_tokens`` must leave room for it.
"""

from __future__ import annotations

from medjson.core.prompts import LETTERS, target_json

# Printable ASCII except `"` (0x22) and `\\` (0x5c): no escapes, and closable after any token.
REASON_CHARS = r"[ !#-\[\]-~]"
CONFIDENCE_EBNF = '"0" | "0." [0-9] | "0." [0-9] [0-9] | "1" | "1.0" | "1.00"'
CLOSING = ('"', "}")  # what ends the reason string, then the object
DECODINGS = ("free", "constrained")  # free: the model alone; constrained: masked by this grammar


def answer_ebnf() -> str:
    """The answer grammar in xgrammar's EBNF."""
    letters = "".join(LETTERS)
    return (
        f'root ::= "{{\\"predicted_category\\": \\"" [{letters}] "\\", \\"confidence\\": " confidence '
        f'", \\"reason\\": \\"" {REASON_CHARS}* "\\"}}"\n'
        f"confidence ::= {CONFIDENCE_EBNF}\n"
    )


def min_new_tokens() -> int:
    """The most tokens an answer with an empty reason can take: one per character, and the end of turn."""
    return len(target_json(LETTERS[0], 0.85, "")) + 1


class AnswerGrammar:
    """The compiled answer grammar for one tokenizer; hands out a matcher per answer and masks logits."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int], max_new_tokens: int):
        import torch
        import xgrammar as xgr

        if max_new_tokens < min_new_tokens():
            raise ValueError(
                f"max_new_tokens = {max_new_tokens} is too small for constrained decoding: an answer may take "
                f"{min_new_tokens()} tokens before its reason says anything"
            )
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.compiled = xgr.GrammarCompiler(info).compile_grammar(answer_ebnf())

        def single_tokens(*texts: str) -> set[int]:
            found = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts)
            return {ids[0] for ids in found if len(ids) == 1}

        # With k steps left, the tokens that still finish the answer in time: `"` (or `"}`) with three
        # left, then `}` (or the end of turn after `"}`), then the end of turn.
        stops = set(stop_ids)
        self.closing_ids = {
            3: torch.tensor(sorted(single_tokens('"', '"}') | stops)),
            2: torch.tensor(sorted(single_tokens("}", '"}') | stops)),
            1: torch.tensor(sorted(stops)),
        }

    @classmethod
    def for_model(cls, model, tokenizer, max_new_tokens: int) -> AnswerGrammar:
        """The grammar for a loaded model: its full logits width, its end-of-turn tokens."""
        from medjson.model.modeling import end_of_turn_ids

        return cls(tokenizer, model.config.vocab_size, end_of_turn_ids(tokenizer), max_new_tokens)

    def matchers(self, count: int) -> list:
        import xgrammar as xgr

        return [xgr.GrammarMatcher(self.compiled) for _ in range(count)]

    def mask(self, logits, matchers: list, steps_left: int) -> None:
        """Set to -inf, in place, every logit a row's matcher does not allow next; with only the
        closing steps left, allow nothing but closing tokens. A row whose matcher is None (an answer
        already ended, whose slot the static decoder keeps) is left as it is."""
        import torch
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(len(matchers), self.vocab_size)  # all allowed
        for row, matcher in enumerate(matchers):
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask, row)
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device))
        if steps_left in self.closing_ids:
            ids = self.closing_ids[steps_left].to(logits.device)
            keep = logits[:, ids].clone()
            # Rows the grammar lets close now close; any other row keeps its grammar mask alone.
            closing = torch.isfinite(keep).any(-1)
            logits[closing] = float("-inf")
            logits[closing.nonzero()[:, 0, None], ids] = keep[closing]

    @staticmethod
    def accept(matcher, token: int) -> None:
        if not matcher.accept_token(token):
            raise RuntimeError(f"the answer grammar rejected token {token}, which its own mask allowed")
