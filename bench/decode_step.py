"""The host's cost of one greedy decoding step, measured on CPU at Qwen3-0.6B's depth and a tiny width.

At 28 layers and a hidden size of 64 the arithmetic is negligible, so what a step costs here is what
it costs the host to run it: dispatching each layer's operations from Python (the eager decoders), or
running one compiled graph (the compiled one). On a GPU that host time is what a step cannot go
below however fast the card is (docs/performance.md). For each batch and decoder, one line of JSON:

    {"layers": 28, "batch": B, "decoder": NAME, "ms_per_step": X, "compile_s": S}

- ``pruned``: the pipeline's decoder on CPU (``medjson.model.pruned_decoding.greedy_pruned``);
- ``static``: ``medjson.model.static_decoding.greedy_static`` on its preallocated cache, step eager;
- ``compiled``: the same with its step under ``torch.compile`` (inductor, C++ wrapper); ``compile_s``
  is the first call's time over a warm one's, spent compiling its graph.

A step's cost is the difference between a run of ``--steps`` new tokens and one of 4, divided by the
difference in steps, so the prefill cancels out. Every row runs the full budget (no stop tokens).

    python bench/decode_step.py                      # 28 layers, batch 1 and 64: ~8 minutes on 2 cores
    python bench/decode_step.py --tiny               # 2 layers, batch 1 and 4, no compiling: the check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import ROOT, machine

DECODERS = ("pruned", "static", "compiled")


def tiny_width_qwen3(layers: int):
    """Qwen3's architecture at ``layers`` deep and a width small enough that a step is all overhead."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
    )
    return Qwen3ForCausalLM(config).eval()


def prompts(batch: int, shared: int = 64, own: int = 40) -> list[list[int]]:
    """``batch`` prompts sharing ``shared`` tokens (a system prompt and chat markers, as real ones do),
    each with up to ``own`` of its own."""
    generator = torch.Generator().manual_seed(1)
    prefix = torch.randint(5, 1000, (shared,), generator=generator).tolist()
    return [prefix + torch.randint(5, 1000, (own - (row % 7),), generator=generator).tolist() for row in range(batch)]


def decode(model, decoder: str, rows: list[list[int]], steps: int) -> float:
    from medjson.model.generation import greedy_decoder
    from medjson.model.pruned_decoding import GreedyBatch

    started = time.perf_counter()
    greedy_decoder(model, decoder)(GreedyBatch(rows, 0, steps, set()))
    return time.perf_counter() - started


def measure(model, decoder: str, batch: int, steps: int) -> dict:
    rows = prompts(batch)
    first = decode(model, decoder, rows, steps)  # compiles the step (compiled), warms allocator and caches
    short = min(decode(model, decoder, rows, 4) for _ in range(2))
    full = min(decode(model, decoder, rows, steps) for _ in range(2))
    return {
        "layers": model.config.num_hidden_layers,
        "batch": batch,
        "decoder": decoder,
        "ms_per_step": (full - short) * 1000 / (steps - 4),
        "compile_s": round(max(first - full, 0.0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--steps", type=int, default=64, help="new tokens per timed run")
    parser.add_argument("--decoders", nargs="+", choices=DECODERS, default=list(DECODERS))
    parser.add_argument("--tiny", action="store_true", help="2 layers, batches 1 and 4, no compiling")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_step.jsonl")
    args = parser.parse_args()
    if args.tiny:
        args.layers, args.batches, args.steps = 2, [1, 4], 12
        args.decoders = [d for d in args.decoders if d != "compiled"]
    model = tiny_width_qwen3(args.layers)
    print(f"host time per decoding step on {machine()}, {args.layers} layers, hidden 64", flush=True)
    lines = []
    for batch in args.batches:
        for decoder in args.decoders:
            row = measure(model, decoder, batch, args.steps)
            lines.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["batch"], r["decoder"]): r["ms_per_step"] for r in lines}
    for batch in args.batches:
        if (batch, "pruned") in by:
            ratios = ", ".join(
                f"{d} {by[batch, d] / by[batch, 'pruned']:.2f}x" for d in args.decoders if (batch, d) in by
            )
            print(f"batch {batch}: step time relative to pruned: {ratios}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps({**r, "machine": machine()}) + "\n" for r in lines))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
