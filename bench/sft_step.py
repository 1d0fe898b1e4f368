"""SFT cost per optimizer step and peak memory: the project's settings against the notebook's.

Both runs use the same model, LoRA (r16 on q/k/v/o) and sequence length; only the
batch layout and gradient checkpointing differ:
- notebook: micro-batch 4 x gradient accumulation 4, gradient checkpointing on;
- project: the layout in params.yaml `sft.trainer` (8 x 2 by default), as configured.
The loop is a plain LoRA training step (forward, backward, AdamW), the part of
SFTTrainer that costs time and memory.

    python bench/sft_step.py --random-qwen3-0.6b --seq-len 320 --also-single-pass   # on a GPU
    python bench/sft_step.py --tiny --seq-len 320                      # smoke run on CPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import ROOT, random_qwen3_06b, report, tiny_qwen3


def lora_model(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def time_steps(
    model, micro_batch: int, accumulation: int, seq_len: int, checkpointing: bool, steps: int, precision: str
) -> dict:
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    else:
        model.gradient_checkpointing_disable()
    model.train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    vocab = model.config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(0)

    def step():
        for _ in range(accumulation):
            ids = torch.randint(0, vocab, (micro_batch, seq_len), generator=generator).to(device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = model(input_ids=ids, labels=ids).loss / accumulation
            scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"s_per_optimizer_step": seconds, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--random-qwen3-0.6b", dest="random_qwen3", action="store_true")
    which.add_argument("--tiny", action="store_true", help="the tiny random Qwen3 (CPU smoke run)")
    parser.add_argument("--seq-len", type=int, default=320)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--also-single-pass", action="store_true", help="also time one pass of 16 (more memory)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sft_step.json")
    args = parser.parse_args()

    from medjson.model.modeling import resolve_precision

    precision = resolve_precision("auto")
    # Weights stay fp32 under autocast, as the trainers keep them for mixed precision.
    weights_dtype = torch.float32

    def fresh():
        if args.random_qwen3:
            model, _ = random_qwen3_06b(weights_dtype)
        else:
            model, _ = tiny_qwen3()
        return lora_model(model)

    from medjson.params import load_params

    trainer = load_params(ROOT / "params.yaml").sft.trainer
    micro, accumulation = trainer["per_device_train_batch_size"], trainer["gradient_accumulation_steps"]
    checkpointing = trainer.get("activation_checkpointing", False)
    layouts = [
        ("notebook: 4 x accum 4, checkpointing", 4, 4, True),
        (
            f"project default: {micro} x accum {accumulation}, checkpointing {'on' if checkpointing else 'off'}",
            micro,
            accumulation,
            checkpointing,
        ),
    ]
    if args.also_single_pass:
        layouts.append(("one pass of 16, checkpointing", 16, 1, True))
    rows = []
    for name, micro, accumulation, checkpointing in layouts:
        model = fresh()
        result = time_steps(model, micro, accumulation, args.seq_len, checkpointing, args.steps, precision)
        rows.append({"settings": name, "seq_len": args.seq_len, "precision": precision, **result})
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    base = rows[0]["s_per_optimizer_step"]
    for row in rows:
        row["speedup_vs_notebook"] = base / row["s_per_optimizer_step"]
    report(f"SFT optimizer step (16 sequences of {args.seq_len} tokens)", rows, args.out)


if __name__ == "__main__":
    main()
