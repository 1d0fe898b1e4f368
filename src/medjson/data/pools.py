"""Carving questions into disjoint SFT, GRPO, calibration and evaluation pools, and writing their records.

Disjointness is by id and by normalized question text: two rows with the same
question text always land in the same pool, so no evaluation question is ever
trained on under another id.
"""

from __future__ import annotations

import random
import re
from collections import Counter, OrderedDict

from medjson.core.prompts import build_messages, target_json
from medjson.core.questions import ExamQuestion
from medjson.core.stats import majority_accuracy
from medjson.errors import DataError

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:ans(?:wer)?s?\b\s*(?:is|:|-|\.|=)?\s*(?:option\s*)?[\(\[]?[a-d]?[\)\]]?\s*(?:i\.e\.?|[.:,;)\-])?\s*)+",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Lower case, punctuation and spacing folded: the key pools must not share."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def group_by_question(questions: list[ExamQuestion]) -> list[list[ExamQuestion]]:
    """Questions grouped by normalized text, groups in first-seen order."""
    groups: OrderedDict[str, list[ExamQuestion]] = OrderedDict()
    for question in questions:
        groups.setdefault(normalize_question(question.question), []).append(question)
    return list(groups.values())


def shuffled(items: list, seed: int) -> list:
    """A deterministic shuffle that does not touch the global random state."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def fill_pools(
    groups: list[list[ExamQuestion]], sizes: dict[str, int | None]
) -> tuple[dict[str, list[ExamQuestion]], int]:
    """Deal whole groups into pools in order, each up to its size (None: everything left).

    A group that would overflow a pool is cut, and the rows cut are discarded rather
    than moved to the next pool, which would put one question text in two pools.
    Returns the pools and how many rows were discarded that way.
    """
    pools: dict[str, list[ExamQuestion]] = {name: [] for name in sizes}
    names = list(sizes)
    discarded = 0
    index = 0
    for group in groups:
        while (
            index < len(names) and sizes[names[index]] is not None and len(pools[names[index]]) >= sizes[names[index]]
        ):
            index += 1
        if index == len(names):
            break
        pool, size = pools[names[index]], sizes[names[index]]
        room = len(group) if size is None else size - len(pool)
        pool.extend(group[:room])
        discarded += max(0, len(group) - room)
    return pools, discarded


def check_disjoint(pools: dict[str, list[ExamQuestion]]) -> None:
    """Fail if any two pools share an id or a normalized question text."""
    names = list(pools)
    for i, first in enumerate(names):
        ids = {q.id for q in pools[first]}
        texts = {normalize_question(q.question) for q in pools[first]}
        for second in names[i + 1 :]:
            for q in pools[second]:
                if q.id in ids or normalize_question(q.question) in texts:
                    raise DataError(
                        f"leak: question {q.id!r} in pool `{second}` also sits in pool `{first}` "
                        "(same id or same normalized question text)"
                    )


def clean_reason(explanation: str, max_chars: int) -> str:
    """An explanation made fit for the `reason` field: answer prefixes gone, one line, cut at a word."""
    text = _SPACES.sub(" ", _ANSWER_PREFIX.sub("", explanation)).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    sentence_end = cut.rfind(". ")
    if sentence_end >= max_chars // 3:  # a whole sentence reads better than a longer cut one
        return cut[: sentence_end + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + "..." if " " in cut else cut


def pool_record(
    question: ExamQuestion, reason_max_chars: int, confidence_explained: float, confidence_unexplained: float
) -> dict:
    """One JSONL record: the question's parts, its prompt messages, the gold letter, and the SFT target answer."""
    use_explanation = question.explanation and reason_max_chars > 0
    reason = clean_reason(question.explanation, reason_max_chars) if use_explanation else ""
    if reason:
        confidence = confidence_explained
    else:
        # No explanation to stand on: a neutral reason, and the target asserts less.
        reason = f"Option {question.answer} is the best-supported answer."
        confidence = confidence_unexplained
    return {
        "id": question.id,
        "subject": question.subject,
        "choice_type": question.choice_type,
        "question": question.question,
        "options": question.options,
        "messages": build_messages(question.question, question.options),
        "answer": question.answer,
        "target": target_json(question.answer, confidence, reason),
    }


def question_summary(questions: list[ExamQuestion]) -> dict:
    """What a reviewer checks of a set of questions before trusting a score on it: how the gold
    letters and subjects are spread, and what always answering the commonest letter scores."""
    return {
        "majority_accuracy": round(majority_accuracy([q.answer for q in questions]), 4),
        "answer_letters": dict(sorted(Counter(q.answer for q in questions).items())),
        "subjects": dict(sorted(Counter(q.subject for q in questions).items())),
    }
