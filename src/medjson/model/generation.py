"""Batched generation with left padding: the evaluation's inference path and GRPO's preflight.

Prompts are sorted by length so each batch pads little, generated in batches, and
returned in the caller's order. Greedy decoding runs through the decoder ``model.decoder`` names
(``pruned_decoding`` on CPU, ``static_decoding`` on a GPU); sampling uses ``generate``. Only new
tokens are decoded.
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
from medjson.model.pruned_decoding import GreedyBatch, greedy_pruned


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
                    GreedyBatch(
                        unpadded,
                        tokenizer.pad_token_id,
                        max_new_tokens,
                        set(stop_ids),
                        grammar=grammar,
                        letter_ids=letter_ids,
                        stopped=(lambda row, batch=batch: stopped(batch[row])) if stopped else None,
                        on_token=(lambda row, *chosen, batch=batch: on_token(batch[row], *chosen))
                        if on_token
                        else None,
                    )
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
