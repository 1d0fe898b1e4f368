"""Reading and writing the project's JSON and JSON Lines files, always whole and deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


def write_jsonl(path: Path | str, records: Iterable[dict]) -> int:
    """Write records one per line, replacing the file; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path | str) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: Path | str, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def digest_files(paths: Iterable[Path], relative_to: Path | None = None) -> str:
    """sha256 over files' names and contents, read in blocks (weights can be gigabytes)."""
    digest = hashlib.sha256()
    for path in paths:
        name = path.relative_to(relative_to) if relative_to else path.name
        digest.update(f"{name}\0".encode())
        with Path(path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()
