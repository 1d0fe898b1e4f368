"""Abstention: answer only where the confidence clears a threshold fitted out of sample.

The ``calibrate`` stage fits, on the calibration pool only:

1. a temperature for the letter probability, minimising the negative log-likelihood of the
   gold letter under the A-D distribution (temperature scaling: it keeps the model's order of
   the letters, so it changes no answer);
2. which confidence to use, the stated one or the scaled letter probability: the one with the
   lower calibration error on that pool, unless ``calibrate.confidence`` names one;
3. the lowest threshold whose kept answers reach ``calibrate.target_accuracy`` there.

``evaluate`` applies the result to the evaluation pool (the honest, out-of-sample coverage
and accuracy), and ``predict`` and the service apply it to new questions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from medjson.core.choices import AUTO_CONFIDENCE, CONFIDENCE_SOURCES, DECODINGS, LETTER, STATED
from medjson.core.prompts import LETTERS
from medjson.core.stats import expected_calibration_error
from medjson.core.validation import Float, Int, Str, build_section, section
from medjson.errors import DataError, ParamsError

# Temperatures tried: 400 steps evenly spaced in log between 0.05 and 20, and 1.0 itself, so the
# fitted one never does worse than the raw probabilities on the pool it is fitted on.
TEMPERATURE_GRID = sorted({math.exp(math.log(0.05) + i * math.log(400) / 400) for i in range(401)} | {1.0})
# What a file read back may hold: a temperature must be positive (0 divides by zero, a negative one
# turns the order of the letters around); these bounds hold the grid with room to spare.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3


def scale_letter_probs(probs: list[float], temperature: float) -> list[float]:
    """softmax(log p / T) over the four letters: the A-D distribution at another temperature."""
    logs = [math.log(max(p, 1e-12)) / temperature for p in probs]
    top = max(logs)
    weights = [math.exp(value - top) for value in logs]
    total = sum(weights)
    return [w / total for w in weights]


def letter_confidence(letter_probs: list[float] | None, predicted: str | None, temperature: float) -> float | None:
    """The scaled probability of the letter the model wrote; None where the answer carries none."""
    if letter_probs is None or predicted not in LETTERS:
        return None
    return scale_letter_probs(letter_probs, temperature)[LETTERS.index(predicted)]


def letter_nll(distributions: list[list[float]], gold: list[int], temperature: float) -> float:
    """Mean negative log-likelihood of the gold letter after scaling; 0 with no data."""
    if not distributions:
        return 0.0
    return -sum(
        math.log(max(scale_letter_probs(probs, temperature)[g], 1e-12)) for probs, g in zip(distributions, gold)
    ) / len(distributions)


def fit_temperature(distributions: list[list[float]], gold: list[int]) -> float:
    """The grid temperature of least NLL (nearest 1.0 among equals); 1.0 with no data."""
    if not distributions:
        return 1.0
    return min(TEMPERATURE_GRID, key=lambda t: (round(letter_nll(distributions, gold, t), 12), abs(math.log(t))))


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: no threshold reaches the target, so every answer abstains
    kept: int
    coverage: float  # share of all questions answered
    accuracy: float | None  # accuracy of the answered ones


def fit_threshold(confidences: list[float | None], correct: list[bool], target: float, min_kept: int) -> Threshold:
    """The lowest threshold whose kept answers (confidence at or above it) reach ``target`` accuracy,
    with at least ``min_kept`` of them. An answer without a confidence is never kept; answers of
    equal confidence are kept or dropped together."""
    n = len(confidences)
    rated = sorted(((c, r) for c, r in zip(confidences, correct, strict=True) if c is not None), key=lambda p: -p[0])
    best = Threshold(None, 0, 0.0, None)
    kept = right = 0
    for index, (confidence, is_right) in enumerate(rated):
        kept, right = kept + 1, right + int(is_right)
        if index + 1 < len(rated) and rated[index + 1][0] == confidence:
            continue
        if kept >= min_kept and right / kept >= target:
            best = Threshold(confidence, kept, kept / n, right / kept)
    return best


@section
class Abstention:
    """What the calibrate stage fitted for one model and decoding, as written to its JSON file."""

    # Each field says what it accepts: a file read back is checked field by field (type and range).
    model: Str
    model_sha256: Str | None  # weights of a local model; None for a hub model (its revision pins it)
    revision: Str | None
    decoding: Literal[(*DECODINGS,)]
    confidence: Literal[(*CONFIDENCE_SOURCES,)]
    temperature: Float = Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)  # applied to the letter probability
    threshold: Float | None = Field(ge=0.0, le=1.0)  # None: every answer abstains (no threshold reached the target)
    target_accuracy: Float = Field(ge=0.0, le=1.0)
    min_kept: Int = Field(ge=1)
    calibration_n: Int = Field(ge=0)
    calibration_coverage: Float = Field(ge=0.0, le=1.0)
    calibration_accuracy: Float | None = Field(ge=0.0, le=1.0)
    calibration_ece: dict[str, Float | None]  # source -> ECE on the calibration pool (letter after scaling)
    fitted_on: list[Str]  # ids of the calibration questions: never an evaluation question
    # The file it was read from, for messages; not written to it.
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False, metadata={"not_a_key": True})

    def confidence_of(
        self, stated: float | None, letter_probs: list[float] | None, predicted: str | None
    ) -> float | None:
        """The confidence this file stands on for one answer; None where the answer carries none."""
        if self.confidence == STATED:
            return stated
        return letter_confidence(letter_probs, predicted, self.temperature)

    def abstains(self, confidence: float | None) -> bool:
        return self.threshold is None or confidence is None or confidence < self.threshold

    def write(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = {f.name: getattr(self, f.name) for f in _file_fields()}
        path.write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path | str) -> Abstention:
        """The file ``calibrate`` wrote, every field checked for its type and range."""
        path = Path(path)
        remedy = "re-run `dvc repro calibrate`, or answer without one (--abstention none)"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot be read as an abstention file ({err}); {remedy}") from None
        keys = {f.name for f in _file_fields()}
        if not isinstance(raw, dict) or keys - set(raw):
            missing = sorted(keys - set(raw)) if isinstance(raw, dict) else sorted(keys)
            raise DataError(f"{path}: not an abstention file, it lacks {missing}; {remedy}")
        try:
            checked = build_section(cls, {key: raw[key] for key in keys}, "abstention", path)
        except ParamsError as err:
            raise DataError(f"{err}; {remedy}") from None
        ece = [value for value in checked.calibration_ece.values() if value is not None]
        if set(checked.calibration_ece) - set(CONFIDENCE_SOURCES) or not all(0.0 <= v <= 1.0 for v in ece):
            raise DataError(
                f"{path}: `abstention.calibration_ece` = {checked.calibration_ece!r} is not an ECE per source"
            )
        return dataclasses.replace(checked, path=path)

    def check_fits(self, model: str, sha256: str | None, decoding: str) -> None:
        """A threshold means something only for the model and decoding it was fitted on."""
        same_model = (sha256 is not None and sha256 == self.model_sha256) or (
            sha256 is None and self.model_sha256 is None and model == self.model
        )
        if not same_model or decoding != self.decoding:
            raise DataError(
                f"{self.path} was fitted for {self.model} ({self.decoding} decoding), not for {model} ({decoding} "
                "decoding): pass the abstention file of this model and decoding, or `none` to answer without one"
            )

    def check_unseen(self, question_ids: list[str]) -> None:
        """Refuse to report an out-of-sample figure on questions the threshold was fitted on."""
        seen = set(self.fitted_on).intersection(question_ids)
        if seen:
            raise DataError(
                f"{self.path} was fitted on {len(seen)} of these questions (e.g. {sorted(seen)[0]!r}): the calibration "
                "and evaluation pools must be disjoint; re-run prepare and calibrate"
            )


def _file_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Abstention) if not f.metadata.get("not_a_key")]


def fit_abstention(
    predictions: list[dict],
    settings,
    model: str,
    model_sha256: str | None,
    revision: str | None,
    decoding: str,
) -> Abstention:
    """Temperature, confidence source and threshold from one model's answers to the calibration pool
    (prediction records, ``medjson.core.scoring.prediction_record``), as ``settings`` (the ``calibrate``
    section of params.yaml) asks."""
    with_letters = [p for p in predictions if p["letter_probs"] is not None]
    temperature = 1.0
    if settings.fit_temperature:
        temperature = fit_temperature(
            [p["letter_probs"] for p in with_letters], [LETTERS.index(p["gold"]) for p in with_letters]
        )
    confidences = {
        STATED: [p["confidence"] if p["schema_valid"] else None for p in predictions],
        LETTER: [letter_confidence(p["letter_probs"], p["predicted"], temperature) for p in predictions],
    }
    correct = [p["correct"] for p in predictions]
    ece = {}
    for source in CONFIDENCE_SOURCES:
        rated = [(c, r) for c, r in zip(confidences[source], correct) if c is not None]
        ece[source] = expected_calibration_error([c for c, _ in rated], [r for _, r in rated]) if rated else None
    source = settings.confidence
    if source == AUTO_CONFIDENCE:  # the better calibrated; the letter probability where neither can be measured
        measured = {name: value for name, value in ece.items() if value is not None}
        source = min(measured, key=lambda name: (measured[name], name != LETTER)) if measured else LETTER
    threshold = fit_threshold(confidences[source], correct, settings.target_accuracy, settings.min_kept)
    return Abstention(
        model=model,
        model_sha256=model_sha256,
        revision=revision,
        decoding=decoding,
        confidence=source,
        temperature=temperature,
        threshold=threshold.value,
        target_accuracy=settings.target_accuracy,
        min_kept=settings.min_kept,
        calibration_n=len(predictions),
        calibration_coverage=threshold.coverage,
        calibration_accuracy=threshold.accuracy,
        calibration_ece=ece,
        fitted_on=[p["id"] for p in predictions],
    )
