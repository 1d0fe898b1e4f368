"""Stage `grpo`: TRL GRPO with rule-based rewards, from the merged SFT model, with a LoRA.

Guards against the ways GRPO can silently learn nothing:
- the starting model must be this pipeline's merged SFT model, never the base;
- before training, rollouts sampled at the configured temperature show whether the
  rewards can vary at all (GRPO learns nothing from groups of equal rewards);
- during training, N logged steps in a row with zero reward variance in every group
  stop the run with an error naming the likely causes;
- every few steps the policy answers the held-out prompts greedily, as the evaluation does,
  and every reward is measured on those answers (``medjson.training.heldout_rewards``): the on-policy
  training reward alone cannot show whether anything was learned.

    python -m medjson.stages.grpo --model models/sft_merged --train data/pools/grpo.jsonl \
        --heldout data/pools/heldout.jsonl --adapter models/grpo_adapter --curves training/grpo \
        --summary metrics/grpo_training.json --scratch checkpoints/grpo
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.prompts import LETTERS
from medjson.core.records import GRPO_KEYS, read_pool, write_json
from medjson.errors import StageError
from medjson.model.lineage import check_starts_from_sft, write_base_record
from medjson.model.modeling import lora_config
from medjson.params import Params
from medjson.training.checkpoints import mark_finished, run_identity, shared_resume_point
from medjson.training.configs import TrainingPaths, TrainingSetup, launch_view, start_training, training_setup
from medjson.training.parallel import (
    check_vllm,
    from_main_process,
    grpo_batch_layout,
    is_main_process,
    log_layout,
)
from medjson.training.rewards import HELDOUT_REWARD, HELDOUT_TOP_LETTER, REWARDS, check_reward_weights, weighted_rewards

log = logging.getLogger("medjson.grpo")

PARAMS_READ = ("seed", "model", "grpo", "launch")  # the params.yaml sections this stage reads (dvc.yaml lists the same)
BEST_HELDOUT_WEIGHTS = "heldout_best.safetensors"  # in the scratch folder: grpo.heldout.keep_best's policy

COLLAPSE_CAUSES = (
    "likely causes: rollouts never valid JSON (temperature too high, or the SFT model did not learn the format), "
    "a think block before the JSON (enable_thinking must be false everywhere), completions cut at "
    "max_completion_length, or every completion in a group equally right or wrong"
)


def preflight(model, tokenizer, records: list[dict], params: Params, config) -> dict:
    """Sample rollouts as GRPO will (``config``: the built ``GRPOConfig``), and report how many are
    valid JSON and whether rewards vary."""
    from medjson.model.generation import generate

    picked = records[: params.grpo.guard.preflight_prompts]
    generations = config.num_generations
    conversations = [r["messages"] for r in picked for _ in range(generations)]
    answers = [r["answer"] for r in picked for _ in range(generations)]
    run = generate(
        model,
        tokenizer,
        conversations,
        params.model.enable_thinking,
        batch_size=len(conversations) or 1,
        max_new_tokens=config.max_completion_length,
        temperature=config.temperature,
    )
    texts = [o.text for o in run.outputs]
    totals, _ = weighted_rewards(texts, answers, params.grpo.rewards)
    groups = [totals[i : i + generations] for i in range(0, len(totals), generations)]
    varying = sum(1 for g in groups if len(set(g)) > 1)
    valid = sum(REWARDS["valid_json"](texts))
    log.info(
        "preflight: %d/%d rollouts valid JSON; %d/%d prompt groups with varying reward",
        valid,
        len(texts),
        varying,
        len(groups),
    )
    if texts:
        log.info("preflight sample rollout: %r", texts[0][:300])
    if groups and varying == 0:
        log.warning("preflight: no prompt group has any reward variance; GRPO may learn nothing (%s)", COLLAPSE_CAUSES)
    return {
        "preflight_valid_json_rate": valid / max(len(texts), 1),
        "preflight_varying_groups": varying / max(len(groups), 1),
    }


def summarize(history: list[dict], heldout: list[dict], preflight_stats: dict, steps: int) -> dict:
    """Reward at the start and end of training, on-policy (``history``) and on the held-out prompts
    (``heldout``: first and last measurement), and how often groups had nothing to learn from."""
    from medjson.training.heldout import start_and_end

    rewards = [h["reward"] for h in history if "reward" in h]
    heldout_keys = [key for key in (heldout[0] if heldout else {}) if key != "step"]
    window = max(1, len(rewards) // 4)
    return {
        "steps": steps,
        "reward_start": statistics.fmean(rewards[:window]) if rewards else 0.0,
        "reward_end": statistics.fmean(rewards[-window:]) if rewards else 0.0,
        "frac_reward_zero_std_mean": statistics.fmean(h["frac_reward_zero_std"] for h in history) if history else 1.0,
        "clipped_ratio_mean": statistics.fmean(h.get("completions/clipped_ratio", 0.0) for h in history)
        if history
        else 0.0,
        **{name: value for key in heldout_keys for name, value in start_and_end(heldout, key).items()},
        **preflight_stats,
    }


def train_grpo(params: Params, paths: TrainingPaths, processes: int = 1) -> dict:
    """Train from the merged SFT model (``paths.model``), resuming only an interrupted run of the same
    identity; stop on a collapse of the reward's variance; save the adapter and the summary."""
    # 1. Settings (the rewards first: a misspelt one is refused before torch's import), the starting
    # model's lineage (never the base) and the prompts, checked before it loads.
    setup, layout = grpo_setup(params, paths.model, paths.scratch, processes)
    check_starts_from_sft(paths.model, params.model.base)
    records = read_pool(paths.train, GRPO_KEYS, LETTERS)
    heldout = read_pool(paths.heldout, GRPO_KEYS, LETTERS)
    identity = run_identity("medjson.stages.grpo", params.view(*PARAMS_READ) | layout, paths.train, setup.start)
    resume = shared_resume_point(paths.scratch, identity)
    # 2. Model, a preflight of its rollouts, and the trainer, whose libraries are imported only now.
    from transformers import set_seed

    from medjson.training.curves import LiveCurves
    from medjson.training.guards import GrpoMonitor

    set_seed(setup.config.seed)  # grpo.seed, else the top-level seed
    tokenizer = setup.load_tokenizer()
    model = setup.load_model()
    # Once, on the main process; every process gets its verdict.
    preflight_stats = from_main_process(lambda: preflight(model, tokenizer, records, params, setup.config))
    monitor = GrpoMonitor(params.grpo.guard.max_zero_std_logs)
    trainer, watch = build_trainer(setup, model, tokenizer, records, heldout, LiveCurves(paths.curves), [monitor])
    # 3. Train.
    trainer.train(resume_from_checkpoint=resume)
    if monitor.collapsed_at is not None:
        raise StageError(
            f"GRPO stopped at step {monitor.collapsed_at}: every prompt group had zero reward variance for "
            f"{params.grpo.guard.max_zero_std_logs} logged steps in a row, so nothing was being learned; "
            f"{COLLAPSE_CAUSES}"
        )
    # 4. Save: the Trainer writes the adapter from the main process; the rest is written there too.
    trainer.save_model(str(paths.adapter))
    kept = watch.kept or {}  # the held-out measurement of the policy the adapter is (grpo.heldout.keep_best)
    summary = {
        **summarize(monitor.history, watch.history, preflight_stats, trainer.state.global_step),
        "heldout_kept_step": watch.kept_step,
        **{f"{key}_kept": kept[key] for key in (HELDOUT_REWARD, HELDOUT_TOP_LETTER) if key in kept},
        **layout,
    }
    if is_main_process():
        write_base_record(paths.adapter, setup.start, setup.source)
        write_json(paths.summary, summary)
        mark_finished(paths.scratch, identity)
        log.info("GRPO summary: %s", summary)
    return summary


