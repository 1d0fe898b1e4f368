"""Reading predict's input exactly, or refusing it row by row: JSON Lines or CSV, from a file or stdin.

Every non-blank row becomes ``(row number, record)`` or ``(row number, DataError)``: a row that
is not valid UTF-8, is not a JSON object, or, in CSV, has more or fewer fields than the header is
refused on its own, and the rows around it are read as usual (a lone surrogate in a field, JSON's
``"\\ud800"``, is refused by ``read_question`` like any other bad field). A byte order mark at the start is accepted. Reading streams: memory stays flat
whatever the input's length.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Iterator, TextIO

from medjson.core.questions import has_surrogate
from medjson.errors import DataError

JSONL, CSV = "jsonl", "csv"
# Bytes that are not UTF-8 are kept as lone surrogates (U+DC80-U+DCFF) by the `surrogateescape`
# handler, so one bad row can be refused without losing the rest of the stream.
_TEXT = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": ""}


def open_input(spec: str) -> tuple[TextIO, str]:
    """The input stream and its format: a file's by its suffix, standard input's by its first character."""
    if spec == "-":
        raw = sys.stdin.buffer
        head = raw.peek(4096) if hasattr(raw, "peek") else b""
        kind = JSONL if head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{") else CSV
        return io.TextIOWrapper(raw, **_TEXT), kind
    path = Path(spec)
    if path.is_dir():
        raise DataError(f"--input {path} is a folder: give a JSON Lines or CSV file")
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    try:
        return path.open(**_TEXT), CSV if path.suffix.lower() == ".csv" else JSONL
    except OSError as err:
        raise DataError(f"--input {path} cannot be read ({err.strerror})") from None


NOT_UTF8 = "not valid UTF-8 text; save the input as UTF-8"


def _jsonl_rows(stream: TextIO) -> Iterator[tuple[int, object]]:
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        if has_surrogate(line):
            yield number, DataError(NOT_UTF8)
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            yield number, DataError(f"not a JSON object ({err})")
            continue
        yield number, record  # a lone surrogate in a field it uses is refused by read_question


def _csv_rows(stream: TextIO) -> Iterator[tuple[int, object]]:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        return
    if has_surrogate("".join(header)):
        raise DataError(f"the CSV header is {NOT_UTF8}")
    header = [name.strip() for name in header]
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # a NUL byte, a field over the size limit: this row only
            number += 1
            yield number, DataError(f"not readable as CSV ({err})")
            continue
        if not any(cell.strip() for cell in cells):
            continue
        number += 1
        if len(cells) != len(header):
            yield (
                number,
                DataError(
                    f"has {len(cells)} fields, the header has {len(header)} (a comma inside a field must be quoted)"
                ),
            )
        elif has_surrogate("".join(cells)):
            yield number, DataError(NOT_UTF8)
        else:
            yield number, dict(zip(header, cells))


def input_rows(stream: TextIO, kind: str) -> Iterator[tuple[int, object]]:
    """(row number, parsed record or the DataError that refuses it) for every non-blank input row."""
    yield from _csv_rows(stream) if kind == CSV else _jsonl_rows(stream)
