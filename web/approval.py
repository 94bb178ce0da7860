"""An approval step: a person reads its message and accepts (with the form's values), declines or dismisses it.

The request is durable: recorded as an input_requested event, it is asked again after a restart (web.resume),
and its answer is what the step's output and status say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from web.events import AnswerAction, RequestKind
from web.expressions import OMIT, EvaluationError
from web.inbox import APPROVAL_DEFAULT_SCHEMA, Answer, Ask
from web.plan import PlannedStep
from web.step_inputs import StepInputError
from web.tool_result import ToolOutcome

# How an answer that is not an acceptance fails the step, by who answered.
REFUSALS = {AnswerAction.DECLINE: "Declined", AnswerAction.CANCEL: "Dismissed"}


def approval_message(step: PlannedStep, scope: Mapping[str, Any]) -> str:
    """The step's message with its expressions evaluated; StepInputError when it cannot be."""
    assert step.message is not None
    try:
        text = step.message.evaluate(scope)
    except EvaluationError as exc:
        raise StepInputError(str(exc)) from None
    if text is OMIT:
        raise StepInputError(f"{step.label}.message: {step.message.describe()} is undefined")
    return text if isinstance(text, str) else str(text)


def approval_ask(step: PlannedStep, message: str, item_index: int | None) -> Ask:
    schema = step.approval_schema or APPROVAL_DEFAULT_SCHEMA
    return Ask(
        kind=RequestKind.APPROVAL,
        message=message,
        details={"requested_schema": schema},
        durable=True,
        item_index=item_index,
    )


def approval_outcome(answer: Answer, wait_seconds: float) -> ToolOutcome:
    """The step's (or item's) result: accepted → its values and who answered; else failed, saying why."""
    name = (answer.by or {}).get("name")
    by = f" by {name}" if name else ""
    if answer.action == AnswerAction.ACCEPT:
        output = {"action": answer.action.value, "values": answer.content, "answered_by": answer.by}
        return ToolOutcome(True, f"Approved{by}", output, value=output)
    if answer.action == AnswerAction.EXPIRED:
        return ToolOutcome(False, f"Nobody answered within {wait_seconds:g}s (wait_timeout_seconds)")
    return ToolOutcome(False, f"{REFUSALS[answer.action]}{by}")


def answer_of(event: Mapping[str, Any]) -> Answer:
    """An answer as its input_answered event recorded it."""
    return Answer(event["request_id"], AnswerAction(event["action"]), event.get("content"), event.get("answered_by"))