def build_trainer(
    setup: TrainingSetup, model, tokenizer, records: list[dict], heldout: list[dict], curves, callbacks: list
):
    """A GRPOTrainer ready to train ``model`` on the prompts of ``records`` with every reward of
    ``grpo.rewards``, writing onto ``curves`` (a ``LiveCurves``), watching the held-out pool (the
    ``HeldoutRewards`` returned beside it) and stopping on a non-finite loss; split out so the GPU
    benchmark times the stage's own trainer."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from medjson.training.guards import FiniteGuard
    from medjson.training.heldout_rewards import HeldoutRewards

    params = setup.params
    dataset = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in records])
    log.info("GRPO prompts: %d", len(dataset))
    watch = HeldoutRewards(
        tokenizer,
        heldout,
        params.grpo.rewards,
        params.model.enable_thinking,
        max_new_tokens=setup.config.max_completion_length,  # the budget the policy is trained to answer within
        batch_size=params.grpo.heldout.batch_size,
        every=params.grpo.heldout.eval_steps,
        curves=curves,
        best_weights=Path(setup.config.output_dir) / BEST_HELDOUT_WEIGHTS if params.grpo.heldout.keep_best else None,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[REWARDS[name] for name in params.grpo.rewards],  # weighted in the config
        args=setup.config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(params.grpo.lora),
        callbacks=[curves, *callbacks, watch, FiniteGuard(setup.precision, "grpo")],
    )
    return trainer, watch


def grpo_setup(params: Params, model_dir: Path, scratch: Path, processes: int):
    """The run's settings checked for this many processes (``check_launch``), then precision,
    ``GRPOConfig`` and starting model resolved once; and the batch layout."""
    layout = check_launch(params, processes)
    return training_setup(params, "grpo", scratch, str(model_dir), None), layout


def check_launch(params: Params, processes: int) -> dict:
    """The settings of a run in ``processes`` processes, checked before any starts: rewards, vLLM and the
    batch layout (from the trainer section over TRL's defaults)."""
    check_reward_weights(params.grpo.rewards, params.path)
    values = launch_view(params, "grpo")
    check_vllm(values)
    layout = grpo_batch_layout(values, processes)
    log_layout("grpo", layout)
    return layout


def main() -> None:
    parser = stage_parser(__doc__, "model", "train", "heldout", "adapter", "curves", "summary", "scratch")
    params, paths, processes = start_training(parser, "medjson.stages.grpo", "grpo", check_launch, PARAMS_READ)
    train_grpo(params, paths, processes)


if __name__ == "__main__":
    run_stage(main)
