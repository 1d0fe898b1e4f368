"""GRPO cost per optimizer step, and the share of it spent generating rollouts.

Runs TRL's GRPOTrainer with the project's GRPO settings from params.yaml (LoRA,
rewards, 8 prompts x 4 generations per optimizer step, 128 completion tokens) for a
few steps, timing the trainer's generation calls separately.

    python bench/grpo_step.py --random-qwen3-0.6b --steps 3     # on a GPU
    python bench/grpo_step.py --tiny --steps 2                  # smoke run on CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, conversations, random_qwen3_06b, report, timed_generation, tiny_qwen3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--random-qwen3-0.6b", dest="random_qwen3", action="store_true")
    which.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grpo_step.json")
    args = parser.parse_args()

    from datasets import Dataset
    from trl import GRPOTrainer

    from medjson.model.modeling import lora_config, resolve_precision
    from medjson.params import load_params
    from medjson.training.configs import stage_trainer_config
    from medjson.training.rewards import REWARDS

    params = load_params(ROOT / "params.yaml")
    model, tokenizer = random_qwen3_06b(torch.float32) if args.random_qwen3 else tiny_qwen3()
    config = stage_trainer_config(params, "grpo", Path(tempfile.mkdtemp()), resolve_precision(params.model.precision))
    config.max_steps, config.save_strategy, config.logging_steps, config.log_completions = (
        args.steps + 1,
        "no",
        1,
        False,
    )
    prompts_per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps // config.num_generations
    convs = conversations(prompts_per_step * (args.steps + 1))
    dataset = Dataset.from_list([{"prompt": c, "answer": "A"} for c in convs])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[REWARDS[n] for n in params.grpo.rewards],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(params.grpo.lora),
    )

    generation_seconds = timed_generation(trainer)
    step_windows = []  # (start, end) of each optimizer step

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_windows.append((self.started, time.perf_counter()))

    trainer.add_callback(StepTimer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # The first optimizer step warms up. TRL generates a whole step's rollouts at once or per
    # micro-batch depending on its settings, so generation time is summed by when it ran.
    measured = step_windows[1:]
    step = sum(end - start for start, end in measured) / len(measured)
    generation = sum(d for t, d in generation_seconds if any(s <= t <= e for s, e in measured)) / len(measured)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    rows = [
        {
            "prompts_per_step": prompts_per_step,
            "generations": config.num_generations,
            "max_completion_length": config.max_completion_length,
            "s_per_optimizer_step": step,
            "s_generating": generation,
            "generation_share": generation / step,
            "peak_gib": peak,
        }
    ]
    report(f"GRPO optimizer step ({args.steps} timed after one warm-up)", rows, args.out)


if __name__ == "__main__":
    main()
