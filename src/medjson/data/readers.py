"""Reading the rows of a question source: a local JSON Lines, parquet or CSV file, or a hub dataset.

Every row keeps where it came from (``file:line`` or ``hub-id[split]#index``), so that any
later error names it. What the rows mean is the layouts' business (``medjson.data.sources``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medjson.data.layouts import mmlu_subject
from medjson.errors import DataError


@dataclass
class RawRow:
    where: str  # "file:line" or "hub-id[split]#index", for error messages
    data: dict


LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def is_local(source: str) -> bool:
    return Path(source).exists() or source.endswith(LOCAL_SUFFIXES) or source.startswith((".", "/"))


def read_local(path: Path, csv_header: bool = False) -> list[RawRow]:
    """Rows of a local JSON Lines (``.json``/``.jsonl``), parquet or CSV file, with their line numbers.

    A CSV file is MMLU's (no header, the subject from the file name) unless ``csv_header``."""
    if not path.exists():
        raise DataError(f"{path}: data source not found; point the source in params.yaml at a file or hub id")
    if path.is_dir():
        raise DataError(f"{path} is a folder: set data.source to one JSON Lines or parquet file in it")
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(
            f"{path}: cannot read {path.suffix or 'a file without suffix'} files; data.source takes "
            f"{', '.join(LOCAL_SUFFIXES)} (decompress a .gz first)"
        )
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".csv":
        return _read_csv_with_header(path) if csv_header else _read_mmlu_csv(path)
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as err:
                reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
                raise DataError(f"{path}:{number}: not valid JSON ({reason}); the file must be JSON Lines") from None
            if not isinstance(data, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(data).__name__}")
            rows.append(RawRow(f"{path}:{number}", data))
    return rows


def _read_mmlu_csv(path: Path) -> list[RawRow]:
    """MMLU's CSV files: no header, one question per row; the subject is the file's."""
    import csv

    subject = mmlu_subject(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return [
                RawRow(f"{path}:{number}", {"cells": cells, "subject": subject})
                for number, cells in enumerate(csv.reader(f), start=1)
                if cells
            ]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({err})") from None


def _read_csv_with_header(path: Path) -> list[RawRow]:
    import csv

    try:
        with path.open(encoding="utf-8", newline="") as f:
            return [RawRow(f"{path}:{number}", row) for number, row in enumerate(csv.DictReader(f), start=2)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({err})") from None


def _read_parquet(path: Path) -> list[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    return [RawRow(f"{path}#row{i}", row) for i, row in enumerate(table.to_pylist())]


def read_hub(dataset_id: str, split: str, revision: str | None, subset: str | None = None) -> list[RawRow]:
    """Rows of one split of a hub dataset, or of one subset (configuration) of it: needs the
    network, or a populated HF cache."""
    from datasets import load_dataset

    name = f"{dataset_id}/{subset}" if subset else dataset_id
    try:
        dataset = load_dataset(dataset_id, subset, split=split, revision=revision)
    except Exception as err:  # network, auth, unknown id or split: all end the same way for the user
        raise DataError(
            f"could not load split {split!r} of hub dataset {name!r} ({type(err).__name__}: {err}); "
            "without internet, point the source at a local JSON Lines, CSV or parquet file"
        ) from None
    return [RawRow(f"{name}[{split}]#{i}", row) for i, row in enumerate(dataset)]
