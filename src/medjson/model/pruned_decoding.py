"""The pruned greedy decoder: rows leave the batch as they end, on transformers' dynamic cache.

The decoder the pipeline answers with on CPU (``model.decoder: auto``), whose answers are its reference
bytes; ``static_decoding`` holds the one a GPU answers with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


def common_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    length = 0
    while length < shortest - 1 and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length


def own_tokens(own: list[list[int]], pad_id: int, shared: int, device) -> tuple[torch.Tensor, ...]:
    """Each row's own tokens (after the ``shared`` prefix) left-padded to one width: the ids, the mask of
    real tokens, and each token's position, padding skipped, so every row sees exactly its prompt."""
    width = max(len(o) for o in own)
    input_ids = torch.tensor([[pad_id] * (width - len(o)) + o for o in own], device=device)
    own_mask = torch.tensor([[0] * (width - len(o)) + [1] * len(o) for o in own], device=device)
    return input_ids, own_mask, shared + (own_mask.cumsum(-1) - 1).clamp(min=0)


def last_logits(model, cache, input_ids, attention_mask, positions) -> torch.Tensor:
    """The prefill's logits at each row's last position. Only those are needed: skipping the rest saves
    the LM head's work over every prompt token (a fifth of the prefill on a 49k-token vocabulary)."""
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]


@dataclass(frozen=True)
class GreedyBatch:
    """One batch for a greedy decoder: what ``greedy_pruned`` and ``static_decoding.greedy_static`` take.

    ``prompts``: each row's token ids; ``stop_ids``: tokens that end a row; ``grammar``: an
    ``AnswerGrammar`` that masks each row's logits to what its matcher allows; ``letter_ids``: tokens
    whose raw logits (before any mask) are kept at every step; ``stopped(row)`` true: its caller gave up
    on that row; ``on_token(row, token, letter_logits)`` hears each token as it is chosen.
    """

    prompts: list[list[int]]
    pad_id: int
    max_new_tokens: int
    stop_ids: set[int]
    grammar: Any = None
    letter_ids: list[int] | None = None
    stopped: Callable[[int], bool] | None = None
    on_token: Callable[[int, int, list[float] | None], None] | None = None


@torch.inference_mode()
def greedy_pruned(model, batch: GreedyBatch) -> tuple[list[list[int]], list[list[list[float]]]]:
    """Greedy decoding of a batch that shares its common prefix and drops rows as they end.

    Two savings over ``generate``, same tokens:
    - the prefix every prompt shares (system prompt, chat markers: two thirds of a
      MedMCQA prompt) is run once and its KV cache copied to each row;
    - a row that emits a stop token leaves the batch at once, instead of riding along
      until the longest answer ends.
    Each row's own tokens are left-padded after the shared prefix; padding is masked and
    positions skip it, so every row sees exactly its unpadded prompt. With a ``grammar``
    (``medjson.model.grammar.AnswerGrammar``), each row's logits are masked to what its matcher
    allows before the argmax. With ``letter_ids``, each row's raw logits of those tokens are
    kept at every step (before any mask): the model's own view of the letters, for free.
    A row for which ``stopped(row)`` turns true (its caller gave up waiting) leaves the batch at
    the next step, as a finished one does: the others go on, faster. ``on_token(row, token,
    letter_logits)`` hears each token as it is chosen (a stream's deltas), before ``stopped`` is asked.
    Returns the new tokens of each row, and those per-step letter logits.
    """
    from transformers import DynamicCache

    device = model.device
    shared = common_prefix_length(batch.prompts)
    # `past_key_values` rather than 5.24's new `cache` name: also works on older transformers.
    cache = DynamicCache(config=model.config)
    if shared:
        model(
            input_ids=torch.tensor([batch.prompts[0][:shared]], device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(len(batch.prompts))
    input_ids, own_mask, positions = own_tokens([p[shared:] for p in batch.prompts], batch.pad_id, shared, device)
    attention_mask = torch.cat([own_mask.new_ones((len(own_mask), shared)), own_mask], dim=1)
    logits = last_logits(model, cache, input_ids, attention_mask, positions)
    alive = list(range(len(batch.prompts)))  # original row of each live row
    tokens: list[list[int]] = [[] for _ in alive]
    matchers = batch.grammar.matchers(len(batch.prompts)) if batch.grammar else None
    letter_logits: list[list[list[float]]] = [[] for _ in alive]
    letter_index = torch.tensor(batch.letter_ids, device=device) if batch.letter_ids else None
    for step in range(batch.max_new_tokens):
        if letter_index is not None:
            for row, values in zip(alive, logits[:, letter_index].float().tolist()):
                letter_logits[row].append(values)
        if batch.grammar:
            batch.grammar.mask(logits, [matchers[row] for row in alive], steps_left=batch.max_new_tokens - step)
        next_tokens = logits.argmax(-1)
        keep = []
        for position, (row, token) in enumerate(zip(alive, next_tokens.tolist())):
            tokens[row].append(token)
            if batch.grammar:
                batch.grammar.accept(matchers[row], token)
            if batch.on_token:
                batch.on_token(row, token, letter_logits[row][-1] if letter_index is not None else None)
            if token not in batch.stop_ids and not (batch.stopped and batch.stopped(row)):
                keep.append(position)
        if not keep or step == batch.max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention_mask, next_tokens = attention_mask[index], next_tokens[index]
            alive = [alive[i] for i in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
        positions = attention_mask.sum(-1, keepdim=True) - 1
        logits = model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
    return tokens, letter_logits
