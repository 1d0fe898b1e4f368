"""Every request and response model of the service, in one place.

- The service's own API (``/v1/answer``, ``/v1/answer/batch``): ``QuestionIn`` and ``BatchIn`` in,
  ``medjson.model.answer_record.AnswerRecord`` (the answering path's own record) and ``BatchOut`` out.
- OpenAI's API (``/v1/chat/completions``, ``/v1/models``): ``ChatRequest``, a chat body once read and
  checked (``openai_requests.read_chat_request``), in; ``ChatCompletion``, ``ChatCompletionChunk``
  and ``ModelCard`` out, each carrying the service's own fields in ``medjson`` (``MedjsonFields``).

Routes take and return these; the work between is ``service.Service``'s.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from their annotations.

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from medjson.core.prompts import LETTERS
from medjson.model.answer_record import AnswerRecord
from medjson.serving.http import no_surrogates

# ---------------------------------------------------------------- the service's own API

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(no_surrogates)]


class QuestionIn(BaseModel):
    id: Union[Annotated[str, AfterValidator(no_surrogates)], int, None] = Field(
        default=None, description="echoed back in the answer"
    )
    question: Text = Field(description="at most serve.max_question_chars characters")
    options: list[Text] = Field(
        min_length=len(LETTERS), max_length=len(LETTERS), description="options A-D, each at most serve.max_option_chars"
    )


class BatchIn(BaseModel):
    questions: list[QuestionIn] = Field(min_length=1, description="at most serve.max_batch_items questions")


class BatchOut(BaseModel):
    answers: list[AnswerRecord]


# ---------------------------------------------------------------- OpenAI's API: the request


@dataclass(frozen=True)
class ChatRequest:
    """What a chat request asks of the service, once read and checked."""

    model: str
    question: str
    options: list[str]
    max_tokens: Optional[int]  # None: the service's own limit
    stream: bool
    include_usage: bool  # in a stream, a last chunk with the usage
    ignored: list[str]  # settings given that greedy decoding does not honour


# ---------------------------------------------------------------- OpenAI's API: what a client reads back


class MedjsonFields(BaseModel):
    """The service's own fields beside OpenAI's (``medjson``): both confidences and the abstention verdict."""

    valid: bool
    confidence: Optional[float]  # the one the content carries (calibrated where a file scales it)
    confidence_source: str
    stated_confidence: Optional[float]
    calibrated_confidence: Optional[float]
    letter_probability: Optional[float]
    abstained: Optional[bool]
    abstention_threshold: Optional[float]
    decoding: str
    latency_ms: float
    ignored: list[str]  # request fields greedy decoding does not honour, reported rather than refused
    max_tokens_capped_at: Optional[int] = None  # present only where the request asked past the service's limit

    @classmethod
    def of(cls, record: AnswerRecord, ignored: list[str], capped_max_tokens: Optional[int]) -> "MedjsonFields":
        meta = {name: getattr(record.meta, name) for name in cls.model_fields if hasattr(record.meta, name)}
        return cls(
            valid=record.valid,
            confidence=record.confidence,
            ignored=ignored,
            max_tokens_capped_at=capped_max_tokens,
            **meta,
        )

    def as_json(self) -> dict:
        return self.model_dump(exclude={"max_tokens_capped_at"} if self.max_tokens_capped_at is None else set())


@dataclass(frozen=True)
class Completion:
    """One answer as OpenAI's client reads it, before it is wrapped whole or as a stream's last chunks."""

    content: str
    finish_reason: str  # stop, or length: cut by max_tokens or by the service's limit
    prompt_tokens: int
    completion_tokens: int
    medjson: MedjsonFields

    def usage(self) -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    medjson: dict

    @classmethod
    def of(cls, completion: Completion, model: str) -> "ChatCompletion":
        message = AssistantMessage(content=completion.content)
        return cls(
            model=model,
            choices=[Choice(message=message, finish_reason=completion.finish_reason)],
            usage=completion.usage(),
            medjson=completion.medjson.as_json(),
        )


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a stream; every chunk of a stream shares its id and time."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Optional[Usage] = None
    medjson: Optional[dict] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "medjson"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
