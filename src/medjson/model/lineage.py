"""Which base an adapter was trained on, recorded beside it and checked before it is used.

An adapter applied to any other base than its own silently produces a different
model (a "GRPO model" that is really the base with a stray adapter, say). Each
adapter folder carries ``medjson_base.json``: the base's model string, its hub
revision, and for local bases a digest of the weights, so ``merge`` can refuse a
mismatch. Each merged model carries ``medjson_lineage.json``, so ``grpo`` can refuse
to start from anything but this pipeline's merged SFT model.
"""

from __future__ import annotations

import json
from pathlib import Path

from medjson.core.records import digest_files
from medjson.errors import StageError
from medjson.model.modeling import ModelSource

RECORD = "medjson_base.json"


# Every file ``from_pretrained`` may read weights or architecture from, in either format.
WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


def weights_digest(source: ModelSource) -> str | None:
    """sha256 over what a local model really loads; None for a hub model (its revision pins it).

    A folder with no weight file in a known format is refused: a digest of nothing would
    let any other model pass as this one.
    """
    if not source.is_local:
        return None
    if source.release:  # rebuilt bit for bit from digested adapters (medjson.model.release)
        from medjson.model.release import read_release

        return read_release(source.path)["weights_sha256"]
    folder = Path(source.path)
    if source.gguf_file:
        files = [folder / source.gguf_file]
    else:
        files = sorted({path for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern)})
        if not any(path.name != "config.json" and not path.name.endswith(".json") for path in files):
            raise StageError(
                f"model folder {folder} has no weights this pipeline can fingerprint (*.safetensors or *.bin): "
                "save it with save_pretrained"
            )
    return digest_files(files, relative_to=folder)


def storage_dtype(source: ModelSource) -> str:
    """The dtype the base's weights are stored in (bfloat16 for Qwen3), so merges keep its size."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(source.path, **source.kwargs()), "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def base_identity(source: ModelSource, spec: str) -> dict:
    """What identifies a base: the model string as params.yaml names it, the hub revision (none for a
    local model), the digest of its weights and the dtype they are stored in. It hashes a local
    base's weights: a stage computes it once and passes it on."""
    return {
        "base": spec,
        "revision": source.revision,  # resolve_source keeps a revision for hub ids only
        "weights_sha256": weights_digest(source),
        "storage_dtype": storage_dtype(source),
    }


def write_base_record(adapter_dir: Path, identity: dict, source: ModelSource) -> None:
    """Record beside an adapter the ``base_identity`` of the model it was trained on, and make the
    adapter's own files name that base as params.yaml does.

    PEFT writes the base's resolved location into ``adapter_config.json`` and the model card
    (an absolute path on this machine, for a local or packaged base) and lists
    ``target_modules`` in set order, which changes from run to run: two runs of the same
    commit would give different files. The spec and a sorted list make them the same bytes.
    """
    adapter_dir = Path(adapter_dir)
    (adapter_dir / RECORD).write_text(json.dumps(identity, indent=2) + "\n")
    config_path = adapter_dir / "adapter_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = identity["base"]
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = adapter_dir / "README.md"
    if card.is_file() and str(source.path) != identity["base"]:
        card.write_text(card.read_text(encoding="utf-8").replace(str(source.path), identity["base"]), encoding="utf-8")


def _read_record(path: Path, writer: str) -> dict:
    """A lineage record as a dict; a corrupt or truncated one is a clear error naming the file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise StageError(f"{path} cannot be read ({err}): re-run {writer} (dvc repro) to write it again") from None
    if not isinstance(record, dict):
        raise StageError(f"{path} holds {type(record).__name__}, not an object: re-run {writer} (dvc repro)")
    return record


def read_base_record(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / RECORD
    if not path.exists():
        raise StageError(f"{path} missing: {adapter_dir} was not written by this pipeline's sft or grpo stage")
    record = _read_record(path, "sft or grpo")
    missing = sorted({"base", "revision", "weights_sha256", "storage_dtype"} - set(record))
    if missing:
        raise StageError(f"{path} lacks {missing}: re-run the stage that trained {adapter_dir} (dvc repro)")
    return record


def check_same_base(record: dict, current: dict, what: str) -> None:
    """Fail unless ``current`` (a ``base_identity``) is the very base the record names (same string,
    revision and weights)."""
    if current != record:
        raise StageError(
            f"{what}: the adapter was trained on {record}, but the base given now is {current}; "
            "re-run the training stage (dvc repro) so adapter and base match"
        )


LINEAGE = "medjson_lineage.json"


def write_merge_lineage(out_dir: Path, adapter_dir: Path, record: dict, storage_dtype: str) -> None:
    """Mark a merged model as this pipeline's: which adapter, on which base, stored how."""
    lineage = {"adapter": str(adapter_dir), "base": record, "storage_dtype": storage_dtype}
    (Path(out_dir) / LINEAGE).write_text(json.dumps(lineage, indent=2) + "\n")


def check_starts_from_sft(model_dir: Path, base: str) -> None:
    """GRPO's model must be a merged SFT model of this pipeline, trained on the configured base."""
    lineage_path = Path(model_dir) / LINEAGE
    if not lineage_path.exists():
        raise StageError(
            f"{model_dir} is not a merged model of this pipeline (no {LINEAGE}): GRPO must start "
            "from the merged SFT model (models/sft_merged), never from the base"
        )
    lineage = _read_record(lineage_path, "merge@sft")
    merged_onto = lineage.get("base", {}).get("base") if isinstance(lineage.get("base"), dict) else None
    if merged_onto != base:
        raise StageError(
            f"{model_dir} was merged onto {merged_onto!r}, but model.base is {base!r}: re-run sft and merge@sft"
        )
