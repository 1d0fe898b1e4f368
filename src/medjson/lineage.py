"""Which base an adapter was trained on, recorded beside it and checked before it is used.

An adapter applied to any other base than its own silently produces a different
model (the reference notebook's "GRPO model" was the base model this way). Each
adapter folder carries ``medjson_base.json``: the base's model string, its hub
revision, and for local bases a digest of the weights, so ``merge`` and ``grpo``
can refuse a mismatch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medjson.cli import StageError
from medjson.modeling import resolve_source

RECORD = "medjson_base.json"


def weights_digest(spec: str) -> str | None:
    """sha256 over a local base's weight files; None for a hub model (its revision pins it)."""
    source = resolve_source(spec)
    if not source.is_local:
        return None
    folder = Path(source.path)
    files = [folder / source.gguf_file] if source.gguf_file else sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def storage_dtype(spec: str, revision: str | None) -> str:
    """The dtype the base's weights are stored in (bfloat16 for Qwen3), so merges keep its size."""
    from transformers import AutoConfig

    source = resolve_source(spec, revision)
    dtype = getattr(AutoConfig.from_pretrained(source.path, **source.kwargs()), "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def base_identity(spec: str, revision: str | None) -> dict:
    local = resolve_source(spec, revision).is_local
    return {
        "base": spec,
        "revision": None if local else revision,
        "weights_sha256": weights_digest(spec),
        "storage_dtype": storage_dtype(spec, revision),
    }


def write_base_record(adapter_dir: Path, spec: str, revision: str | None) -> None:
    (Path(adapter_dir) / RECORD).write_text(json.dumps(base_identity(spec, revision), indent=2) + "\n")


def read_base_record(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / RECORD
    if not path.exists():
        raise StageError(f"{path} missing: {adapter_dir} was not written by this pipeline's sft or grpo stage")
    return json.loads(path.read_text())


def check_same_base(record: dict, spec: str, revision: str | None, what: str) -> None:
    """Fail unless ``spec`` is the very base the record names (same string, revision and weights)."""
    current = base_identity(spec, revision)
    if current != record:
        raise StageError(
            f"{what}: the adapter was trained on {record}, but the base given now is {current}; "
            "re-run the training stage (dvc repro) so adapter and base match"
        )
