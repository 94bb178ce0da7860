"""`stepline serve` beyond the loopback: it starts only when someone could be identified there (the portal's
proxy header, an API token, or anonymous requests explicitly allowed), and refuses identity settings that
cannot work. Real `stepline serve` processes, and tokens made with the real `stepline token` command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import PROJECT_ROOT, StepServer, free_port

NEWS_RUN = {
    "scenario_id": "news_source_discovery_v1",
    "input": {"url": "https://signal.example/culture/lighthouse-library-explainer"},
}
REFUSAL_SECONDS = 30


def serve_refused(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`stepline serve` with `args`, expected to stop before it listens."""
    command = [sys.executable, "-m", "web", "serve", "--port", str(free_port()), "--data-dir", str(data_dir), *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=REFUSAL_SECONDS)


def token_command(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "web", "token", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=REFUSAL_SECONDS)
    assert done.returncode == 0, done.stderr
    return done


def test_every_address_with_no_identity_source_refuses_to_start_saying_what_to_configure(tmp_path: Path) -> None:
    done = serve_refused(tmp_path / "data", "--host", "0.0.0.0")

    assert done.returncode == 2
    assert "not starting: 0.0.0.0 is reachable from other machines" in done.stderr
    for way in ("--auth-header X-Forwarded-User --trusted-proxies", "stepline token create", "--allow-anonymous ROLE"):
        assert way in done.stderr
    assert not (tmp_path / "data").exists(), "nothing is created by a server that does not start"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--auth-header", "X-Forwarded-User"),
            "--auth-header X-Forwarded-User needs --trusted-proxies: the addresses of the proxies that set it",
        ),
        (
            ("--auth-header", "X-Forwarded-User", "--trusted-proxies", "127.0.0.1"),
            "--auth-header X-Forwarded-User needs --role-map: the role of each group",
        ),
        (
            ("--auth-header", "X-Forwarded-User", "--trusted-proxies", "127.0.0.1", "--role-map", "ops=operator,qa"),
            "--role-map (STEPLINE_ROLE_MAP): role map entry 'qa' is not GROUP=ROLE",
        ),
        (("--role-map", "ops=boss"), "role map entry 'ops=boss': unknown role 'boss' (viewer, operator or admin)"),
        (
            ("--auth-header", "X-Forwarded-User", "--trusted-proxies", "10.0.0.0/33"),
            "--trusted-proxies (STEPLINE_TRUSTED_PROXIES): '10.0.0.0/33' is not an IP address or network",
        ),
        (("--allow-anonymous", "root"), "argument --allow-anonymous: invalid choice: 'root'"),
    ],
    ids=[
        "header without proxies", "header without roles", "role map entry without role", "unknown role",
        "bad proxy network", "bad role",
    ],  # fmt: skip
)
def test_identity_settings_that_cannot_work_are_refused_naming_the_problem(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = serve_refused(tmp_path / "data", *args)

    assert done.returncode == 2
    assert message in done.stderr


def test_anonymous_viewers_allowed_on_every_address_may_look_but_not_run(
    make_server: Callable[..., StepServer],
) -> None:
    server = make_server("--host", "0.0.0.0", "--allow-anonymous", "viewer")

    assert httpx.get(f"{server.url}/api/scenarios", timeout=10).status_code == 200
    response = httpx.post(f"{server.url}/api/runs", json=NEWS_RUN, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"detail": "Refused: this needs the operator role; yours is viewer"}
    assert httpx.get(f"{server.url}/api/runs", timeout=10).json()["runs"] == []
    assert "requests that name nobody are served with the viewer role (--allow-anonymous)" in server.log()


def test_a_token_in_the_history_lets_the_server_start_and_only_its_bearer_in(
    tmp_path: Path, make_server: Callable[..., StepServer]
) -> None:
    data_dir = tmp_path / "data"
    secret = token_command(data_dir, "create", "ci", "--role", "operator").stdout.strip()

    server = make_server("--host", "0.0.0.0", "--data-dir", str(data_dir))

    nobody = httpx.post(f"{server.url}/api/runs", json=NEWS_RUN, timeout=10)
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == 'Bearer realm="stepline"'
    bearer = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(f"{server.url}/api/runs", json=NEWS_RUN, headers=bearer, timeout=10).status_code == 202
    # Open to anyone, in summary.
    health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert health == {"status": "ok", "servers": {"demo": {"state": "ready"}}}


def test_only_revoked_or_expired_tokens_do_not_count(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token_command(data_dir, "create", "gone", "--role", "admin")
    token_command(data_dir, "revoke", "gone")
    token_command(data_dir, "create", "brief", "--role", "admin", "--expires", "1s")
    time.sleep(2)  # its expiry is to the second

    done = serve_refused(data_dir, "--host", "0.0.0.0")

    assert done.returncode == 2
    assert "no one could be identified there" in done.stderr


def test_the_portals_proxy_header_lets_the_server_start_and_names_the_user(
    make_server: Callable[..., StepServer],
) -> None:
    env = {**os.environ, "STEPLINE_ROLE_MAP": "*=viewer,ops=operator"}
    server = make_server(
        "--host", "0.0.0.0",
        "--auth-header", "X-Forwarded-User",
        "--groups-header", "X-Forwarded-Groups",
        "--trusted-proxies", "127.0.0.1",
        env=env,
    )  # fmt: skip

    assert httpx.get(f"{server.url}/api/runs", timeout=10).status_code == 401
    viewer = {"X-Forwarded-User": "vera"}
    assert httpx.get(f"{server.url}/api/runs", headers=viewer, timeout=10).status_code == 200
    assert httpx.post(f"{server.url}/api/runs", json=NEWS_RUN, headers=viewer, timeout=10).status_code == 403
    operator = {"X-Forwarded-User": "otto", "X-Forwarded-Groups": "ops"}
    assert httpx.post(f"{server.url}/api/runs", json=NEWS_RUN, headers=operator, timeout=10).status_code == 202
