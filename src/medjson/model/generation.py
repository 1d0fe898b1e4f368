"""Batched generation with left padding: the evaluation's inference path and GRPO's preflight.

Prompts are sorted by length so each batch pads little, generated in batches, and
returned in the caller's order. Greedy decoding drops finished rows from the batch;
sampling uses ``generate``. Only new tokens are decoded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from tqdm import tqdm

from medjson.core.choices import AUTO_DECODER, COMPILED, DECODERS, PRUNED
from medjson.core.prompts import LETTERS, prompt_ids, render_prompt
from medjson.model.modeling import end_of_turn_ids


@dataclass(frozen=True)
class Generated:
    text: str
    new_tokens: int  # up to and including the end-of-turn token
    ended: bool  # the model wrote its end of turn (False: the token budget, or a caller, cut it)
    # The model's probabilities of A, B, C, D, renormalised over the four, at the step that wrote
    # the `predicted_category` value; None where no such step was found (or when sampling).
    letter_probs: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class GenerationRun:
    outputs: list[Generated]
    seconds: float

    @property
    def new_tokens(self) -> int:
        return sum(o.new_tokens for o in self.outputs)


def _count_new_tokens(row: list[int], stop_ids: set[int]) -> int:
    for index, token in enumerate(row):
        if token in stop_ids:
            return index + 1
    return len(row)


def _common_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    length = 0
    while length < shortest - 1 and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length


@torch.inference_mode()
def greedy_pruned(
    model,
    prompts: list[list[int]],
    pad_id: int,
    max_new_tokens: int,
    stop_ids: set[int],
    grammar=None,
    letter_ids: list[int] | None = None,
    stopped: Callable[[int], bool] | None = None,
    on_token: Callable[[int, int, list[float] | None], None] | None = None,
) -> tuple[list[list[int]], list[list[list[float]]]]:
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
    shared = _common_prefix_length(prompts)
    # `past_key_values` rather than 5.24's new `cache` name: also works on older transformers.
    cache = DynamicCache(config=model.config)
    if shared:
        model(
            input_ids=torch.tensor([prompts[0][:shared]], device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(len(prompts))
    own = [p[shared:] for p in prompts]
    width = max(len(o) for o in own)
    input_ids = torch.tensor([[pad_id] * (width - len(o)) + o for o in own], device=device)
    own_mask = torch.tensor([[0] * (width - len(o)) + [1] * len(o) for o in own], device=device)
    attention_mask = torch.cat([own_mask.new_ones((len(own), shared)), own_mask], dim=1)
    positions = shared + (own_mask.cumsum(-1) - 1).clamp(min=0)
    # Only the last position's logits are needed: skipping the rest saves the LM head's work
    # over every prompt token (a fifth of the prefill on a 49k-token vocabulary).
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    alive = list(range(len(prompts)))  # original row of each live row
    tokens: list[list[int]] = [[] for _ in alive]
    matchers = grammar.matchers(len(prompts)) if grammar else None
    letter_logits: list[list[list[float]]] = [[] for _ in alive]
    letter_index = torch.tensor(letter_ids, device=device) if letter_ids else None
    for step in range(max_new_tokens):
        if letter_index is not None:
            for row, values in zip(alive, logits[:, letter_index].float().tolist()):
                letter_logits[row].append(values)
        if grammar:
            grammar.mask(logits, [matchers[row] for row in alive], steps_left=max_new_tokens - step)
        next_tokens = logits.argmax(-1)
        keep = []
        for position, (row, token) in enumerate(zip(alive, next_tokens.tolist())):
            tokens[row].append(token)
            if grammar:
                grammar.accept(matchers[row], token)
            if on_token:
                on_token(row, token, letter_logits[row][-1] if letter_index is not None else None)
            if token not in stop_ids and not (stopped and stopped(row)):
                keep.append(position)
        if not keep or step == max_new_tokens - 1:
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


def resolve_decoder(decoder: str, device) -> str:
    """``auto``: the compiled static decoder on CUDA, where a step's host cost is what sets the pace;
    the pruned one elsewhere, whose CPU answers are the pipeline's reference bytes and need no
    minutes of compiling (docs/performance.md)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: choose one of {list(DECODERS)}")
    if decoder != AUTO_DECODER:
        return decoder
    return COMPILED if torch.device(device).type == "cuda" else PRUNED


