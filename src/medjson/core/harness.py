"""lm-evaluation-harness's zero-shot prompts, so that one accuracy is comparable with published ones.

Published small-model figures on MedMCQA, MedQA and MMLU are mostly the harness's: the
question in the task's own words, then the continuation `` A``..`` D`` whose log-likelihood
the model rates highest (``acc``), no chat template, no generation. ``loglik_accuracy`` is
that figure; ``accuracy`` is the project's own (a generated JSON answer). The two side by side
tell what a model knows from how well it answers in JSON.

The texts follow the harness's task files (lm_eval/tasks/): ``medmcqa/utils_medmcqa.py``,
``medqa/preprocess_medqa.py`` and ``mmlu/default/_default_template_yaml`` with each subject's
description. ``bench/lm_eval_compare.py`` runs the harness itself to check the match.
"""

from __future__ import annotations

from medjson.core.choices import HARNESS_TASKS, MEDMCQA_TASK, MEDQA_TASK, MMLU_TASK
from medjson.core.prompts import LETTERS

# The harness joins context and choice with its target delimiter, a space.
CONTINUATIONS = tuple(f" {letter}" for letter in LETTERS)


def harness_context(task: str, question: str, options: list[str], subject: str = "") -> str:
    """The zero-shot context the harness builds for one question of ``task``; the answer follows it."""
    lettered = "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, options))
    if task == MEDMCQA_TASK:
        return f"Question: {question}\nChoices:\n{lettered}Answer:"
    if task == MEDQA_TASK:
        return f"Question: {question}\n{lettered}Answer:"
    if task == MMLU_TASK:
        # Each MMLU subject task carries this description; the harness puts it before the question.
        description = f"The following are multiple choice questions (with answers) about {subject.lower()}.\n\n"
        return f"{description}{question.strip()}\n{lettered}Answer:"
    raise ValueError(f"harness task {task!r}: choose one of {list(HARNESS_TASKS)}")
