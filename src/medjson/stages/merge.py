"""Stage `merge`: an adapter merged onto the exact base it was trained on, saved as a full model.

Runs twice in the DAG (``merge@sft``, ``merge@grpo``); evaluation only ever loads
full models. The output is an ordinary safetensors folder with the tokenizer and a
generation config whose end-of-sequence ids include the chat end-of-turn token.

    python -m medjson.stages.merge --adapter models/sft_adapter --out models/sft_merged
"""

from __future__ import annotations

import logging
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.errors import StageError
from medjson.model.lineage import base_identity, check_same_base, read_base_record, write_merge_lineage
from medjson.model.modeling import (
    FP32,
    ModelSource,
    dtype_named,
    end_of_turn_ids,
    load_model,
    load_tokenizer,
    resolve_source,
)

log = logging.getLogger("medjson.merge")

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def load_adapter_model(adapter_dir: Path):
    """Base (fp32, CPU) with the adapter applied, not merged; checks the base is the one recorded (and the
    folder, before peft's import: a broken one is answered at once)."""
    record = read_base_record(adapter_dir)
    if not any((Path(adapter_dir) / name).is_file() for name in ADAPTER_WEIGHTS):
        raise StageError(
            f"{adapter_dir} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}): the training stage did not "
            "finish saving; re-run it (dvc repro)"
        )
    source = resolve_source(record["base"], record["revision"])
    check_same_base(record, base_identity(source, record["base"]), f"merge {adapter_dir}")
    from peft import PeftModel

    base = load_model(source, FP32, on_accelerator=False)
    return PeftModel.from_pretrained(base, str(adapter_dir)), record


def merge_adapter(adapter_dir: Path, out_dir: Path) -> Path:
    model, record = load_adapter_model(adapter_dir)
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(ModelSource(str(adapter_dir)))  # the trainer saved it beside the adapter
    generation = merged.generation_config
    configured = generation.eos_token_id
    configured = [] if configured is None else ([configured] if isinstance(configured, int) else list(configured))
    generation.eos_token_id = sorted(set(configured) | set(end_of_turn_ids(tokenizer)))
    generation.pad_token_id = tokenizer.pad_token_id
    storage = dtype_named(record.get("storage_dtype"))
    merged.to(storage).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    write_merge_lineage(out_dir, adapter_dir, record, str(storage).replace("torch.", ""))
    log.info("saved merged model to %s (%s, eos ids %s)", out_dir, storage, generation.eos_token_id)
    return out_dir


def main() -> None:
    parser = stage_parser(__doc__, "adapter", "out", reads_params=False)
    args = parser.parse_args()
    merge_adapter(args.adapter, args.out)


if __name__ == "__main__":
    run_stage(main)
