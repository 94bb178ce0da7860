"""What one call of one step may ask people: each request recorded on the step, and its answer awaited.

`on_wait(True)` when a request starts waiting for a person, `on_wait(False)` once it has its answer: the
step stops its idle clock meanwhile (and the call's own deadline stops too, web/mcp_server.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from web.inbox import Answer, Ask, Inbox
from web.mcp_server import WaitExpired
from web.registry import RunRecord


class StepAsker:
    def __init__(
        self,
        inbox: Inbox,
        record: RunRecord,
        step_name: str,
        index: int,
        *,
        item_index: int | None = None,
        wait_seconds: float,
        on_wait: Callable[[bool], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.record = record
        self.step_name = step_name
        self.index = index
        self.item_index = item_index
        self.wait_seconds = wait_seconds
        self.on_wait = on_wait

    async def ask(self, ask: Ask) -> Answer:
        """Ask a person and wait; an unanswered request comes back `expired` (see `expired`).
        Raises UnaskableRequest for a request no person can be shown."""
        ask = dataclasses.replace(ask, item_index=self.item_index)
        return await self._waiting(
            self.inbox.ask(self.record, self.step_name, self.index, ask, wait_seconds=self.wait_seconds)
        )

    async def again(self, request: dict[str, Any]) -> Answer:
        """Wait again on a request recorded before a restart (its input_requested event)."""
        ask = Ask(request["kind"], request["message"], item_index=self.item_index)
        return await self._waiting(
            self.inbox.ask(self.record, self.step_name, self.index, ask, wait_seconds=self.wait_seconds, again=request)
        )

    def expired(self, what: str) -> WaitExpired:
        """The step's failure when nobody answered `what` in time."""
        return WaitExpired(
            f"Nobody answered {what} within {self.wait_seconds:g}s (wait_timeout_seconds), so the step stopped"
        )

    async def _waiting(self, asking: Any) -> Answer:
        if self.on_wait is not None:
            self.on_wait(True)
        try:
            return await asking
        finally:
            if self.on_wait is not None:
                self.on_wait(False)
