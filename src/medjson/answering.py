"""Answering new questions with a trained model: the core that ``predict`` and the service share.

A question arrives as a mapping: ``question`` (text), four options (``options`` as a list of
four, or as an object with keys A-D, or columns ``A``..``D`` as in a CSV file) and an
optional ``id``. ``read_question`` turns it into a ``Question`` or says exactly which field
is wrong. ``Answerer`` loads a model once and answers batches of questions greedily, free
or under the answer grammar, with the project's one prompt format and one parser. Given the
``calibrate`` stage's abstention file for that model and decoding, its ``confidence`` is the
one that file stands on, and an answer below the file's threshold is marked abstained.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from medjson.abstention import Abstention
from medjson.errors import DataError
from medjson.grammar import DECODINGS, AnswerGrammar
from medjson.parsing import parse_answer
from medjson.prompts import LETTERS, build_messages

log = logging.getLogger("medjson.answering")


@dataclass(frozen=True)
class Question:
    id: str | None
    question: str
    options: list[str]


def _options(row: dict) -> list:
    if "options" in row:
        options = row["options"]
        if isinstance(options, dict):
            if sorted(options) != list(LETTERS):
                raise DataError(f"`options` must have the keys {list(LETTERS)}, got {sorted(options)}")
            return [options[letter] for letter in LETTERS]
        if not isinstance(options, list):
            raise DataError(f"`options` must be a list of 4 strings or an object with keys A-D, got {options!r:.80}")
        return options
    if all(letter in row for letter in LETTERS):
        return [row[letter] for letter in LETTERS]
    raise DataError("no options: give `options` (a list of 4) or the fields A, B, C and D")


def read_question(row: object, max_question_chars: int = 20_000, max_option_chars: int = 2_000) -> Question:
    """A question from one input record; a ``DataError`` names the field at fault."""
    if not isinstance(row, dict):
        raise DataError(f"a question must be an object, got {type(row).__name__}")
    text = row.get("question")
    if not isinstance(text, str) or not text.strip():
        raise DataError("`question` must be a non-empty string")
    if len(text) > max_question_chars:
        raise DataError(f"`question` is {len(text)} characters, more than the limit of {max_question_chars}")
    options = _options(row)
    if len(options) != len(LETTERS):
        raise DataError(f"`options` must hold exactly {len(LETTERS)} options, got {len(options)}")
    for letter, option in zip(LETTERS, options):
        if not isinstance(option, str) or not option.strip():
            raise DataError(f"option {letter} must be a non-empty string")
        if len(option) > max_option_chars:
            raise DataError(f"option {letter} is {len(option)} characters, more than the limit of {max_option_chars}")
    qid = row.get("id")
    if qid is not None and not isinstance(qid, (str, int)):
        raise DataError(f"`id` must be a string or an integer, got {type(qid).__name__}")
    return Question(None if qid is None else str(qid), text.strip(), [o.strip() for o in options])


class Answerer:
    """A loaded model that answers questions in batches; every answer is a complete record."""

    def __init__(
        self,
        model_spec: str,
        decoding: str = "constrained",
        max_new_tokens: int = 128,
        precision: str = "auto",
        enable_thinking: bool = False,
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        abstention: str | Path | None = None,
    ):
        from medjson.modeling import load_model, load_tokenizer, resolve_source

        if decoding not in DECODINGS:
            raise DataError(f"decoding {decoding!r}: choose one of {list(DECODINGS)}")
        self.abstention = load_abstention(abstention, model_spec, decoding)
        self.model_spec, self.decoding, self.max_new_tokens = model_spec, decoding, max_new_tokens
        self.enable_thinking = enable_thinking
        source = resolve_source(model_spec, revision)
        self.tokenizer = load_tokenizer(source, padding_side="left")
        self.model = load_model(source, precision, attn_implementation=attn_implementation).eval()
        self.grammar = None
        if decoding == "constrained":
            self.grammar = AnswerGrammar.for_model(self.model, self.tokenizer, max_new_tokens)

    def answer(self, questions: list[Question], batch_size: int | None = None) -> list[dict]:
        """One record per question, in order: the id, the schema's three fields (None where the model's
        output is not a schema-valid answer, which constrained decoding rules out) and metadata."""
        from medjson.generation import generate

        if not questions:
            return []
        started = time.perf_counter()
        run = generate(
            self.model,
            self.tokenizer,
            [build_messages(q.question, q.options) for q in questions],
            self.enable_thinking,
            batch_size or len(questions),
            self.max_new_tokens,
            grammar=self.grammar,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        records = []
        for question, output in zip(questions, run.outputs):
            parsed = parse_answer(output.text)
            letter_probs = output.letter_probs if parsed.schema_valid else None
            letter_probability = None if letter_probs is None else letter_probs[LETTERS.index(parsed.predicted)]
            confidence, source = parsed.confidence, "stated"
            if self.abstention:
                confidence = self.abstention.confidence_of(parsed.confidence, letter_probs, parsed.predicted)
                source = self.abstention.confidence
            records.append(
                {
                    "id": question.id,
                    "predicted_category": parsed.predicted,
                    "confidence": _rounded(confidence),
                    "reason": parsed.reason,
                    "valid": parsed.schema_valid,
                    "error": None if parsed.schema_valid else "the model's output is not a schema-valid answer",
                    "meta": {
                        "model": self.model_spec,
                        "decoding": self.decoding,
                        "latency_ms": round(latency_ms, 1),
                        "new_tokens": output.new_tokens,
                        "confidence_source": source,  # stated, or letter: the letter probability, scaled
                        "stated_confidence": parsed.confidence,  # what the model wrote
                        # The model's own probability of the letter it wrote, renormalised over A-D.
                        "letter_probability": _rounded(letter_probability),
                        # Below the fitted threshold: answered, but not to be trusted. None: no file.
                        "abstained": self.abstention.abstains(confidence) if self.abstention else None,
                        "abstention_threshold": _rounded(self.abstention.threshold) if self.abstention else None,
                        **({} if parsed.schema_valid else {"raw_output": output.text}),
                    },
                }
            )
        return records


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def load_abstention(path: str | Path | None, model_spec: str, decoding: str) -> Abstention | None:
    """The abstention file for this model and decoding, checked to fit them; None where there is none."""
    from medjson.lineage import weights_digest

    if path is None:
        return None
    if not Path(path).is_file():
        log.warning(
            "NO ABSTENTION FILE at %s (run `dvc repro calibrate`): answers carry the stated confidence and "
            "none is marked abstained",
            path,
        )
        return None
    abstention = Abstention.read(path)
    abstention.check_fits(model_spec, weights_digest(model_spec), decoding, path)
    threshold = (
        "none reached the target: every answer abstains"
        if abstention.threshold is None
        else f"{abstention.threshold:.4f}"
    )
    log.info("abstention from %s: %s confidence, threshold %s", path, abstention.confidence, threshold)
    return abstention


def none_or(value: str | None) -> str | None:
    """A command-line path where `none` (any case) means no file."""
    return None if value is None or value.lower() == "none" else value
