"""Every closed set of names the project uses, declared once.

``params.py`` validates against these, the commands offer them as ``choices``, and the code
compares with the constants below, so a name added or renamed here reaches all three.
"""

from __future__ import annotations

# How an answer is decoded: what the model writes alone, or masked by the answer grammar.
DECODINGS = ("free", "constrained")
FREE, CONSTRAINED = DECODINGS

# How greedy answers are decoded, step by step (model.decoder): pruned, rows leaving the batch as they
# end (``model.pruned_decoding``); static, a preallocated cache and the batch's bookkeeping on the device
# (``model.static_decoding``), its step run eagerly; compiled, that step compiled (a CUDA graph on a
# GPU); auto: compiled on CUDA, pruned elsewhere (docs/performance.md says why).
DECODERS = ("auto", "pruned", "static", "compiled")
AUTO_DECODER, PRUNED, STATIC, COMPILED = DECODERS

# What an answer's confidence stands on: the number the model wrote, or its own probability of the
# letter it wrote (renormalised over A-D).
CONFIDENCE_SOURCES = ("stated", "letter")
STATED, LETTER = CONFIDENCE_SOURCES
AUTO_CONFIDENCE = "auto"  # calibrate.confidence: the better calibrated of the two on the calibration pool

# Which confidence an answer carries (serve.confidence): the abstention file's (calibrated) where one
# is loaded, or always the number the model wrote.
ANSWER_CONFIDENCES = ("calibrated", "stated")
CALIBRATED = ANSWER_CONFIDENCES[0]
# serve.abstention: the file fitted for the model and decoding, found in the model's own workspace.
FIND_ABSTENTION = "auto"

# How the service writes its access log (serve.access_log): uvicorn's line, or one JSON object a line.
ACCESS_LOGS = ("text", "json")
TEXT_LOG, JSON_LOG = ACCESS_LOGS

# Why an answer ended (OpenAI's finish_reason): the model closed it, or the token budget cut it.
FINISH_REASONS = ("stop", "length")
STOP, LENGTH = FINISH_REASONS

# Numeric precisions a model is loaded and trained in (``model.precision`` also takes ``auto``).
PRECISIONS = ("bf16", "fp16", "fp32")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")

# The layouts a question source can be read in (``medjson.data.layouts``); ``auto`` detects one.
MEDMCQA_HUB, MEDMCQA_ORIGINAL = "hub", "original"  # MedMCQA's two: `cop` 0..3 (hub) and 1..4 (release)
COLUMNS_LAYOUT = "columns"  # any other four-option set, read through a column mapping
LAYOUTS = (MEDMCQA_HUB, MEDMCQA_ORIGINAL, "medqa", "medqa_hub", "mmlu", "mmlu_hub", COLUMNS_LAYOUT)
AUTO_LAYOUT = "auto"
ANSWER_ENCODINGS = ("letter", "index0", "index1", "text")  # how a mapped source writes its answer

# lm-evaluation-harness's multiple-choice tasks whose zero-shot prompt `loglik_accuracy` uses
# (``medjson.core.harness``): MedMCQA's, MedQA's 4-option and MMLU's.
HARNESS_TASKS = ("medmcqa", "medqa_4options", "mmlu")
MEDMCQA_TASK, MEDQA_TASK, MMLU_TASK = HARNESS_TASKS

# What happens to a source row that breaks the rules.
BAD_ROWS = ("error", "drop")

# The models the pipeline makes, in training order, and what is evaluated: each of them, and the
# trained ones again under the answer grammar.
PHASES = ("base", "sft", "grpo")
TRAINED_PHASES = PHASES[1:]  # the phases that train an adapter: what a release and a model card are of
EVALUATED = (*PHASES, "sft_constrained", "grpo_constrained")
# Each model's colour in every chart (plot.py's images and dvc plots' templates alike): a trained
# model under the grammar is a lighter shade of its own hue.
MODEL_COLOURS = {
    "base": "#7f7f7f",
    "sft": "#1f77b4",
    "grpo": "#d62728",
    "sft_constrained": "#9ecae1",
    "grpo_constrained": "#fc9272",
}