def greedy_decoder(model, decoder: str) -> Callable:
    """``greedy_pruned``'s call with the model bound, for a resolved ``decoder``."""
    if decoder == PRUNED:
        return partial(greedy_pruned, model)
    from medjson.model.static_decoding import greedy_static, static_decoder

    return partial(greedy_static, static_decoder(model, compiled=decoder == COMPILED))


LETTER_PREFIX = re.compile(r'"predicted_category"\s*:\s*"$')


def letter_token_ids(tokenizer) -> list[int] | None:
    """The single-token ids of A, B, C, D, or None where a letter is not one token."""
    ids = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in LETTERS]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def letter_probabilities(tokenizer, tokens: list[int], per_step: list[list[float]], letter_ids: list[int]):
    """Softmax over A-D at the step that wrote the value of `predicted_category`, or None."""
    wanted = set(letter_ids)
    for step, token in enumerate(tokens[: len(per_step)]):
        if token in wanted and LETTER_PREFIX.search(tokenizer.decode(tokens[:step])):
            probs = torch.softmax(torch.tensor(per_step[step], dtype=torch.float64), dim=0)
            return tuple(float(p) for p in probs)
    return None


def left_padded(rows: list[list[int]], pad_id: int) -> dict:
    """Token rows as one batch, padded on the left (a row's last token is where its answer begins)."""
    width = max(len(row) for row in rows)
    return {
        "input_ids": torch.tensor([[pad_id] * (width - len(row)) + row for row in rows]),
        "attention_mask": torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows]),
    }


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    enable_thinking: bool,
    batch_size: int,
    max_new_tokens: int,
    temperature: float | None = None,
    progress: str | None = None,
    grammar=None,
    stopped: Callable[[int], bool] | None = None,
    on_token: Callable[[int, int, list[float] | None], None] | None = None,
    decoder: str = PRUNED,
) -> GenerationRun:
    """Answers to every conversation; greedy unless a temperature is given, and masked by
    ``grammar`` when one is given (greedy only). ``stopped(i)`` true: conversation i is no longer
    wanted, and its row stops generating; ``on_token(i, token, letter_logits)`` hears each of its
    tokens as it is chosen (both greedy only). ``decoder``: which greedy decoder (``DECODERS``;
    ``auto`` resolved by ``resolve_decoder``)."""
    if grammar is not None and temperature:
        raise ValueError("constrained decoding is greedy: pass no temperature with a grammar")
    greedy = None if temperature else greedy_decoder(model, resolve_decoder(decoder, model.device))
    prompts = [render_prompt(tokenizer, messages, enable_thinking) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    stop_ids = end_of_turn_ids(tokenizer)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs: dict[int, Generated] = {}
    letter_ids = None if temperature else letter_token_ids(tokenizer)
    started = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=progress or "generate", unit="q", disable=progress is None)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            # The chat template already wrote every special token the model needs; the messages' own text
            # is read as plain text (``prompt_ids``).
            rows_in = [prompt_ids(tokenizer, conversations[i], enable_thinking) for i in batch]
            encoded = {
                key: value.to(model.device) for key, value in left_padded(rows_in, tokenizer.pad_token_id).items()
            }
            if temperature:
                generated = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
                rows = generated[:, encoded["input_ids"].shape[1] :].tolist()
                per_step = [[] for _ in rows]
            else:
                unpadded = [
                    ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
                ]
                rows, per_step = greedy(
                    unpadded,
                    tokenizer.pad_token_id,
                    max_new_tokens,
                    set(stop_ids),
                    grammar=grammar,
                    letter_ids=letter_ids,
                    stopped=(lambda row, batch=batch: stopped(batch[row])) if stopped else None,
                    on_token=(lambda row, *chosen, batch=batch: on_token(batch[row], *chosen)) if on_token else None,
                )
            for index, row, steps in zip(batch, rows, per_step):
                count = _count_new_tokens(row, set(stop_ids))
                text = tokenizer.decode(row[:count], skip_special_tokens=True)
                probs = letter_probabilities(tokenizer, row[:count], steps, letter_ids) if letter_ids else None
                ended = count > 0 and row[count - 1] in stop_ids
                outputs[index] = Generated(text=text, new_tokens=count, ended=ended, letter_probs=probs)
            bar.update(len(batch))
            bar.set_postfix(q_per_s=f"{bar.n / (time.perf_counter() - started):.2f}")
    finally:
        tokenizer.padding_side = previous_side
        bar.close()
    return GenerationRun([outputs[i] for i in range(len(prompts))], time.perf_counter() - started)
