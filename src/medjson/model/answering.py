"""The one path from question to answer: a model loaded for answering, and batches answered with it.

``evaluate``, ``calibrate``, the benchmark stages, ``predict`` and the service all answer
through ``Answerer``: it resolves the model source once, loads a left-padded tokenizer and
the model in the resolved precision, builds the answer grammar for constrained decoding,
checks an abstention file against the weights it loaded, and answers batches greedily with
the project's one prompt format and one parser (``medjson.core.parsing.Answer``: the strict
reading and the model's own letter probabilities). Stages score what ``run`` returns;
``answer`` turns questions into the records predict writes and the service returns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from medjson.core.abstention import Abstention
from medjson.core.choices import CONSTRAINED, DECODINGS, STATED
from medjson.core.harness import CONTINUATIONS, harness_context
from medjson.core.parsing import Answer
from medjson.core.prompts import build_messages, render_prompt
from medjson.core.questions import Question
from medjson.core.scoring import loglik_record, prediction_record
from medjson.errors import DataError

log = logging.getLogger("medjson.answering")


class Answerer:
    """A model loaded once for answering, with its decoding and (optionally) its abstention file.

    ``model`` is the ``model`` section of params.yaml (precision, attention, thinking mode),
    passed whole; ``spec`` and ``revision`` name the weights (a folder, hub id or GGUF file).
    """

    def __init__(
        self,
        spec: str,
        model,
        decoding: str,
        max_new_tokens: int,
        revision: str | None = None,
        abstention: Abstention | None = None,
    ):
        from medjson.model.grammar import AnswerGrammar
        from medjson.model.lineage import weights_digest
        from medjson.model.modeling import load_model, load_tokenizer, resolve_precision, resolve_source

        if decoding not in DECODINGS:
            raise DataError(f"decoding {decoding!r}: choose one of {list(DECODINGS)}")
        self.spec, self.decoding, self.max_new_tokens = spec, decoding, max_new_tokens
        self.enable_thinking = model.enable_thinking
        self.source = resolve_source(spec, revision)
        if abstention is not None:  # checked against the weights before they load
            sha256 = weights_digest(self.source)
            try:
                abstention.check_fits(spec, sha256, decoding)
            except DataError as err:
                fitting = _fitting_file(abstention, spec, sha256, decoding)
                raise DataError(f"{err}{f' (this one fits: {fitting})' if fitting else ''}") from None
        self.abstention = abstention
        self.precision = resolve_precision(model.precision)
        self.tokenizer = load_tokenizer(self.source, padding_side="left")
        self.model = load_model(self.source, self.precision, attn_implementation=model.attn_implementation).eval()
        self.grammar = (
            AnswerGrammar.for_model(self.model, self.tokenizer, max_new_tokens) if decoding == CONSTRAINED else None
        )

    def run(
        self,
        conversations: list[list[dict]],
        batch_size: int,
        progress: str | None = None,
        stopped: Callable[[int], bool] | None = None,
    ) -> tuple[list[Answer], float]:
        """Greedy answers to chat conversations, in order, read by the project's one parser, and the
        seconds generation took. ``stopped(i)`` true: conversation i is no longer wanted (its row stops)."""
        from medjson.model.generation import generate

        run = generate(
            self.model,
            self.tokenizer,
            conversations,
            self.enable_thinking,
            batch_size,
            self.max_new_tokens,
            progress=progress,
            grammar=self.grammar,
            stopped=stopped,
        )
        return [Answer.read(o.text, o.new_tokens, o.letter_probs) for o in run.outputs], run.seconds

    def score_pool(self, questions: list[dict], batch_size: int, progress: str) -> tuple[list[dict], float]:
        """Prediction records (``medjson.core.scoring``) for a prepared pool's questions, and the seconds
        generation took."""
        answers, seconds = self.run([q["messages"] for q in questions], batch_size, progress)
        return [prediction_record(q, a) for q, a in zip(questions, answers)], seconds

    def score_logliks(self, questions: list[dict], task: str, batch_size: int) -> tuple[list[dict], float]:
        """Each pool question scored as lm-evaluation-harness's ``task`` does it, zero-shot (records of
        ``medjson.core.scoring.loglik_record``), and the seconds it took."""
        from medjson.model.loglik import continuation_logliks

        contexts = [harness_context(task, q["question"], q["options"], q["subject"]) for q in questions]
        scores, seconds = continuation_logliks(
            self.model, self.tokenizer, contexts, CONTINUATIONS, batch_size, progress=f"{task} log-likelihood"
        )
        return [loglik_record(q, s) for q, s in zip(questions, scores)], seconds

    def prompt_tokens(self, question: Question) -> int:
        """How many tokens the question's prompt takes: what the model's context must hold."""
        messages = build_messages(question.question, question.options)
        prompt = render_prompt(self.tokenizer, messages, self.enable_thinking)
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    @property
    def context_tokens(self) -> int | None:
        """The longest sequence the model was built for (prompt and answer), where its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def answer(
        self, questions: list[Question], batch_size: int | None = None, stopped: Callable[[int], bool] | None = None
    ) -> list[dict]:
        """One record per question, in order: the id, the schema's three fields (None where the model's
        output is not a schema-valid answer, which constrained decoding rules out) and metadata.
        ``stopped(i)`` true: question i is no longer wanted, and its row stops generating."""
        if not questions:
            return []
        conversations = [build_messages(q.question, q.options) for q in questions]
        answers, seconds = self.run(conversations, batch_size or len(questions), stopped=stopped)
        return [self._record(q, a, round(seconds * 1000, 1)) for q, a in zip(questions, answers)]

    def _record(self, question: Question, answer: Answer, latency_ms: float) -> dict:
        parsed = answer.parsed
        confidence, source = parsed.confidence, STATED
        if self.abstention:
            confidence = self.abstention.confidence_of(parsed.confidence, answer.letter_probs, parsed.predicted)
            source = self.abstention.confidence
        return {
            "id": question.id,
            "predicted_category": parsed.predicted,
            "confidence": _rounded(confidence),
            "reason": parsed.reason,
            "valid": parsed.schema_valid,
            "error": None if parsed.schema_valid else "the model's output is not a schema-valid answer",
            "meta": {
                "model": self.spec,
                "decoding": self.decoding,
                "latency_ms": latency_ms,
                "new_tokens": answer.new_tokens,
                "confidence_source": source,  # stated, or letter: the letter probability, scaled
                "stated_confidence": parsed.confidence,  # what the model wrote
                # The model's own probability of the letter it wrote, renormalised over A-D.
                "letter_probability": _rounded(answer.letter_probability),
                # Below the fitted threshold: answered, but not to be trusted. None: no file.
                "abstained": self.abstention.abstains(confidence) if self.abstention else None,
                "abstention_threshold": _rounded(self.abstention.threshold) if self.abstention else None,
                **({} if parsed.schema_valid else {"raw_output": answer.text}),
            },
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def abstention_setting(flag: str | None, configured: str | None) -> tuple[str | None, str]:
    """The abstention file to use and who named it: the command line's flag (``none``: no file) over
    params.yaml's ``serve.abstention``."""
    if flag is not None:
        return (None if flag.lower() == "none" else flag), "--abstention"
    return configured, "serve.abstention"


def read_abstention(path: str | Path | None, named_by: str = "--abstention") -> Abstention | None:
    """The abstention file predict and the service mark answers by, checked field by field; None
    where none is named. A file that is named but missing is an error, never a quiet default."""
    if path is None:
        log.info("no abstention file: answers carry the stated confidence and none is marked abstained")
        return None
    if not Path(path).is_file():
        raise DataError(
            f"{named_by} names {path}, which does not exist: run `dvc repro calibrate` to fit it, or answer "
            "without one (--abstention none)"
        )
    abstention = Abstention.read(path)
    threshold = (
        "none reached the target: every answer abstains"
        if abstention.threshold is None
        else f"{abstention.threshold:.4f}"
    )
    log.info("abstention from %s: %s confidence, threshold %s", path, abstention.confidence, threshold)
    return abstention


def _fitting_file(abstention: Abstention, spec: str, sha256: str | None, decoding: str) -> Path | None:
    """Among the files beside ``abstention``'s (``calibration/*/abstention.json``), one fitted for this
    model and decoding, so that a refusal can name it."""
    if abstention.path is None:
        return None
    for candidate in sorted(abstention.path.parent.parent.glob(f"*/{abstention.path.name}")):
        try:
            Abstention.read(candidate).check_fits(spec, sha256, decoding)
        except DataError:
            continue
        return candidate
    return None
