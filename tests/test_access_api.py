"""Per-scenario permissions in the JSON API and its event streams, for identities from a trusted proxy header.

One app serves three scenarios built from a shipped one: `public` (no access lists), `secret` (seen by
`auditors`, run by `deployers`) and `hidden` (seen and run by `deployers` alone). Users come through the
proxy's headers; their groups map to roles: readers → viewer, ops → operator, admins → admin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from inprocess import InProcessApp, in_process
from sse import frames, parse_text

from web.resources import SCENARIOS

PROXY = {
    "auth_header": "X-Forwarded-User",
    "groups_header": "X-Forwarded-Groups",
    "trusted_proxies": "127.0.0.1",
    "role_map": "readers=viewer,ops=operator,admins=admin",
    "host": "0.0.0.0",
    "allowed_hosts": "*",
}
URL = "https://signal.example/culture/lighthouse-library-explainer"
STEP = "fetch_article"
ACCESS = {
    "public": None,
    "secret": {"view": ["auditors"], "run": ["deployers"]},
    "hidden": {"view": ["deployers"], "run": ["deployers"]},
}


@dataclass(frozen=True)
class User:
    """Requests through the proxy as one user with their groups."""

    app: InProcessApp
    name: str
    groups: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Forwarded-User": self.name, "X-Forwarded-Groups": self.groups}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.app.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.app.post(path, headers=self.headers, **kwargs)

    def start(self, scenario_id: str) -> httpx.Response:
        return self.post("/api/runs", json={"scenario_id": scenario_id, "input": {"url": URL}})

    def run_ids(self, **query: Any) -> list[str]:
        response = self.get("/api/runs", params={"limit": 200, **query})
        assert response.status_code == 200, response.text
        return [run["run_id"] for run in response.json()["runs"]]


def scenario_folder(folder: Path) -> Path:
    shipped = json.loads((SCENARIOS / "news_source_discovery_v1.json").read_text(encoding="utf-8"))
    folder.mkdir()
    for scenario_id, access in ACCESS.items():
        scenario = {**shipped, "scenario_id": scenario_id, "name": f"News sources ({scenario_id})"}
        if access is not None:
            scenario["access"] = access
        (folder / f"{scenario_id}.json").write_text(json.dumps(scenario), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    home = tmp_path_factory.mktemp("access-api")
    with in_process(home, scenarios=scenario_folder(home / "scenarios"), **PROXY) as app:
        yield app


def user(app: InProcessApp, name: str) -> User:
    groups = {
        "root": "admins",
        "alice": "ops,deployers",  # runs secret and hidden
        "bob": "ops,auditors",  # sees secret, may not run it
        "carol": "ops",  # sees neither
        "dave": "readers,deployers",  # a viewer: on the lists, yet runs nothing
    }[name]
    return User(app, name, groups)


def finished(who: User, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        run = who.get(f"/api/runs/{run_id}").json()
        if run["status"] in {"success", "failed", "cancelled"}:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.02)


def started(who: User, scenario_id: str) -> str:
    response = who.start(scenario_id)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert finished(who, run_id)["status"] == "success"
    return run_id


@pytest.fixture(scope="module")
def secret_run(app: InProcessApp) -> str:
    return started(user(app, "alice"), "secret")


def test_the_scenario_list_shows_only_what_each_user_may_see(app: InProcessApp) -> None:
    def listed(name: str) -> list[str]:
        response = user(app, name).get("/api/scenarios")
        assert response.status_code == 200, response.text
        return sorted(s["id"] for s in response.json())

    assert listed("root") == ["hidden", "public", "secret"]
    assert listed("alice") == ["hidden", "public", "secret"]
    assert listed("bob") == ["public", "secret"]
    assert listed("carol") == ["public"]
    assert listed("dave") == ["hidden", "public", "secret"]  # run lists grant view, whatever the role


def test_a_scenario_outside_a_users_view_is_unknown_to_them(app: InProcessApp) -> None:
    carol = user(app, "carol")
    for path in ("/api/scenarios/secret", "/api/scenarios/secret/checks"):
        response = carol.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Unknown scenario_id: secret"}
    preview = carol.post("/api/scenarios/secret/preview", json={"input": {"url": URL}})
    assert preview.status_code == 404
    assert preview.json() == {"detail": "Unknown scenario_id: secret"}
    # The same answers as for a scenario that does not exist.
    assert carol.get("/api/scenarios/nowhere").json() == {"detail": "Unknown scenario_id: nowhere"}


def test_the_view_list_shows_the_scenario_its_checks_and_preview(app: InProcessApp) -> None:
    bob = user(app, "bob")
    scenario = bob.get("/api/scenarios/secret")
    assert scenario.status_code == 200
    assert scenario.json()["scenario_id"] == "secret"
    assert bob.get("/api/scenarios/secret/checks").json()["valid"] is True
    preview = bob.post("/api/scenarios/secret/preview", json={"input": {"url": URL}})
    assert preview.status_code == 200
    assert preview.json()["steps"][0]["input"] == {"url": URL}


def test_refusals_to_start_create_no_run(app: InProcessApp) -> None:
    root = user(app, "root")
    before = root.run_ids()

    # A viewer sees the scenario, and is refused running it by role.
    dave = user(app, "dave")
    assert dave.get("/api/scenarios/hidden").status_code == 200
    response = dave.start("hidden")
    assert response.status_code == 403
    assert response.json() == {"detail": "Refused: this needs the operator role; yours is viewer"}

    # An operator on the view list but not the run list is refused by the scenario.
    response = user(app, "bob").start("secret")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Refused: you may not run scenario 'secret' (its run list names neither you nor your groups)"
    }

    # An operator outside the view list is told what anyone is of a scenario that does not exist.
    response = user(app, "carol").start("secret")
    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown scenario_id: secret"}

    # Judged before the input: a bad input tells nothing of a scenario one may not see or run.
    bad_input = {"scenario_id": "secret", "input": {"url": 42}}
    assert user(app, "carol").post("/api/runs", json=bad_input).status_code == 404
    assert user(app, "bob").post("/api/runs", json=bad_input).status_code == 403

    assert root.run_ids() == before


def test_the_run_list_grants_run_and_view(app: InProcessApp) -> None:
    # alice is on neither view list but on both run lists.
    alice = user(app, "alice")
    assert alice.get("/api/scenarios/hidden").status_code == 200
    run_id = started(alice, "hidden")
    assert alice.get(f"/api/runs/{run_id}").json()["scenario_id"] == "hidden"
    assert run_id in alice.run_ids()


def test_admin_bypasses_every_access_list(app: InProcessApp, secret_run: str) -> None:
    root = user(app, "root")
    run_id = started(root, "hidden")
    assert {run_id, secret_run} <= set(root.run_ids())
    rerun = root.post(f"/api/runs/{secret_run}/rerun")
    assert rerun.status_code == 202
    assert finished(root, rerun.json()["run_id"])["status"] == "success"


def test_a_run_outside_a_users_view_is_unknown_everywhere(app: InProcessApp, secret_run: str) -> None:
    carol = user(app, "carol")
    unknown = {"detail": f"Unknown run_id: {secret_run}"}
    for path in (
        f"/api/runs/{secret_run}",
        f"/api/runs/{secret_run}/events",
        f"/api/runs/{secret_run}/steps/{STEP}/output",
    ):
        response = carol.get(path)
        assert response.status_code == 404, path
        assert response.json() == unknown, path
    assert secret_run not in carol.run_ids()
    assert carol.run_ids(scenario_id="secret") == []
    for action in ("cancel", "rerun"):
        response = carol.post(f"/api/runs/{secret_run}/{action}")
        assert response.status_code == 404, action
        assert response.json() == unknown
    # Its outputs cannot be borrowed for a preview either, nor its scenario learnt from the refusal.
    preview = carol.post("/api/scenarios/public/preview", json={"input": {"url": URL}, "outputs_from_run": secret_run})
    assert preview.status_code == 404
    assert preview.json() == unknown


def test_a_run_in_a_users_view_shows_with_its_events_and_output(app: InProcessApp, secret_run: str) -> None:
    bob = user(app, "bob")
    assert bob.get(f"/api/runs/{secret_run}").json()["status"] == "success"
    events = bob.get(f"/api/runs/{secret_run}/events")
    assert events.status_code == 200
    assert [frame.event for frame in frames(parse_text(events.text))][-1] == "run_finished"
    output = bob.get(f"/api/runs/{secret_run}/steps/{STEP}/output")
    assert output.status_code == 200
    assert output.json()["url"] == URL
    assert secret_run in bob.run_ids()
    assert secret_run in bob.run_ids(scenario_id="secret")


def test_who_may_see_a_run_but_not_run_its_scenario_may_not_cancel_or_rerun_it(
    app: InProcessApp, secret_run: str
) -> None:
    root = user(app, "root")
    before = root.run_ids()
    bob = user(app, "bob")
    rerun = bob.post(f"/api/runs/{secret_run}/rerun")
    assert rerun.status_code == 403
    assert rerun.json() == {
        "detail": "Refused: you may not run scenario 'secret' (its run list names neither you nor your groups)"
    }
    # Refused before being told the run has ended (409): the answer does not depend on the run's state.
    cancel = bob.post(f"/api/runs/{secret_run}/cancel")
    assert cancel.status_code == 403
    assert cancel.json() == {
        "detail": "Refused: you may not cancel runs of scenario 'secret' "
        "(its run list names neither you nor your groups)"
    }
    assert root.run_ids() == before
    # Whoever may run it is told the run has ended.
    assert user(app, "alice").post(f"/api/runs/{secret_run}/cancel").status_code == 409


def test_a_page_of_runs_is_full_whatever_is_hidden_between(app: InProcessApp) -> None:
    alice, carol = user(app, "alice"), user(app, "carol")
    older = started(alice, "public")
    for _ in range(3):
        started(alice, "secret")
    newer = started(alice, "public")

    first = carol.get("/api/runs", params={"scenario_id": "", "limit": 1}).json()
    assert [run["run_id"] for run in first["runs"]] == [newer]
    second = carol.get("/api/runs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [run["run_id"] for run in second["runs"]] == [older]
    # alice sees them all, in the same order.
    assert alice.run_ids()[:5] == [newer, *alice.run_ids(scenario_id="secret")[:3], older]


def test_nobody_identified_is_asked_to_sign_in(app: InProcessApp) -> None:
    root = user(app, "root")
    before = root.run_ids()
    for method, path in (
        ("GET", "/api/scenarios"),
        ("GET", "/api/runs"),
        ("POST", "/api/runs"),
        ("GET", "/api/scenarios/public/checks"),
    ):
        response = app.client.request(method, path, json={"scenario_id": "public", "input": {"url": URL}})
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="stepline"'
        assert response.json()["detail"].startswith("Sign-in required")
    assert root.run_ids() == before


@pytest.mark.parametrize(
    ("name", "groups", "detail"),
    [
        ("eve", "strangers", "Refused: your account has no role in Stepline"),
        ("e\x01ve", "ops", "Refused: the identity header is malformed"),
        ("e" * 10_000, "ops", "Refused: the identity header is malformed"),
        ("eve", "ops," + "x" * 10_000, "Refused: the groups header is malformed"),
        ("eve", "ops\x7f", "Refused: the groups header is malformed"),
    ],
    ids=["no mapped group", "control character", "10 KB name", "10 KB groups", "control character in groups"],
)
def test_a_bad_identity_is_refused_and_creates_nothing(app: InProcessApp, name: str, groups: str, detail: str) -> None:
    root = user(app, "root")
    before = root.run_ids()
    refused = User(app, name, groups)
    for response in (refused.start("public"), refused.get("/api/runs"), refused.get("/api/scenarios/public")):
        assert response.status_code == 403
        assert response.json() == {"detail": detail}
    assert root.run_ids() == before


UNTRUSTED = "Refused: the identity header is accepted only from the configured proxies"


def test_the_identity_header_from_an_untrusted_address_is_refused(tmp_path: Path) -> None:
    settings = {**PROXY, "trusted_proxies": "10.0.0.1"}
    with in_process(tmp_path, scenarios=scenario_folder(tmp_path / "scenarios"), **settings) as app:
        root = user(app, "root")
        for response in (root.start("public"), root.get("/api/runs"), root.get("/api/scenarios")):
            assert response.status_code == 403
            assert response.json() == {
                "detail": "Refused: the identity header is accepted only from the configured proxies"
            }
        assert app.call(_count_runs(app)) == 0


async def _count_runs(app: InProcessApp) -> int:
    return len((await app.state["runs"].page(limit=200)).runs)


def test_runs_of_a_scenario_gone_from_the_folder_are_an_admins_to_see(tmp_path: Path) -> None:
    folder = scenario_folder(tmp_path / "scenarios")
    with in_process(tmp_path, scenarios=folder, **PROXY) as app:
        alice, carol, root = user(app, "alice"), user(app, "carol"), user(app, "root")
        run_id = started(alice, "hidden")
        assert carol.get(f"/api/runs/{run_id}").status_code == 404
        (folder / "hidden.json").unlink()
        app.call(app.state["reload"]())
        assert [s["id"] for s in alice.get("/api/scenarios").json()] == ["public", "secret"]
        # Its access lists went with it: who they let see its runs is unknown, so only an admin sees them.
        for who in (alice, carol):
            assert who.get(f"/api/runs/{run_id}").status_code == 404
            assert run_id not in who.run_ids()
        assert root.get(f"/api/runs/{run_id}").json()["scenario_id"] == "hidden"
        assert run_id in root.run_ids()
        again = root.post(f"/api/runs/{run_id}/rerun")
        assert again.status_code == 404
        assert again.json() == {"detail": f"Scenario 'hidden' of run {run_id} no longer exists"}


def test_the_api_description_names_the_refusals(app: InProcessApp) -> None:
    paths = app.get("/openapi.json").json()["paths"]
    refusals = paths["/api/runs"]["post"]["responses"]["403"]["content"]["application/json"]["examples"]
    assert refusals["not_on_the_run_list"]["value"]["detail"].startswith("Refused: you may not run scenario")
    cancel = paths["/api/runs/{run_id}/cancel"]["post"]["responses"]["403"]["content"]["application/json"]
    assert "you may not cancel runs of scenario" in cancel["examples"]["not_on_the_run_list"]["value"]["detail"]
    assert "you may not see" in paths["/api/runs/{run_id}"]["get"]["responses"]["404"]["description"]
