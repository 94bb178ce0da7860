"""What the run page shows of a request to a person: built from a pending request as the run's state holds it.

Everything a server sent (its message, a URL, a schema's titles, a sampling conversation) is data the
templates escape; nothing here is markup. A form's fields come from the run-form machinery (web.forms),
named under the request's own root so that several requests' forms can share one page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from web.events import RequestKind
from web.forms import RunForm, build_form
from web.inbox import APPROVAL_DEFAULT_SCHEMA
from web.result_view import web_address
from web.run_state import StepState

# The buttons of each kind of request, as (action, label), the first one the form's default.
ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    RequestKind.ELICITATION: (("accept", "Accept"), ("decline", "Decline"), ("cancel", "Cancel")),
    RequestKind.URL: (("accept", "I have done it"), ("decline", "Decline"), ("cancel", "Cancel")),
    RequestKind.SAMPLING: (("accept", "Send"), ("decline", "Decline")),
    RequestKind.APPROVAL: (("accept", "Approve"), ("decline", "Reject"), ("cancel", "Dismiss")),
    RequestKind.RESUME: (("accept", "Resume"), ("decline", "End the run")),
}
KIND_NAMES = {
    RequestKind.ELICITATION: "Form",
    RequestKind.URL: "Web page",
    RequestKind.SAMPLING: "Model reply",
    RequestKind.APPROVAL: "Approval",
    RequestKind.RESUME: "Resume after a restart",
}
# The sampling reply's control; its draft's model is sent along only when the text is the draft's own.
REPLY_FIELD = "reply"
REPLY_MODEL_FIELD = "reply_model"


def form_root(request_id: str) -> str:
    """The prefix of a request's form controls (and their ids)."""
    return f"r-{request_id}"


@dataclass(frozen=True)
class WebAddress:
    """A URL split so that a page can emphasise its host; `href` only when it may be a link (http or https)."""

    text: str
    href: str | None
    before_host: str = ""
    host: str = ""
    after_host: str = ""


def web_page(url: Any) -> WebAddress:
    text = url if isinstance(url, str) else json.dumps(url, ensure_ascii=False)
    href = web_address(text)
    if href is None:
        return WebAddress(text, None)
    parts = urlsplit(href)
    # The host as the browser will go to it: any user:password@ before it is shown, not emphasised.
    start = href.index("//") + 2
    netloc_end = start + len(parts.netloc)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host_start = start + len(userinfo) + len(at)
    return WebAddress(text, href, href[:host_start], href[host_start:netloc_end], href[netloc_end:])


@dataclass
class MessageView:
    """One message of a sampling request. `state` holds its content as a step's result, so that the page's
    result rendering (text, images, audio, with the page's limits) draws it."""

    role: str
    state: StepState


@dataclass
class RequestView:
    request_id: str
    kind: str
    step_name: str
    message: str
    created_at: str | None
    expires_at: str | None
    item_index: int | None = None
    actions: tuple[tuple[str, str], ...] = ()
    form: RunForm | None = None  # elicitation and approval
    form_schema: dict[str, Any] = field(default_factory=dict)
    secret_fields: list[str] = field(default_factory=list)
    url: WebAddress | None = None
    # sampling
    messages: list[MessageView] = field(default_factory=list)
    system_prompt: str | None = None
    model_preferences: Any = None
    max_tokens: Any = None
    temperature: Any = None
    stop_sequences: Any = None
    include_context: Any = None
    draft: dict[str, Any] | None = None
    reply: str = ""
    reply_errors: list[str] = field(default_factory=list)
    # A problem with the whole answer (asking the model failed, the request was closed meanwhile).
    problem: str = ""

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, self.kind)

    @staticmethod
    def form_anchor(request_id: str) -> str:
        return f"request-{request_id}"

    @property
    def anchor(self) -> str:
        return self.form_anchor(self.request_id)

    @property
    def form_id(self) -> str:
        # Changes when a draft arrives, so the live page swaps in the form prefilled with it instead of
        # keeping (hx-preserve) the one being typed in.
        return f"request-{self.request_id}-form" + ("-drafted" if self.draft else "")

    @property
    def reply_model(self) -> str:
        return str((self.draft or {}).get("model") or "")


def request_view(pending: dict[str, Any]) -> RequestView:
    kind = pending.get("kind", "")
    view = RequestView(
        request_id=pending["request_id"],
        kind=kind,
        step_name=pending.get("step_name", ""),
        message=str(pending.get("message") or ""),
        created_at=pending.get("created_at"),
        expires_at=pending.get("expires_at"),
        item_index=pending.get("item_index"),
        actions=ACTIONS.get(kind, ()),
    )
    if kind in (RequestKind.ELICITATION, RequestKind.APPROVAL):
        view.form_schema = pending.get("requested_schema") or APPROVAL_DEFAULT_SCHEMA
        view.form = build_form(view.form_schema, root_name=form_root(view.request_id))
        view.secret_fields = list(pending.get("secret_fields") or [])
    elif kind == RequestKind.URL:
        view.url = web_page(pending.get("url", ""))
    elif kind == RequestKind.SAMPLING:
        view.messages = [_message(number, message) for number, message in enumerate(pending.get("messages") or [])]
        view.system_prompt = pending.get("system_prompt")
        view.model_preferences = pending.get("model_preferences")
        view.max_tokens = pending.get("max_tokens")
        view.temperature = pending.get("temperature")
        view.stop_sequences = pending.get("stop_sequences")
        view.include_context = pending.get("include_context")
        view.draft = pending.get("draft")
        view.reply = str((view.draft or {}).get("text") or "")
    return view


def _message(number: int, message: Any) -> MessageView:
    if not isinstance(message, dict):
        return MessageView("?", StepState(node_id="message", index=number, content=[message]))
    content = message.get("content")
    blocks = content if isinstance(content, list) else [content]
    return MessageView(str(message.get("role", "?")), StepState(node_id="message", index=number, content=blocks))


def step_requests(pending: dict[str, dict[str, Any]], step_name: str) -> list[RequestView]:
    """The open requests of one step, in the order asked."""
    return [request_view(request) for request in pending.values() if request.get("step_name") == step_name]


def sampling_answer(view: RequestView, submitted: dict[str, list[str]]) -> dict[str, Any]:
    """The reply a person sent: its text, and the draft's model when the text is the draft's, unchanged."""
    text = (submitted.get(REPLY_FIELD) or [""])[0].replace("\r\n", "\n")
    view.reply = text
    content: dict[str, Any] = {"text": text}
    model = (submitted.get(REPLY_MODEL_FIELD) or [""])[0]
    if view.draft and model and model == view.reply_model and text == (view.draft.get("text") or ""):
        content["model"] = model
    return content
