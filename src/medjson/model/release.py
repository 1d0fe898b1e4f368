"""A release: what a user downloads of a trained model (``dvc artifacts get``), rebuilt in memory.

A release folder (written by the ``release`` stage) holds the adapters that make the model, in
training order (SFT, then GRPO on the SFT model merged), the tokenizer, the model card and the
abstention file, and ``medjson_release.json``: the pretrained base (hub id or file, revision,
digest), each adapter with its weights' digest, and the digest of the merged weights the
pipeline evaluated. Loading one merges the adapters onto the base exactly as the ``merge`` stage
does (fp32 on the CPU, each result cast to the storage dtype it is saved in), so its weights are
the evaluated ones, bit for bit: its digest is the recorded one, and the abstention file fitted
on the merged model fits it. A release is tens of megabytes where a merged model is hundreds.
"""

from __future__ import annotations

import json
from pathlib import Path

from medjson.errors import DataError

RELEASE_FILE = "medjson_release.json"


def is_release(path: Path | str) -> bool:
    return (Path(path) / RELEASE_FILE).is_file()


def read_release(folder: Path | str) -> dict:
    path = Path(folder) / RELEASE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        for key in ("base", "chain", "weights_sha256", "storage_dtype"):
            record[key]  # noqa: B018 - every key must be there
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path} is not a readable release record ({err}): fetch the release again") from None
    return record


def adapter_digest(adapter_dir: Path) -> str:
    from medjson.core.records import digest_files

    return digest_files([adapter_dir / "adapter_model.safetensors"], relative_to=adapter_dir)


def check_adapters(folder: Path, record: dict) -> None:
    """Each adapter's weights are the ones the release recorded: a changed file is no silent other model."""
    for link in record["chain"]:
        weights = folder / link["adapter"] / "adapter_model.safetensors"
        if not weights.is_file() or adapter_digest(folder / link["adapter"]) != link["sha256"]:
            raise DataError(
                f"{weights} is missing or not the adapter {folder / RELEASE_FILE} records: fetch the release again"
            )
