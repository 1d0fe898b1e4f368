"""Batched generation with left padding: the evaluation's inference path and GRPO's preflight.

Prompts are sorted by length so each batch pads little, generated in batches, and
returned in the caller's order. Only new tokens are decoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from medjson.modeling import end_of_turn_ids
from medjson.prompts import render_prompt


@dataclass(frozen=True)
class Generated:
    text: str
    new_tokens: int  # up to and including the end-of-turn token


@dataclass(frozen=True)
class GenerationRun:
    outputs: list[Generated]
    seconds: float

    @property
    def new_tokens(self) -> int:
        return sum(o.new_tokens for o in self.outputs)


def _count_new_tokens(row: torch.Tensor, stop_ids: set[int]) -> int:
    for index, token in enumerate(row.tolist()):
        if token in stop_ids:
            return index + 1
    return len(row)


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
) -> GenerationRun:
    """Answers to every conversation; greedy unless a temperature is given."""
    prompts = [render_prompt(tokenizer, messages, enable_thinking) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    stop_ids = end_of_turn_ids(tokenizer)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature else {"do_sample": False}
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs: dict[int, Generated] = {}
    started = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=progress or "generate", unit="q", disable=progress is None)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            # The chat template already wrote every special token the model needs.
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = encoded.to(model.device)
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
            new = generated[:, encoded["input_ids"].shape[1] :].cpu()
            for index, row in zip(batch, new):
                count = _count_new_tokens(row, set(stop_ids))
                text = tokenizer.decode(row[:count], skip_special_tokens=True)
                outputs[index] = Generated(text=text, new_tokens=count)
            bar.update(len(batch))
            bar.set_postfix(q_per_s=f"{bar.n / (time.perf_counter() - started):.2f}")
    finally:
        tokenizer.padding_side = previous_side
        bar.close()
    return GenerationRun([outputs[i] for i in range(len(prompts))], time.perf_counter() - started)
