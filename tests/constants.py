"""What many test files share by value: the project's paths and the one question the service tests ask."""

from __future__ import annotations

from medjson.workspace import PROJECT_QUESTIONS as QUESTIONS  # noqa: F401 - the 200 questions the project wrote
from medjson.workspace import PROJECT_ROOT

MEDMCQA_DEV = PROJECT_ROOT.parent / "shared" / "data" / "medmcqa" / "dev.json"  # real data; tests skip without it

# The question every service test asks: as a record for /v1/answer, and as the chat message a client writes.
QUESTION = {
    "id": "q1",
    "question": "Which nerve supplies the deltoid?",
    "options": ["Radial", "Axillary", "Ulnar", "Median"],
}
MESSAGE = "Question: Which nerve supplies the deltoid?\nA. Radial\nB. Axillary\nC. Ulnar\nD. Median"
