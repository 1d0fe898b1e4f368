"""What an OpenAI client reads back: the answer's content, token by token or whole, and the objects around it.

The content is the model's own text (the answer JSON, or whatever it wrote where that is no
answer) with one change: where the service answers with the calibrated confidence
(``serve.confidence: calibrated`` and an abstention file that scales the letter probability),
the number after ``"confidence":`` is that one, the number the model wrote staying under
``medjson.stated_confidence``. ``AnswerContent`` builds it from a ticket's tokens, so a stream's
deltas and a whole response are the same text: while the model writes, everything before the
confidence goes out as it comes, the confidence once the number is complete (and the letter's
probability known), the rest as it comes.
"""

from __future__ import annotations

import json
import re
import time

from medjson.serving.protocol import ChatCompletionChunk, ChunkChoice, Completion, Delta, completion_id

_CONFIDENCE_VALUE = re.compile(r'"confidence"\s*:\s*(-?[0-9][0-9.eE+-]*)')
_LETTER = re.compile(r'"predicted_category"\s*:\s*"([A-D])"')
INCOMPLETE = "\ufffd"  # what a decoder gives for a character whose bytes have not all arrived


def with_confidence(text: str, value: float | None) -> str:
    """The text with its first confidence number replaced by ``value`` (None: as the model wrote it)."""
    match = _CONFIDENCE_VALUE.search(text)
    if value is None or match is None:
        return text
    return text[: match.start(1)] + json.dumps(value) + text[match.end(1) :]


class AnswerContent:
    """The content of one answer, built from its tokens as they come (``medjson.serving.batching.Ticket``);
    the ``answerer`` says which confidence it carries (``Answerer.content_confidence``)."""

    def __init__(self, answerer, ticket):
        from medjson.model.generation import letter_token_ids

        self.answerer, self.tokenizer, self.ticket = answerer, answerer.tokenizer, ticket
        self.letter_ids = letter_token_ids(self.tokenizer)
        self.replaces = answerer.content_confidence([0.25] * 4, "A") is not None  # does it carry its own?
        self.sent = ""

    def _text(self) -> str:
        return self.tokenizer.decode(self.ticket.tokens, skip_special_tokens=True)

    def _confidence(self, text: str) -> float | None:
        from medjson.model.generation import letter_probabilities

        steps = [values for values in self.ticket.letter_logits if values is not None]
        if self.letter_ids is None or len(steps) < len(self.ticket.tokens):
            return None
        probs = letter_probabilities(self.tokenizer, self.ticket.tokens, steps, self.letter_ids)
        letter = _LETTER.search(text)
        return self.answerer.content_confidence(probs, letter.group(1) if letter else None)

    def text(self, final: bool = False) -> str:
        """The content as far as it is certain (``final``: the whole of it)."""
        text = self._text()
        if not final and text.endswith(INCOMPLETE):
            text = text.rstrip(INCOMPLETE)
        match = _CONFIDENCE_VALUE.search(text)
        if match is None:
            return text
        if not self.replaces:
            return text
        if not final and match.end(1) == len(text):  # the number may go on: hold it back
            return text[: match.start(1)]
        value = self._confidence(text)
        if value is None and not final:  # the letter is not written yet: hold the number back
            return text[: match.start(1)]
        return with_confidence(text, value)

    def delta(self, final: bool = False) -> str:
        """What has become certain since the last call."""
        text = self.text(final)
        if not text.startswith(self.sent):  # a decoder that rewrote its past: wait for the end
            return ""
        new, self.sent = text[len(self.sent) :], text
        return new


class ChunkStream:
    """The server-sent events of one streamed completion: the role with the first delta, content
    deltas, the end with its finish reason (and ``medjson``), the usage when asked, ``[DONE]``."""

    def __init__(self, model: str, include_usage: bool):
        # Every chunk of one stream shares its id and time.
        self.identity = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.include_usage = include_usage
        self.started = False

    def _event(self, **fields) -> str:
        # Only the fields set: a delta without a role, a chunk without usage, leave the key out.
        chunk = ChatCompletionChunk(**self.identity, **fields).model_dump(exclude_unset=True)
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def _chunk(self, delta: Delta, finish: str | None, **extra) -> str:
        return self._event(choices=[ChunkChoice(index=0, delta=delta, logprobs=None, finish_reason=finish)], **extra)

    def delta(self, text: str) -> str:
        """A content delta; the first one carries the role."""
        delta = Delta(content=text) if self.started else Delta(role="assistant", content=text)
        self.started = True
        return self._chunk(delta, None)

    def end(self, completion: Completion) -> list[str]:
        events = [] if self.started else [self.delta("")]
        events.append(self._chunk(Delta(), completion.finish_reason, medjson=completion.medjson.as_json()))
        if self.include_usage:
            events.append(self._event(choices=[], usage=completion.usage()))
        return [*events, "data: [DONE]\n\n"]

    @staticmethod
    def error(body: dict) -> list[str]:
        """A failure after the stream began (its status was already sent): OpenAI's error object as an event."""
        return [f"data: {json.dumps(body)}\n\n", "data: [DONE]\n\n"]
