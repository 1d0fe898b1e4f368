"""Reading and writing the project's JSON and JSON Lines files, always whole and deterministic.

Text from a model may hold anything, a lone surrogate escape included (``"\\ud83d"``),
which UTF-8 cannot encode: such a record is written with its non-ASCII characters
escaped, so every output is written and stays valid JSON. A NaN or an infinity, which JSON
cannot hold, is never written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from medjson.errors import DataError

# What each consumer needs of a pool row (``medjson.data.pools.pool_record`` writes all of them).
SFT_KEYS = ("messages", "target")
GRPO_KEYS = ("messages", "answer")
EVAL_KEYS = ("id", "subject", "messages", "answer")
QUESTION_KEYS = ("question", "options")  # the question as asked, for leak checks against other sets


def _dumps(value: Any, indent: int | None = None) -> str:
    try:
        # NaN and Infinity are not JSON: a reader in any other language would refuse the file.
        text = json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False)
    except ValueError as err:
        raise DataError(f"refusing to write a number JSON cannot hold ({err}): nothing was written") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it rather than fail after all the work
        text = json.dumps(value, ensure_ascii=True, indent=indent)
    return text


def dumps_line(record: dict) -> str:
    """One JSON Lines line for ``record``, newline included."""
    return _dumps(record) + "\n"


def write_jsonl(path: Path | str, records: Iterable[dict]) -> int:
    """Write records one per line, replacing the file; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(dumps_line(record))
            count += 1
    return count


def read_jsonl(path: Path | str) -> list[dict]:
    """Every object of a JSON Lines file; a line that is not one is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise DataError(f"{path}:{number}: not a JSON line ({err}); re-run the stage that writes it") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
            rows.append(value)
    return rows


def read_pool(path: Path | str, keys: tuple[str, ...], letters: tuple[str, ...] | None = None) -> list[dict]:
    """A prepared pool: every row has ``keys`` (and a gold ``answer`` among ``letters``); none is empty."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path} holds no rows: nothing to train or score on; check the prepare stage's report")
    for number, row in enumerate(rows, start=1):
        missing = [key for key in keys if row.get(key) in (None, "", [])]
        if missing:
            raise DataError(f"{path}: row {number} (id {row.get('id')!r}) has no `{missing[0]}`; re-run prepare")
        if "messages" in keys and not isinstance(row["messages"], list):
            raise DataError(f"{path}: row {number} (id {row.get('id')!r}): `messages` is not a list of messages")
        if letters and "answer" in keys and row["answer"] not in letters:
            raise DataError(
                f"{path}: row {number} (id {row.get('id')!r}): answer {row['answer']!r} is not one of {letters}"
            )
    return rows


def write_json(path: Path | str, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dumps(value, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run the stage that writes it") from None


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
