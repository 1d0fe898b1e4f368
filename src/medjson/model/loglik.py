"""Log-likelihood scoring of multiple-choice continuations, computed the way lm-evaluation-harness does.

For each (context, continuation) pair the harness encodes the context and the context joined
with the continuation, takes the tokens past the context's encoding as the continuation's,
runs the model on context + continuation less the last token, and sums the log-probabilities
of the continuation's tokens (``HFLM._encode_pair`` and ``_loglikelihood_tokens``). No special
tokens are added and no chat template is applied, as in the harness's defaults. Identical model
inputs are run once: with one-token continuations (`` A`` in most tokenizers) a question costs
one forward pass for all four letters.
"""

from __future__ import annotations

import time

import torch
from tqdm import tqdm


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    # The harness moves trailing spaces of the context onto the continuation before encoding.
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    return context_ids, whole_ids[len(context_ids) :]


@torch.inference_mode()
def continuation_logliks(
    model,
    tokenizer,
    contexts: list[str],
    continuations: tuple[str, ...],
    batch_size: int,
    progress: str | None = None,
) -> tuple[list[list[float]], float]:
    """Per context, the summed log-probability of each continuation after it; and the seconds it took."""
    started = time.perf_counter()
    requests = []  # (context index, continuation index, model input, continuation tokens)
    for index, context in enumerate(contexts):
        for choice, continuation in enumerate(continuations):
            context_ids, continuation_ids = _encode_pair(tokenizer, context, continuation)
            if not continuation_ids:
                raise ValueError(f"continuation {continuation!r} encodes to no tokens after context {index}")
            requests.append((index, choice, tuple((context_ids + continuation_ids)[:-1]), continuation_ids))
    by_input: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests it serves
    for number, request in enumerate(requests):
        by_input.setdefault(request[2], []).append(number)
    inputs = sorted(by_input, key=lambda ids: (-len(ids), ids))  # longest first, as the harness does
    scores = [[0.0] * len(continuations) for _ in contexts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    bar = tqdm(total=len(inputs), desc=progress or "log-likelihood", unit="seq", disable=progress is None)
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        width = len(batch[0])
        # Left padding, padding masked and skipped by the positions: every row sees exactly its own
        # tokens, and its last ones line up, so only the last few positions' logits are computed
        # (a T4 could not hold 64 prompts x 250 positions x Qwen3's 152k-word vocabulary).
        ids = torch.tensor([[pad_id] * (width - len(row)) + list(row) for row in batch], device=device)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(requests[n][3]) for row in batch for n in by_input[row])
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        for row, row_logits in zip(batch, logits):
            for number in by_input[row]:
                index, choice, _, continuation_ids = requests[number]
                # Logits at position i rate token i + 1: the continuation's are the last len(continuation).
                rated = torch.log_softmax(row_logits[keep - len(continuation_ids) :].float(), dim=-1)
                scores[index][choice] = float(sum(rated[k, token] for k, token in enumerate(continuation_ids)))
        bar.update(len(batch))
    bar.close()
    return scores, time.perf_counter() - started
