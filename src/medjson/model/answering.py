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
import math
import time
from pathlib import Path
from typing import Callable

from medjson.core.abstention import Abstention
from medjson.core.choices import (
    ANSWER_CONFIDENCES,
    CALIBRATED,
    COMPILED,
    CONSTRAINED,
    DECODINGS,
    FIND_ABSTENTION,
    LENGTH,
    STATED,
    STOP,
)
from medjson.core.harness import CONTINUATIONS, harness_context
from medjson.core.parsing import Answer
from medjson.core.prompts import build_messages, prompt_ids
from medjson.core.questions import Question
from medjson.core.scoring import loglik_record, prediction_record
from medjson.errors import DataError
from medjson.model.answer_record import AnswerMeta, AnswerRecord

log = logging.getLogger("medjson.answering")
ABSTENTION_FILE = "abstention.json"  # what calibrate writes, one per model and decoding


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
        abstention: Abstention | str | None = None,
        confidence: str = CALIBRATED,
    ):
        """``abstention``: a file read with ``read_abstention``, None, or ``FIND_ABSTENTION`` (the file
        fitted for these weights and this decoding in the model's own workspace, or none, said in one
        line). ``confidence``: which confidence answers carry (``ANSWER_CONFIDENCES``)."""
        from medjson.model.lineage import weights_digest
        from medjson.model.modeling import load_model, load_tokenizer, resolve_precision, resolve_source

        if decoding not in DECODINGS:
            raise DataError(f"decoding {decoding!r}: choose one of {list(DECODINGS)}")
        if confidence not in ANSWER_CONFIDENCES:
            raise DataError(f"confidence {confidence!r}: choose one of {list(ANSWER_CONFIDENCES)}")
        self.spec, self.decoding, self.max_new_tokens = spec, decoding, max_new_tokens
        self.confidence = confidence
        self.enable_thinking = model.enable_thinking
        self.source = resolve_source(spec, revision)
        if abstention == FIND_ABSTENTION:
            abstention = find_abstention(spec, self.source, decoding)
        elif abstention is not None:  # checked against the weights before they load
            sha256 = weights_digest(self.source)
            try:
                abstention.check_fits(spec, sha256, decoding)
            except DataError as err:
                workspace = (
                    abstention.path.resolve().parents[2] if abstention.path else None
                )  # <ws>/calibration/<m>/file
                fitting = _fitting_file(workspace, spec, sha256, decoding)
                raise DataError(f"{err}{f' (this one fits: {fitting})' if fitting else ''}") from None
        self.abstention = abstention
        if confidence == CALIBRATED and abstention is None:
            log.info("confidence: the model's stated one (no abstention file to calibrate it with)")
        # torch and the decoders are imported only now: a refused model, decoding or abstention file is
        # answered before their import.
        from medjson.model.generation import resolve_decoder
        from medjson.model.grammar import AnswerGrammar

        self.precision = resolve_precision(model.precision)
        self.tokenizer = load_tokenizer(self.source, padding_side="left")
        self.model = load_model(self.source, self.precision, attn_implementation=model.attn_implementation).eval()
        self.grammar = (
            AnswerGrammar.for_model(self.model, self.tokenizer, max_new_tokens) if decoding == CONSTRAINED else None
        )
        self.decoder = resolve_decoder(model.decoder, self.model.device)
        log.info("greedy decoder: %s (model.decoder: %s)", self.decoder, model.decoder)

    def _generate(
        self,
        conversations: list[list[dict]],
        batch_size: int,
        progress: str | None = None,
        stopped: Callable[[int], bool] | None = None,
        on_token: Callable[[int, int, list[float] | None], None] | None = None,
    ):
        from medjson.model.generation import generate

        return generate(
            self.model,
            self.tokenizer,
            conversations,
            self.enable_thinking,
            batch_size,
            self.max_new_tokens,
            progress=progress,
            grammar=self.grammar,
            stopped=stopped,
            on_token=on_token,
            decoder=self.decoder,
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
        run = self._generate(conversations, batch_size, progress, stopped)
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
        return len(prompt_ids(self.tokenizer, messages, self.enable_thinking))

    @property
    def context_tokens(self) -> int | None:
        """The longest sequence the model was built for (prompt and answer), where its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def answer(
        self,
        questions: list[Question],
        batch_size: int | None = None,
        stopped: Callable[[int], bool] | None = None,
        on_token: Callable[[int, int, list[float] | None], None] | None = None,
    ) -> list[AnswerRecord]:
        """One record per question, in order: the id, the schema's three fields (None where the model's
        output is not a schema-valid answer, which constrained decoding rules out) and metadata.
        ``stopped(i)`` true: question i is no longer wanted, and its row stops generating;
        ``on_token(i, token, letter_logits)`` hears its tokens as they are chosen."""
        if not questions:
            return []
        conversations = [build_messages(q.question, q.options) for q in questions]
        run = self._generate(conversations, batch_size or len(questions), stopped=stopped, on_token=on_token)
        latency_ms = round(run.seconds * 1000, 1)
        return [
            self._record(q, Answer.read(o.text, o.new_tokens, o.letter_probs), self.finish_reason(o), latency_ms)
            for q, o in zip(questions, run.outputs)
        ]

    def warm_up(self, max_rows: int) -> None:
        """Compile the decoding step for every batch size up to ``max_rows`` now, before anyone waits on it:
        with the compiled decoder a new shape's first step compiles, which can take longer than a
        request may wait. Nothing to do for the eager decoders."""
        if self.decoder != COMPILED:
            return
        question = Question(None, "Which nerve supplies the deltoid muscle?", ["Axillary", "Radial", "Median", "Ulnar"])
        rows = 1
        while True:
            started = time.perf_counter()
            self.answer([question] * min(rows, max_rows))
            log.info("decoding warmed up for %d rows in %.1f s", min(rows, max_rows), time.perf_counter() - started)
            if rows >= max_rows:
                return
            rows *= 2

    def finish_reason(self, generated) -> str:
        """``length`` where the token budget (or a caller's own limit) cut the answer, ``stop`` where the
        model ended it. Constrained decoding closes an answer whose budget runs out with its last
        tokens, so one that reaches them was cut (an answer that happened to end there too is counted
        as cut: the budget left it no more room)."""
        if not generated.ended:
            return LENGTH
        if self.grammar is not None and generated.new_tokens >= self.max_new_tokens - 1:
            return LENGTH
        return STOP

    def content_confidence(self, letter_probs, letter: str | None) -> float | None:
        """The confidence an answer's JSON carries in place of the number the model wrote; None where
        it carries the model's own (``serve.confidence: stated``, no abstention file, or a file whose
        confidence is the stated one)."""
        if self.confidence != CALIBRATED or self.abstention is None or self.abstention.confidence == STATED:
            return None
        value = self.abstention.confidence_of(None, letter_probs, letter)
        return _rounded(value) if value is not None and math.isfinite(value) else None

    def _record(self, question: Question, answer: Answer, finish_reason: str, latency_ms: float) -> AnswerRecord:
        parsed = answer.parsed
        calibrated = None
        if self.abstention:
            calibrated = self.abstention.confidence_of(parsed.confidence, answer.letter_probs, parsed.predicted)
        use_calibrated = self.abstention is not None and self.confidence == CALIBRATED
        confidence = calibrated if use_calibrated else parsed.confidence
        return AnswerRecord(
            id=question.id,
            predicted_category=parsed.predicted,
            confidence=_rounded(confidence),
            reason=parsed.reason,
            valid=parsed.schema_valid,
            error=None if parsed.schema_valid else "the model's output is not a schema-valid answer",
            meta=AnswerMeta(
                model=self.spec,
                decoding=self.decoding,
                latency_ms=latency_ms,
                new_tokens=answer.new_tokens,
                finish_reason=finish_reason,
                confidence_source=self.abstention.confidence if use_calibrated else STATED,
                stated_confidence=parsed.confidence,
                calibrated_confidence=_rounded(calibrated),
                letter_probability=_rounded(answer.letter_probability),
                abstained=self.abstention.abstains(calibrated) if self.abstention else None,
                abstention_threshold=_rounded(self.abstention.threshold) if self.abstention else None,
                raw_output=None if parsed.schema_valid else answer.text,
            ),
        )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def abstention_setting(flag: str | None, configured: str | None) -> tuple[str | None, str]:
    """The abstention file to use and who named it: the command line's flag over params.yaml's
    ``serve.abstention``. ``none``: no file; ``auto``: the one fitted for the model (``find_abstention``)."""
    value, named_by = (flag, "--abstention") if flag is not None else (configured, "serve.abstention")
    if value is not None and value.lower() == "none":
        return None, named_by
    return (FIND_ABSTENTION if value is not None and value.lower() == FIND_ABSTENTION else value), named_by


def read_abstention(path: str | Path | None, named_by: str = "--abstention") -> Abstention | str | None:
    """The abstention file predict and the service mark answers by, checked field by field; None
    where none is named, ``FIND_ABSTENTION`` passed on (the Answerer looks for it beside the weights).
    A file that is named but missing is an error, never a quiet default."""
    if path == FIND_ABSTENTION:
        return FIND_ABSTENTION
    if path is None:
        log.info(
            "no abstention file (%s none): answers carry the stated confidence, none is marked abstained", named_by
        )
        return None
    if not Path(path).is_file():
        raise DataError(
            f"{named_by} names {path}, which does not exist: name the abstention.json that calibrate fitted for "
            "this model and decoding (calibration/<model>/abstention.json in its workspace), `auto` to find it "
            "beside the model, or `none` to answer without one"
        )
    abstention = Abstention.read(path)
    _log_abstention(abstention, str(path))
    return abstention


def _log_abstention(abstention: Abstention, where: str) -> None:
    threshold = (
        "none reached the target: every answer abstains"
        if abstention.threshold is None
        else f"{abstention.threshold:.4f}"
    )
    log.info("abstention from %s: %s confidence, threshold %s", where, abstention.confidence, threshold)


def model_workspace(spec: str) -> Path | None:
    """The pipeline workspace a local model lives in: the nearest folder above it holding ``dvc.yaml``
    or ``calibration/`` (a merged model is ``<workspace>/models/<name>``); None for a hub id."""
    path = Path(spec)
    if not path.exists():
        return None
    for folder in list(path.resolve().parents)[:3]:
        if (folder / "dvc.yaml").is_file() or (folder / "calibration").is_dir():
            return folder
    return None


def find_abstention(spec: str, source: str, decoding: str) -> Abstention | None:
    """The abstention file calibrate fitted for these weights and this decoding: the one shipped in the
    model's folder (a release's, a published model's), or one from the model's own workspace
    (``calibration/*/abstention.json``), checked against the weights' digest; None, said in one line,
    where there is none."""
    from medjson.model.lineage import weights_digest

    shipped = Path(spec) / ABSTENTION_FILE  # a release, or a published model folder, carries its own
    if shipped.is_file():
        abstention = Abstention.read(shipped)
        if abstention.decoding == decoding:
            abstention.check_fits(spec, weights_digest(source), decoding)
            _log_abstention(abstention, f"{shipped} (shipped with the model)")
            return abstention
    workspace = model_workspace(spec)
    if workspace is None or not any((workspace / "calibration").glob(f"*/{ABSTENTION_FILE}")):
        log.info(
            "no abstention file for %s: it is not in a workspace with calibration/*/%s; answers carry the "
            "stated confidence and none is marked abstained (--abstention FILE names one)",
            spec,
            ABSTENTION_FILE,
        )
        return None
    found = _fitting_file(workspace, spec, weights_digest(source), decoding)
    if found is None:
        log.info(
            "no abstention file in %s/calibration fits %s (%s decoding): answers carry the stated confidence "
            "and none is marked abstained",
            workspace,
            spec,
            decoding,
        )
        return None
    here = Path.cwd().resolve()
    abstention = Abstention.read(found.relative_to(here) if found.is_relative_to(here) else found)
    _log_abstention(abstention, f"{abstention.path} (found beside the model)")
    return abstention


def _fitting_file(workspace: Path | None, spec: str, sha256: str | None, decoding: str) -> Path | None:
    """Among a workspace's abstention files (``calibration/*/abstention.json``), one fitted for this
    model and decoding."""
    if workspace is None:
        return None
    for candidate in sorted(workspace.glob(f"calibration/*/{ABSTENTION_FILE}")):
        try:
            Abstention.read(candidate).check_fits(spec, sha256, decoding)
        except DataError:
            continue
        return candidate
    return None
