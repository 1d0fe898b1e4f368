"""The one place where questions become chat messages and answers become target JSON.

Training (SFT), rollouts (GRPO) and evaluation all build their prompts here, so the
model is always asked the same question in the same words.
"""

from __future__ import annotations

import json

from medjson.errors import StageError

LETTERS = ("A", "B", "C", "D")

SYSTEM_PROMPT = (
    "You are a medical expert answering a multiple-choice exam question. "
    "Reply with one JSON object and nothing else, in exactly this form: "
    '{"predicted_category": "A|B|C|D", "confidence": <number from 0 to 1>, '
    '"reason": "<one or two sentences>"}'
)


def format_question(question: str, options: list[str]) -> str:
    """The user turn: the question, then the four lettered options, one per line."""
    lines = [f"Question: {question.strip()}"]
    lines += [f"{letter}) {option.strip()}" for letter, option in zip(LETTERS, options)]
    return "\n".join(lines)


def build_messages(question: str, options: list[str]) -> list[dict[str, str]]:
    """System prompt and user turn, in the conversational format TRL and chat templates take."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": format_question(question, options)},
    ]


def target_json(letter: str, confidence: float, reason: str) -> str:
    """The exact answer text SFT teaches: compact, key order fixed, nothing around it."""
    answer = {"predicted_category": letter, "confidence": round(float(confidence), 2), "reason": reason}
    return json.dumps(answer, ensure_ascii=False)


def prompt_ids(tokenizer, messages: list[dict[str, str]], enable_thinking: bool) -> list[int]:
    """The token ids of ``render_prompt``'s text: the chat template's own markup read with its special
    tokens, each message's text read as plain text. Tokenizing the whole rendered text would read a
    question that spells ``<|im_end|>`` as the end of its turn, and let it write the assistant's; here
    text from a caller never becomes a control token. For text without such strings the ids are the
    whole text's (the template's markup ends each piece on a special token or a line break)."""
    text = render_prompt(tokenizer, messages, enable_thinking)
    ids, at = [], 0
    for message in messages:
        start = text.find(message["content"], at)
        if start < 0:  # a template that rewrites the text: its markup cannot be told from the message
            raise StageError(
                f"the model's chat template does not copy the {message['role']} message verbatim, so the "
                "prompt's own markup cannot be told from the question's text; use a template that does"
            )
        ids += _token_ids(tokenizer, text[at:start], markup=True)
        ids += _token_ids(tokenizer, message["content"], markup=False)
        at = start + len(message["content"])
    return ids + _token_ids(tokenizer, text[at:], markup=True)


def _token_ids(tokenizer, text: str, markup: bool) -> list[int]:
    if not text:
        return []
    return tokenizer(text, add_special_tokens=False, split_special_tokens=not markup)["input_ids"]


def render_prompt(tokenizer, messages: list[dict[str, str]], enable_thinking: bool) -> str:
    """The prompt text a model sees at inference, ending with the assistant's generation prompt.

    ``enable_thinking`` is passed to the chat template exactly as TRL passes
    ``chat_template_kwargs`` during SFT and GRPO; templates that do not know it ignore it.
    """
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
