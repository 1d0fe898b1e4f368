"""Stage `sft`: LoRA supervised fine-tuning that teaches the model to answer in strict JSON.

The loss covers the assistant turn only, end-of-turn token included, so the model
learns to stop after the JSON. Prompts are rendered with the same
``enable_thinking`` setting that GRPO rollouts and evaluation use. The loss on the held-out
pool, which no stage trains on, is measured before the first step and every
``sft.trainer.eval_steps`` after (``medjson.training.heldout``), so overfitting shows.

    python -m medjson.stages.sft --train data/pools/sft.jsonl --heldout data/pools/heldout.jsonl --adapter models/sft_adapter \
        --curves training/sft --summary metrics/sft_training.json --scratch checkpoints/sft [--processes 2]
"""

from __future__ import annotations

import logging
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.records import SFT_KEYS, read_pool, write_json
from medjson.errors import StageError
from medjson.model.lineage import write_base_record
from medjson.model.modeling import lora_config
from medjson.params import Params
from medjson.training.checkpoints import mark_finished, run_identity, shared_resume_point
from medjson.training.configs import TrainingPaths, TrainingSetup, launch_view, start_training, training_setup
from medjson.training.parallel import batch_layout, is_main_process, log_layout

log = logging.getLogger("medjson.sft")

PARAMS_READ = ("seed", "model", "sft", "launch")  # the params.yaml sections this stage reads (dvc.yaml lists the same)


def sft_dataset(records: list[dict], enable_thinking: bool):
    """Prompt/completion rows; TRL renders both with the chat template and masks the prompt."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": r["messages"],
                "completion": [{"role": "assistant", "content": r["target"]}],
                "chat_template_kwargs": {"enable_thinking": enable_thinking},
            }
            for r in records
        ]
    )


def drop_overlong(records: list[dict], tokenizer, max_length: int, enable_thinking: bool) -> list[dict]:
    """Examples that fit ``max_length`` whole; the rest are dropped and counted.

    Truncation would cut the end of the sequence, which is the JSON answer and its
    end-of-turn token: the model would learn unterminated answers.
    """
    kept = []
    for record in records:
        conversation = record["messages"] + [{"role": "assistant", "content": record["target"]}]
        ids = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, enable_thinking=enable_thinking
        )
        if len(ids["input_ids"]) <= max_length:
            kept.append(record)
    if len(kept) < len(records):
        log.warning(
            "dropped %d of %d SFT examples longer than max_length %d tokens",
            len(records) - len(kept),
            len(records),
            max_length,
        )
    return kept


def sft_setup(params: Params, scratch: Path) -> TrainingSetup:
    """Precision, ``SFTConfig`` and the pretrained base, resolved once."""
    return training_setup(params, "sft", scratch, params.model.base, params.model.revision)


def build_trainer(setup: TrainingSetup, records: list[dict], heldout: list[dict], train_path: Path, callbacks: list):
    """An SFTTrainer ready to train from the setup's base on ``records``, measuring its loss on
    ``heldout`` as ``sft.trainer``'s eval settings say; split out so tests can inspect its collated batches."""
    from transformers import set_seed
    from trl import SFTTrainer

    params, config = setup.params, setup.config
    set_seed(params.seed)
    tokenizer = setup.load_tokenizer()
    records = drop_overlong(records, tokenizer, config.max_length, params.model.enable_thinking)
    if not records:
        raise StageError(
            f"{train_path}: no SFT example fits sft.trainer.max_length = {config.max_length} tokens; "
            "raise max_length or lower prepare.reason_max_chars"
        )
    dataset = sft_dataset(records, params.model.enable_thinking)
    log.info("SFT examples: %d", len(dataset))
    heldout = drop_overlong(heldout, tokenizer, config.max_length, params.model.enable_thinking)
    return SFTTrainer(
        model=setup.load_model(),
        args=config,
        train_dataset=dataset,
        eval_dataset=sft_dataset(heldout, params.model.enable_thinking),
        processing_class=tokenizer,
        peft_config=lora_config(params.sft.lora),
        callbacks=callbacks,
    )


def train_sft(params: Params, paths: TrainingPaths, processes: int = 1, extra_callbacks: list | None = None) -> dict:
    """Train, resuming only an interrupted run of the same identity, and save the adapter (in every
    process of a data-parallel run; the main one writes)."""
    from medjson.training.curves import LiveCurves
    from medjson.training.guards import FiniteGuard
    from medjson.training.heldout import HeldoutLossWatch, start_and_end

    # 1. Settings, data and the scratch folder, checked before the model loads.
    layout = check_launch(params, processes)
    setup = sft_setup(params, paths.scratch)
    records = read_pool(paths.train, SFT_KEYS)
    heldout = read_pool(paths.heldout, SFT_KEYS)
    identity = run_identity("medjson.stages.sft", params.view(*PARAMS_READ) | layout, paths.train, setup.start)
    resume = shared_resume_point(paths.scratch, identity)
    if resume:  # the first held-out loss is in the checkpoint's log history already
        setup.config.eval_on_start = False
    # 2. Model, data and trainer.
    callbacks = [
        LiveCurves(paths.curves),
        HeldoutLossWatch(),
        FiniteGuard(setup.precision, "sft"),
        *(extra_callbacks or []),
    ]
    trainer = build_trainer(setup, records, heldout, paths.train, callbacks)
    if is_main_process():
        trainer.model.print_trainable_parameters()
    # 3. Train.
    result = trainer.train(resume_from_checkpoint=resume)
    # 4. Save: the adapter (every process of a data-parallel run), then the main process's records.
    trainer.save_model(str(paths.adapter))
    summary = {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        **start_and_end(trainer.state.log_history, "eval_loss", "heldout_loss"),
        **layout,
    }
    if is_main_process():
        write_base_record(paths.adapter, setup.start, setup.source)
        if paths.summary is not None:
            write_json(paths.summary, summary)
        mark_finished(paths.scratch, identity)
        log.info("saved adapter to %s after %d steps", paths.adapter, trainer.state.global_step)
    return {**summary, "resumed_from": resume}


def check_launch(params: Params, processes: int) -> dict:
    """The batch layout of a run in ``processes`` processes, logged before any starts."""
    layout = batch_layout(launch_view(params, "sft"), processes)
    log_layout("sft", layout)
    return layout


def main() -> None:
    parser = stage_parser(__doc__, "train", "heldout", "adapter", "curves", "summary", "scratch")
    params, paths, processes = start_training(parser, "medjson.stages.sft", "sft", check_launch, PARAMS_READ)
    train_sft(params, paths, processes)


if __name__ == "__main__":
    run_stage(main)
