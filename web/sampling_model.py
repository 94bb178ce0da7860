"""A model a person may hand a server's sampling request to: an OpenAI-compatible chat completions endpoint.

The person reviews the model's reply before it goes back to the server (the MCP spec's human in the loop
for sampling); its key is read from the environment and sent only to the endpoint.
"""

from __future__ import annotations

from typing import Any

from web.settings import Settings


class SamplingUnavailable(Exception):
    """The endpoint could not give a reply (unreachable, refused, garbage); the message says why, without the key."""


class SamplingModel:
    def __init__(self, url: str, *, model: str, key_env: str) -> None:
        self.url = url
        self.model = model
        self.key_env = key_env

    @classmethod
    def from_settings(cls, settings: Settings) -> SamplingModel | None:
        """The configured endpoint; None when there is none (people write the replies)."""
        if settings.sampling_url is None:
            return None
        return cls(settings.sampling_url, model=settings.sampling_model, key_env=settings.sampling_key_env)

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The model's reply to a pending sampling request (as the run's state shows it): a draft
        `{text, model, stop_reason}`. Raises SamplingUnavailable."""
        raise SamplingUnavailable("not implemented yet")
