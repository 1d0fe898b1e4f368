"""`predict`: answer new questions from a file or standard input, one JSON line per question.

    python -m medjson.commands.predict --model models/grpo_merged --input questions.jsonl --output answers.jsonl
    cat questions.csv | medjson predict --model models/grpo_merged --input - --output -

Input: JSON Lines (an object per line) or CSV (a header row), chosen by the file's suffix, or
for ``-`` by its first character. A row holds ``question``, its four options (``options`` as a
list or an object with keys A-D, or fields ``A``..``D``) and an optional ``id``; rows without an
id are numbered. Output, in input order: per question its id, the three schema fields and
``meta`` (model, decoding, latency, new tokens, why it ended, both confidences, the letter
probability, and whether the answer falls below the abstention threshold). ``confidence`` is the
calibrated one where an abstention file is loaded (``--confidence stated``: the model's own); the
file is, unless ``--abstention`` names one, the one calibrate fitted for the model and decoding in
the model's own workspace, or none (one log line says which). A bad row (not UTF-8, not an
object, a CSV row with the wrong number of fields, a repeated id, a missing field) becomes
``{"id", "row", "error"}``, is counted in the summary line, and never stops the run.

An output file is written as ``<output>.partial`` and renamed into place when the run ends, so a
complete earlier output is never destroyed by a run that does not finish; running the same
command again resumes from the partial file. Model, decoding and batch size default to the
``serve`` section of ``params.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from medjson.cli import run_stage
from medjson.core.choices import ANSWER_CONFIDENCES, DECODINGS
from medjson.core.questions import Question, read_question
from medjson.core.records import dumps_line
from medjson.errors import DataError
from medjson.model.answering import Answerer, abstention_setting, read_abstention
from medjson.model.lineage import weights_digest
from medjson.params import load_params
from medjson.serving.inputs import input_rows, open_input
from medjson.serving.outputs import PartialOutput, check_output, file_digest

log = logging.getLogger("medjson.predict")


def predict(
    answerer: Answerer, rows: Iterator[tuple[int, object]], out, batch_size: int, limits: dict, skip: int = 0
) -> dict:
    """Answer every row after the first ``skip`` (answered by an earlier run), writing records as
    batches finish; returns the counts for the summary."""
    counts = {"rows": 0, "resumed": 0, "answered": 0, "schema_valid": 0, "bad_rows": 0}
    pending: list[tuple[int, Question]] = []
    first_row_of: dict[str, int] = {}
    bar = tqdm(desc="predict", unit="q", file=sys.stderr)

    def flush() -> None:
        records = answerer.answer([q for _, q in pending], batch_size)
        out.write("".join(dumps_line(record.to_json()) for record in records))
        out.flush()
        counts["answered"] += len(records)
        counts["schema_valid"] += sum(record.valid for record in records)
        bar.update(len(pending))
        pending.clear()

    for number, row in rows:
        counts["rows"] += 1
        try:
            if isinstance(row, DataError):
                raise row
            question = read_question(row, **limits)
            if question.id is None:
                question = Question(str(number), question.question, question.options)
            if question.id in first_row_of:
                raise DataError(f"id {question.id!r} repeats the id of row {first_row_of[question.id]}")
            first_row_of[question.id] = number
        except DataError as err:
            if number <= skip:
                counts["resumed"] += 1
                continue
            if pending:  # answers of earlier good rows go out first, so the output keeps the input's order
                flush()
            rid = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), (str, int)) else None
            out.write(dumps_line({"id": rid, "row": number, "error": f"row {number}: {err}"}))
            counts["bad_rows"] += 1
            bar.update(1)
            continue
        if number <= skip:
            counts["resumed"] += 1
            continue
        pending.append((number, question))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    bar.close()
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _run_identity(args, answerer: Answerer, settings) -> dict:
    """What makes a partial output's answers those this run would write: resumed only when all agree."""
    return {
        "input": file_digest(Path(args.input)) if args.input != "-" else None,
        "model": answerer.spec,
        "model_sha256": weights_digest(answerer.source),
        "decoding": answerer.decoding,
        "max_new_tokens": answerer.max_new_tokens,
        "enable_thinking": answerer.enable_thinking,
        "abstention": file_digest(answerer.abstention.path) if answerer.abstention else None,
        "confidence": answerer.confidence,
        "limits": [settings.max_question_chars, settings.max_option_chars],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", help="a merged model folder, hub id or .gguf file (default: serve.model)")
    parser.add_argument("--input", required=True, help="JSON Lines or CSV file, or - for standard input")
    parser.add_argument("--output", default="-", help="JSON Lines file, or - for standard output")
    parser.add_argument("--decoding", choices=DECODINGS, help="default: serve.decoding")
    parser.add_argument("--batch-size", type=_positive, help="default: serve.max_batch_size")
    parser.add_argument(
        "--abstention",
        help="calibrate's abstention.json for this model and decoding, auto (the one beside the model) or none "
        "(default: serve.abstention)",
    )
    parser.add_argument(
        "--confidence",
        choices=ANSWER_CONFIDENCES,
        help="the answer's confidence: calibrated (the abstention file's, where one is loaded) or stated "
        "(default: serve.confidence)",
    )
    args = parser.parse_args(argv)

    params = load_params(args.params)
    settings = params.serve
    model = args.model or settings.model
    decoding = args.decoding or settings.decoding
    batch_size = args.batch_size or settings.max_batch_size
    # Cheap checks before the model loads: the output (and a partial one left beside it), the input, the
    # abstention file.
    output = check_output(args.output, args.input)  # None: standard output
    partial = None if output is None else PartialOutput(output)
    if partial is not None:
        partial.check_ours()
    stream, kind = open_input(args.input)
    abstention_path, named_by = abstention_setting(args.abstention, settings.abstention)
    abstention = read_abstention(abstention_path, named_by)
    log.info("predict: model %s, %s decoding, batches of %d, %s input", model, decoding, batch_size, kind)
    confidence = args.confidence or settings.confidence
    answerer = Answerer(model, params.model, decoding, settings.max_new_tokens, None, abstention, confidence)
    limits = {"max_question_chars": settings.max_question_chars, "max_option_chars": settings.max_option_chars}
    started = time.perf_counter()
    out = sys.stdout if partial is None else partial
    try:
        skip = 0 if partial is None else partial.open(_run_identity(args, answerer, settings))
        if skip:
            log.info("predict: resuming from %s: %d rows were answered by an earlier run", partial.partial, skip)
        counts = predict(answerer, input_rows(stream, kind), out, batch_size, limits, skip)
        if partial is not None:
            partial.finish()
    except OSError as err:  # a full disk, a file removed under the run: what was written is kept
        where = "standard output" if partial is None else partial.partial
        raise DataError(
            f"cannot write {where} ({err.strerror or err}); the answers written so far are kept there, and "
            "running the same command again resumes after them"
        ) from None
    finally:
        stream.close()
        if partial is not None:
            partial.close()
    log.info(
        "predict: %d rows: %d answered (%d schema-valid), %d bad rows, %d kept from an earlier run, in %.1f s",
        counts["rows"],
        counts["answered"],
        counts["schema_valid"],
        counts["bad_rows"],
        counts["resumed"],
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    run_stage(main)
