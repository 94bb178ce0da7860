"""API tokens: `stepline token create | list | revoke` (the real CLI, in its own process) and the server
accepting, limiting and refusing them (a real `stepline serve`, or the in-process app bound beyond the
loopback, where anonymous requests are refused)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, wait_until
from inprocess import InProcessApp

TOKEN = re.compile(r"stl_[A-Za-z0-9_-]{43}")
OUTLET = "outlet_profile_v1"  # input {"domain": ...}
NEWS = "news_source_discovery_v1"  # input {"url": ...}


def token_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "token", *args, "--data-dir", str(data_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_token(data_dir: Path, name: str, role: str, *extra: str) -> str:
    done = token_cli(data_dir, "create", name, "--role", role, *extra)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert TOKEN.fullmatch(secret), done.stdout
    return secret


def listed(data_dir: Path) -> dict[str, dict[str, Any]]:
    done = token_cli(data_dir, "list", "--json")
    assert done.returncode == 0, done.stderr
    return {token["name"]: token for token in json.loads(done.stdout)}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def outlet_run() -> dict[str, Any]:
    return {"scenario_id": OUTLET, "input": {"domain": "daily.example.com"}}


@pytest.fixture
def exposed_app(make_app: Callable[..., InProcessApp], monkeypatch: pytest.MonkeyPatch) -> InProcessApp:
    """The in-process app as if bound to every address: a request naming nobody is refused."""
    monkeypatch.delenv("STEPLINE_ALLOW_ANONYMOUS", raising=False)
    app = make_app(host="0.0.0.0")
    assert app.get("/api/runs").status_code == 401
    return app


def test_create_list_and_revoke_on_a_fresh_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    done = token_cli(data_dir, "create", "ci.build-1", "--role", "operator", "--scenario", OUTLET, "--expires", "30d")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert TOKEN.fullmatch(secret)
    assert "shown only this once" in done.stderr and "Authorization: Bearer" in done.stderr

    token = listed(data_dir)["ci.build-1"]
    assert token["role"] == "operator" and token["scenarios"] == [OUTLET] and token["state"] == "active"
    assert token["last_used_at"] is None and token["revoked_at"] is None
    created = datetime.fromisoformat(token["created_at"]).timestamp()
    assert datetime.fromisoformat(token["expires_at"]).timestamp() - created == 30 * 86400
    assert abs(created - time.time()) < 60

    # Only the hash is kept, and no listing ever shows it.
    stored = b"".join(path.read_bytes() for path in data_dir.glob("stepline.db*"))
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    table = token_cli(data_dir, "list")
    assert table.returncode == 0
    assert "ci.build-1" in table.stdout and "operator" in table.stdout and OUTLET in table.stdout
    assert secret not in table.stdout + json.dumps(listed(data_dir))
    assert "hash" not in table.stdout.lower() and "hash" not in json.dumps(listed(data_dir))

    revoked = token_cli(data_dir, "revoke", "ci.build-1")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert listed(data_dir)["ci.build-1"]["state"] == "revoked"
    again = token_cli(data_dir, "revoke", "ci.build-1")
    assert again.returncode == 0 and "already revoked" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "taken", "--role", "viewer"], "a token named 'taken' already exists"),
        (["create", "two words", "--role", "viewer"], "token name 'two words': use 1 to 64 letters"),
        (["create", "x" * 65, "--role", "viewer"], "use 1 to 64 letters"),
        (["create", "new", "--role", "viewer", "--expires", "5y"], "--expires '5y': give a number and a unit"),
        (["create", "new", "--role", "viewer", "--expires", "0d"], "must live longer"),
        (["create", "new", "--role", "viewer", "--expires", "4000d"], "at most 3650d"),
        (["create", "new", "--role", "admin", "--scenario", OUTLET], "an admin token sees every scenario"),
        (["create", "new", "--role", "viewer", "--scenario", "no/such"], "--scenario 'no/such'"),
        (["create", "new", "--role", "root"], "invalid choice: 'root'"),
        (["revoke", "nobody"], "no token named 'nobody'"),
    ],
)
def test_bad_commands_exit_2_naming_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    create_token(tmp_path, "taken", "viewer")
    done = token_cli(tmp_path, *args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert set(listed(tmp_path)) == {"taken"}  # nothing created, nothing changed


def test_a_revoked_name_is_not_reused(tmp_path: Path) -> None:
    create_token(tmp_path, "old", "viewer")
    assert token_cli(tmp_path, "revoke", "old").returncode == 0
    done = token_cli(tmp_path, "create", "old", "--role", "viewer")
    assert done.returncode == 2 and "already exists (revoked" in done.stderr


def test_tokens_against_a_running_server(
    tmp_path: Path, make_server: Callable[..., StepServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPLINE_ALLOW_ANONYMOUS", raising=False)
    data_dir = tmp_path / "data"
    # A server reachable from other machines starts only once it has a way to identify callers.
    admin = create_token(data_dir, "admin-ci", "admin", "--expires", "never")
    server = make_server("--host", "0.0.0.0", "--allowed-hosts", "127.0.0.1", "--data-dir", str(data_dir))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        anonymous = client.get("/api/runs")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")

        # Created beside the running server, on its data directory: usable at once.
        viewer = create_token(data_dir, "viewer-ci", "viewer")
        operator = create_token(data_dir, "operator-ci", "operator")
        assert client.get("/api/runs", headers=bearer(viewer)).status_code == 200
        refused = client.post("/api/runs", json=outlet_run(), headers=bearer(viewer))
        assert refused.status_code == 403 and refused.json()["detail"].startswith("Refused")

        started = client.post("/api/runs", json=outlet_run(), headers=bearer(operator))
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert client.get(f"/api/runs/{run_id}", headers=bearer(viewer)).json()["scenario_id"] == OUTLET
        events = client.get(f"/api/runs/{run_id}/events", headers=bearer(viewer))
        assert events.status_code == 200 and "run_finished" in events.text
        assert client.get(f"/api/runs/{run_id}/events").status_code == 401

        # Its use is recorded, off the request's path, and logged by name, never by secret.
        wait_until(lambda: listed(data_dir)["viewer-ci"]["last_used_at"] is not None, 10, "last_used_at")
        assert "Request with token 'viewer-ci' (viewer)" in server.log()

        assert token_cli(data_dir, "revoke", "viewer-ci").returncode == 0
        gone = client.get("/api/runs", headers=bearer(viewer))
        assert gone.status_code == 401 and gone.json()["detail"].startswith("Invalid token")
        assert client.get("/api/runs", headers=bearer(operator)).status_code == 200
        assert client.get("/api/runs", headers=bearer(admin)).status_code == 200

    log = server.log()
    assert "token 'viewer-ci', revoked at" in log
    for secret in (admin, viewer, operator):
        assert secret not in log


def test_a_token_limited_to_a_scenario_sees_no_other(exposed_app: InProcessApp) -> None:
    data_dir = exposed_app.settings.data_dir
    admin = create_token(data_dir, "admin", "admin")
    limited = create_token(data_dir, "outlet-only", "operator", "--scenario", OUTLET)
    other = exposed_app.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": "https://x.example/a"}},
                             headers=bearer(admin))
    assert other.status_code == 202, other.text
    other_id = other.json()["run_id"]

    assert exposed_app.post("/api/runs", json=outlet_run(), headers=bearer(limited)).status_code == 202
    scenario = exposed_app.get(f"/api/scenarios/{NEWS}", headers=bearer(limited))
    assert scenario.status_code == 404 and scenario.json()["detail"] == f"Unknown scenario_id: {NEWS}"
    assert exposed_app.get(f"/api/scenarios/{OUTLET}", headers=bearer(limited)).status_code == 200
    listed_ids = {s["id"] for s in exposed_app.get("/api/scenarios", headers=bearer(limited)).json()}
    assert listed_ids == {OUTLET}
    post = exposed_app.post("/api/runs", json={"scenario_id": NEWS, "input": {"url": "https://x.example/a"}},
                            headers=bearer(limited))
    assert post.status_code == 404 and post.json()["detail"] == f"Unknown scenario_id: {NEWS}"
    run = exposed_app.get(f"/api/runs/{other_id}", headers=bearer(limited))
    assert run.status_code == 404 and run.json()["detail"] == f"Unknown run_id: {other_id}"


def test_an_expired_token_is_refused(exposed_app: InProcessApp, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = exposed_app.settings.data_dir
    secret = create_token(data_dir, "short", "viewer", "--expires", "4s")
    expires_at = listed(data_dir)["short"]["expires_at"]
    assert exposed_app.get("/api/runs", headers=bearer(secret)).status_code == 200

    time.sleep(max(0.0, datetime.fromisoformat(expires_at).timestamp() - time.time()) + 0.2)
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        expired = exposed_app.get("/api/runs", headers=bearer(secret))
    assert expired.status_code == 401 and expired.json()["detail"].startswith("Invalid token")
    assert f"token 'short', expired at {expires_at}" in caplog.text
    assert listed(data_dir)["short"]["state"] == "expired"


def test_bad_tokens_get_401_and_create_nothing(exposed_app: InProcessApp, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = exposed_app.settings.data_dir
    admin = create_token(data_dir, "admin", "admin")
    revoked = create_token(data_dir, "revoked", "operator")
    assert token_cli(data_dir, "revoke", "revoked").returncode == 0
    forged = "stl_" + "A" * 43
    headers = {
        "forged": f"Bearer {forged}",
        "revoked": f"Bearer {revoked}",
        "not a stepline token": "Bearer hunter2",
        "Bearer missing": admin,
        "another scheme": f"Basic {admin}",
        "10 KB": "Bearer stl_" + "A" * 10_000,
        "control character": f"Bearer {admin[:10]}\x01{admin[10:]}",
        "tab": f"Bearer {admin[:10]}\t{admin[10:]}",
    }
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        for what, value in headers.items():
            response = exposed_app.post("/api/runs", json=outlet_run(), headers={"Authorization": value})
            assert response.status_code == 401, what
            assert response.json()["detail"].startswith("Invalid token"), what
            assert response.headers["www-authenticate"].startswith("Bearer"), what
    assert exposed_app.get("/api/runs", headers=bearer(admin)).json()["runs"] == []
    assert "an unknown token" in caplog.text and "token 'revoked', revoked at" in caplog.text
    for secret in (admin, revoked, forged):
        assert secret not in caplog.text


def test_without_history_no_token_is_accepted(make_app: Callable[..., InProcessApp], tmp_path: Path) -> None:
    app = make_app(host="0.0.0.0", history=False, allow_anonymous="viewer")
    secret = create_token(tmp_path / "unused", "ci", "admin")
    response = app.get("/api/runs", headers=bearer(secret))
    assert response.status_code == 401 and response.json()["detail"].startswith("Invalid token")


def database_token_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web", "token", *args, "--database", url],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tokens_in_a_postgresql_database_against_a_server_on_it(
    postgres: Any, make_server: Callable[..., StepServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPLINE_ALLOW_ANONYMOUS", raising=False)
    url = postgres.fresh_database()
    created = database_token_cli(url, "create", "pg-operator", "--role", "operator")
    assert created.returncode == 0, created.stderr
    operator = created.stdout.strip()
    assert TOKEN.fullmatch(operator), created.stdout
    server = make_server("--host", "0.0.0.0", "--allowed-hosts", "127.0.0.1", "--database", url)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/api/runs").status_code == 401
        started = client.post("/api/runs", json=outlet_run(), headers=bearer(operator))
        assert started.status_code == 202, started.text
        run = client.get(f"/api/runs/{started.json()['run_id']}", headers=bearer(operator))
        assert run.status_code == 200 and run.json()["scenario_id"] == OUTLET

        # Created while the server runs, in its database: usable at once.
        viewer = database_token_cli(url, "create", "pg-viewer", "--role", "viewer").stdout.strip()
        assert client.get("/api/runs", headers=bearer(viewer)).status_code == 200
        assert client.post("/api/runs", json=outlet_run(), headers=bearer(viewer)).status_code == 403

        revoked = database_token_cli(url, "revoke", "pg-operator")
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        gone = client.get("/api/runs", headers=bearer(operator))
        assert gone.status_code == 401 and gone.json()["detail"].startswith("Invalid token")
        assert client.get("/api/runs", headers=bearer(viewer)).status_code == 200

    listing = database_token_cli(url, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    tokens = {token["name"]: token for token in json.loads(listing.stdout)}
    assert {name: token["state"] for name, token in tokens.items()} == {"pg-operator": "revoked", "pg-viewer": "active"}

    def viewer_use_recorded() -> bool:
        done = database_token_cli(url, "list", "--json")
        return any(t["name"] == "pg-viewer" and t["last_used_at"] for t in json.loads(done.stdout))

    wait_until(viewer_use_recorded, 10, "the viewer token's last_used_at")
    assert "token 'pg-operator', revoked at" in server.log()
