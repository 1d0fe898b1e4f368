"""`predict`: answer new questions from a file or standard input, one JSON line per question.

    python -m medjson.predict --model models/grpo_merged --input questions.jsonl --output answers.jsonl
    cat questions.csv | medjson predict --model models/grpo_merged --input - --output -

Input: JSON Lines (an object per line) or CSV (a header row), chosen by the file's suffix,
or for ``-`` by its first character. A row holds ``question``, its four options (``options``
as a list or an object with keys A-D, or fields ``A``..``D``) and an optional ``id``; rows
without an id are numbered. Output, in input order: per question its id, the three schema
fields and ``meta`` (model, decoding, latency, new tokens, the stated confidence, the letter
probability, and whether the answer falls below the abstention threshold). A bad row becomes
``{"id", "row", "error"}``, is counted in the summary line, and never stops the run.
Model, decoding and batch size default to the ``serve`` section of ``params.yaml``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from medjson.cli import run_stage
from medjson.core.choices import DECODINGS
from medjson.core.questions import Question, read_question
from medjson.core.records import dumps_line
from medjson.errors import DataError
from medjson.model.answering import Answerer, none_or, read_abstention
from medjson.params import load_params

log = logging.getLogger("medjson.predict")


def _open_input(spec: str) -> tuple[io.TextIOBase, str]:
    """The input stream and its format (jsonl or csv)."""
    if spec == "-":
        text = sys.stdin.read()
        kind = "jsonl" if text.lstrip().startswith("{") else "csv"
        return io.StringIO(text), kind
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    kind = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    return path.open(encoding="utf-8", errors="replace", newline=""), kind


def input_rows(stream: io.TextIOBase, kind: str) -> Iterator[tuple[int, object]]:
    """(row number, parsed record or a DataError) for every non-blank input row."""
    if kind == "csv":
        for number, row in enumerate(csv.DictReader(stream), start=1):
            yield number, {key.strip(): value for key, value in row.items() if key is not None}
        return
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        try:
            yield number, json.loads(line)
        except ValueError as err:
            yield number, DataError(f"not a JSON object ({err})")


def predict(answerer: Answerer, rows: Iterator[tuple[int, object]], out, batch_size: int, limits: dict) -> dict:
    """Answer every row, writing records as batches finish; returns the counts for the summary."""
    counts = {"rows": 0, "answered": 0, "schema_valid": 0, "bad_rows": 0}
    pending: list[tuple[int, Question]] = []
    bar = tqdm(desc="predict", unit="q", file=sys.stderr)

    def flush() -> None:
        records = answerer.answer([q for _, q in pending], batch_size)
        for (number, _), record in zip(pending, records):
            out.write(dumps_line(record))
            counts["answered"] += 1
            counts["schema_valid"] += record["valid"]
        out.flush()
        bar.update(len(pending))
        pending.clear()

    for number, row in rows:
        counts["rows"] += 1
        try:
            if isinstance(row, DataError):
                raise row
            question = read_question(row, **limits)
        except DataError as err:
            # Answers of earlier good rows go out first, so the output keeps the input's order.
            if pending:
                flush()
            rid = row.get("id") if isinstance(row, dict) else None
            out.write(dumps_line({"id": rid, "row": number, "error": f"row {number}: {err}"}))
            counts["bad_rows"] += 1
            bar.update(1)
            continue
        if question.id is None:
            question = Question(str(number), question.question, question.options)
        pending.append((number, question))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    bar.close()
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", help="a merged model folder, hub id or .gguf file (default: serve.model)")
    parser.add_argument("--input", required=True, help="JSON Lines or CSV file, or - for standard input")
    parser.add_argument("--output", default="-", help="JSON Lines file, or - for standard output")
    parser.add_argument("--decoding", choices=DECODINGS, help="default: serve.decoding")
    parser.add_argument("--batch-size", type=int, help="default: serve.max_batch_size")
    parser.add_argument(
        "--abstention",
        help="calibrate's abstention.json for this model and decoding, or none (default: serve.abstention)",
    )
    args = parser.parse_args(argv)

    params = load_params(args.params)
    settings = params.serve
    model = args.model or settings.model
    batch_size = args.batch_size or settings.max_batch_size
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: must be at least 1")
    stream, kind = _open_input(args.input)  # cheap checks before the model loads
    log.info(
        "predict: model %s, %s decoding, batches of %d, %s input",
        model,
        args.decoding or settings.decoding,
        batch_size,
        kind,
    )
    abstention = read_abstention(none_or(args.abstention) if args.abstention else settings.abstention)
    answerer = Answerer(
        model, params.model, args.decoding or settings.decoding, settings.max_new_tokens, None, abstention
    )
    limits = {"max_question_chars": settings.max_question_chars, "max_option_chars": settings.max_option_chars}
    started = time.perf_counter()
    out = sys.stdout if args.output == "-" else Path(args.output).open("w", encoding="utf-8")
    try:
        counts = predict(answerer, input_rows(stream, kind), out, batch_size, limits)
    finally:
        stream.close()
        if out is not sys.stdout:
            out.close()
    log.info(
        "predict: %d rows: %d answered (%d schema-valid), %d bad rows, in %.1f s",
        counts["rows"],
        counts["answered"],
        counts["schema_valid"],
        counts["bad_rows"],
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    run_stage(main)
