"""docs/deploy.md as written: three replicas on one PostgreSQL behind nginx, with the files of deploy/.

The replicas are started as deploy/stepline@.service says, with deploy/stepline.env's settings; nginx runs
deploy/nginx.conf. Only ports and paths are changed (the replicas' ports, nginx's, the database's URL, the
scenario folder and the MCP config file), and leases are shorter, to be quick. Requests go through nginx
as a browser's would, naming the public host; a replica is asked directly only for its own /healthz, as a monitor would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import PROJECT_ROOT, StepServer, free_port, start_server, wait_until
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from sse import Frame, parse_lines

from web.resources import SCENARIOS

DEPLOY = PROJECT_ROOT / "deploy"
NGINX = Path("/usr/sbin/nginx")
PUBLIC_HOST = "stepline.example.com"
# deploy/nginx.conf's upstream addresses, in order, and what it listens on.
CONF_REPLICAS = ("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003")
CONF_LISTEN = "listen 80;"
NEWS = "news_source_discovery_v1"
NEWS_INPUT = {"url": "https://signal.example/culture/lighthouse-library-explainer"}
# Seconds each demo tool call takes: a run of four steps is still running when its replica is killed.
DEMO_DELAY = "1"
# The one setting changed from the deployment's: leases of 3 s rather than 10, so a killed replica's runs
# are taken over sooner.
LEASE_SECONDS = "3"
STREAM_SECONDS = 60
# Where nginx keeps its temporary files: in the test's folder, not the system's.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

pytestmark = pytest.mark.skipif(not NGINX.exists(), reason="needs nginx (apt-get install nginx)")


@dataclass
class Deployment:
    nginx: subprocess.Popen[bytes]
    url: str
    replicas: dict[str, StepServer]
    token: str
    database: Any  # the PostgreSQL server (tests/postgres.py)

    def client(self, *, token: bool = True, timeout: float = 10) -> httpx.Client:
        """A client of nginx, naming the public host; with the admin token unless `token` is False."""
        headers = {"Host": PUBLIC_HOST}
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def alive(self) -> list[str]:
        return [replica_id for replica_id, server in self.replicas.items() if server.process.poll() is None]

    def replica_health(self, replica_id: str) -> dict[str, Any]:
        """One replica's /healthz as an admin sees it, asked directly."""
        server = self.replicas[replica_id]
        response = httpx.get(f"{server.url}/healthz", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()


def environment_file() -> dict[str, str]:
    """deploy/stepline.env as systemd reads it: KEY=VALUE lines, comments and blank lines left out."""
    settings = {}
    for line in (DEPLOY / "stepline.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


def replica_arguments(port: int) -> list[str]:
    """The flags deploy/stepline@.service starts the replica on `port` with (its instance name)."""
    unit = (DEPLOY / "stepline@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1:4] == ["serve", "--port", "%i"], argv
    return [arg.replace("%i", str(port)).replace("%H", "deploy-test") for arg in argv[4:]]


def nginx_config(tmp: Path, port: int, replica_ports: list[int]) -> Path:
    """deploy/nginx.conf with the test's ports, inside the least main configuration nginx needs."""
    site = (DEPLOY / "nginx.conf").read_text()
    assert site.count(CONF_LISTEN) == 1, "deploy/nginx.conf should listen once, on port 80"
    site = site.replace(CONF_LISTEN, f"listen 127.0.0.1:{port};")
    for address, replica_port in zip(CONF_REPLICAS, replica_ports, strict=True):
        assert address in site, f"deploy/nginx.conf should list the replica {address}"
        site = site.replace(address, f"127.0.0.1:{replica_port}")
    (tmp / "stepline.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(
        f"error_log {tmp}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        + "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in TEMP_PATHS)
        + f"    include {tmp}/stepline.conf;\n"
        "}\n"
    )
    return main


def start_nginx(tmp: Path, port: int, replica_ports: list[int]) -> subprocess.Popen[bytes]:
    config = nginx_config(tmp, port, replica_ports)
    # In the foreground, one process: as root, workers would otherwise run as nobody, who cannot reach tmp.
    process = subprocess.Popen(
        [
            str(NGINX),
            "-p",
            str(tmp),
            "-c",
            str(config),
            "-e",
            str(tmp / "error.log"),
            "-g",
            f"daemon off; master_process off; pid {tmp}/nginx.pid;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {(tmp / 'error.log').read_text(errors='replace')}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": PUBLIC_HOST}, timeout=1).is_success
        except httpx.HTTPError:
            return False

    wait_until(listening, 10, "nginx to pass /healthz on")
    return process


def stepline(*args: str, env: dict[str, str]) -> str:
    """A `stepline` command's output; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "web", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deploy")
    mcp_config = tmp / "mcp.json"
    demo = {
        "command": sys.executable,
        "args": ["-m", "web.demo"],
        "cwd": str(PROJECT_ROOT),
        "env": {"STEPLINE_DEMO_DELAY": DEMO_DELAY},
    }
    mcp_config.write_text(json.dumps({"mcpServers": {"demo": demo}}))
    settings = environment_file()
    for name in ("STEPLINE_DATABASE_URL", "STEPLINE_SCENARIOS", "STEPLINE_MCP_CONFIG"):
        assert name in settings, f"deploy/stepline.env should set {name}"
    settings |= {
        "STEPLINE_DATABASE_URL": postgres.fresh_database(),
        "STEPLINE_SCENARIOS": str(SCENARIOS),
        "STEPLINE_MCP_CONFIG": str(mcp_config),
    }
    env = {**os.environ, **settings}
    # Once, before any replica starts; then the tokens every replica reads.
    assert "migrated from schema version 0" in stepline("db", "migrate", env=env)
    token = stepline("token", "create", "deploy-admin", "--role", "admin", env=env).strip()

    replicas: dict[str, StepServer] = {}
    nginx = None
    try:
        ports = [free_port() for _ in CONF_REPLICAS]
        for port in ports:
            server = start_server(tmp, *replica_arguments(port), "--lease-seconds", LEASE_SECONDS, env=env, port=port)
            replicas[f"deploy-test-{port}"] = server
        nginx_port = free_port()
        nginx = start_nginx(tmp, nginx_port, ports)
        yield Deployment(nginx, f"http://127.0.0.1:{nginx_port}", replicas, token, postgres)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for server in replicas.values():
            if server.process.poll() is None:
                server.stop(signal.SIGKILL)


def test_healthz_through_nginx_answers_from_each_replica_in_turn(deployment: Deployment) -> None:
    seen = set()
    with deployment.client(token=False) as anonymous:
        for _ in range(2 * len(deployment.replicas)):
            response = anonymous.get("/healthz")
            assert response.status_code == 200, response.text
            health = response.json()
            assert health["status"] == "ok"
            assert health["replica"]["database"] == "ok"
            assert "runs" not in health["replica"]  # which runs a replica holds is for admins
            seen.add(health["replica"]["id"])
    assert seen == set(deployment.replicas)
    for replica_id in deployment.replicas:
        replica = deployment.replica_health(replica_id)["replica"]
        assert replica["id"] == replica_id
        assert replica["database"] == "ok" and replica["listening"] is True
        assert replica["lease_seconds"] == float(LEASE_SECONDS)


def test_a_form_drawn_by_one_replica_is_taken_by_another(deployment: Deployment) -> None:
    """The replicas share STEPLINE_SECRET, so a run form's signed token holds on whichever replica gets the post."""
    with deployment.client() as client:
        for _ in deployment.replicas:  # each request goes to the next replica: every pair is tried
            page = client.get(f"/scenarios/{NEWS}")
            assert page.status_code == 200, page.text
            csrf = page.text.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
            posted = client.post(
                f"/scenarios/{NEWS}",
                data={"_csrf": csrf, "in.url": NEWS_INPUT["url"]},
                headers={"Sec-Fetch-Site": "same-origin"},
            )
            assert posted.status_code == 303, posted.text
            assert posted.headers["location"].startswith("/runs/")
            assert client.get(posted.headers["location"]).status_code == 200


@dataclass
class Reader:
    """Reads a run's event stream through nginx as EventSource does: when the connection ends or breaks before
    run_finished, it connects again with Last-Event-ID."""

    deployment: Deployment
    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    error: BaseException | None = None

    def read(self, first: httpx.Response) -> None:
        response: httpx.Response | None = first
        deadline = time.monotonic() + STREAM_SECONDS
        try:
            with self.deployment.client(token=False, timeout=30) as client:
                while not self.finished and time.monotonic() < deadline:
                    if response is None:
                        last = self.events[-1]["seq"] if self.events else None
                        headers = {"Last-Event-ID": str(last)} if last is not None else {}
                        response = client.send(
                            client.build_request("GET", f"/api/runs/{self.run_id}/events", headers=headers),
                            stream=True,
                        )
                    self.connections += 1
                    try:
                        assert response.status_code == 200, response.read()
                        for item in parse_lines(response.iter_lines()):
                            if isinstance(item, Frame):
                                self.events.append(item.json())
                    except httpx.TransportError:
                        pass  # the replica serving the stream died: connect again
                    finally:
                        response.close()
                        response = None
        except BaseException as exc:  # reported by the test's thread
            self.error = exc

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] == "run_finished"


@pytest.mark.anyio
async def test_an_mcp_client_keeps_its_session_through_nginx(deployment: Deployment) -> None:
    """A session lives on the replica that opened it: nginx sends all of a client's requests there."""
    headers = {"Host": PUBLIC_HOST, "Authorization": f"Bearer {deployment.token}"}
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(f"{deployment.url}/mcp", http_client=http)
        client_info = types.Implementation(name="deploy-test", version="1.0")
        async with Client(transport, mode="legacy", client_info=client_info) as client:
            assert NEWS in {tool.name for tool in (await client.list_tools()).tools}
            with anyio.fail_after(STREAM_SECONDS):
                result = await client.call_tool(NEWS, NEWS_INPUT)
    assert not result.is_error, result.content
    assert f"http://{PUBLIC_HOST}/runs/" in str(result.content)  # its links name the public host


def follow_while_its_owner_stops(deployment: Deployment, sig: int) -> tuple[str, list[Reader], str]:
    """Start a run through nginx, read its stream through nginx on every replica, and stop the run's owner with
    `sig` once the run is under way; the run, its readers once it has ended, and the stopped replica's id."""
    with deployment.client() as client:
        started = client.post("/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT})
        assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    alive = deployment.alive()
    assert len(alive) >= 2, alive
    # One stream per replica: nginx gives each new one to the replica with the fewest open, so the run's owner
    # serves one of them, and that one is cut when the owner stops.
    readers, threads = [], []
    with deployment.client(token=False, timeout=30) as opener:
        for _ in alive:
            response = opener.send(opener.build_request("GET", f"/api/runs/{run_id}/events"), stream=True)
            reader = Reader(deployment, run_id)
            readers.append(reader)
            threads.append(threading.Thread(target=reader.read, args=(response,), daemon=True))
    for thread in threads:
        thread.start()

    def under_way() -> bool:
        return any(event["type"] == "step_finished" for event in readers[0].events)

    wait_until(under_way, 20, "the run's first step to finish")
    owners = [replica_id for replica_id in alive if run_id in deployment.replica_health(replica_id)["replica"]["runs"]]
    assert len(owners) == 1, owners
    deployment.replicas[owners[0]].stop(sig)
    for thread in threads:
        thread.join(STREAM_SECONDS + 10)
    return run_id, readers, owners[0]


def assert_went_on(deployment: Deployment, run_id: str, readers: list[Reader], stopped: str) -> None:
    """Every reader read the whole run once, resumed by another replica, and the one its owner served reconnected."""
    for reader in readers:
        assert reader.error is None, reader.error
        seqs = [event["seq"] for event in reader.events]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # every event once, in order, none missing
        assert reader.events[-1]["type"] == "run_finished" and reader.events[-1]["status"] == "success"
        resumed = [event for event in reader.events if event["type"] == "run_resumed"]
        assert len(resumed) == 1 and resumed[0]["rerun_steps"], resumed
    assert all(reader.events == readers[0].events for reader in readers)
    assert max(reader.connections for reader in readers) >= 2, [reader.connections for reader in readers]
    with deployment.client(token=False) as anonymous:
        snapshot = anonymous.get(f"/api/runs/{run_id}")
        assert snapshot.status_code == 200 and snapshot.json()["status"] == "success"
        assert [step["status"] for step in snapshot.json()["steps"]] == ["success"] * 4
        page = anonymous.get(f"/runs/{run_id}")
        assert page.status_code == 200, page.text
        assert run_id in page.text and 'data-status="success"' in page.text
        health = anonymous.get("/healthz")  # from a replica still up
        assert health.status_code == 200 and health.json()["replica"]["id"] != stopped


def test_a_run_goes_on_through_nginx_when_its_replica_is_killed(deployment: Deployment) -> None:
    run_id, readers, killed = follow_while_its_owner_stops(deployment, signal.SIGKILL)
    assert_went_on(deployment, run_id, readers, killed)


def test_a_replica_stopped_gracefully_hands_its_run_over(deployment: Deployment) -> None:
    run_id, readers, stopped = follow_while_its_owner_stops(deployment, signal.SIGTERM)
    assert deployment.replicas[stopped].process.returncode in (0, -signal.SIGTERM)
    assert "Handed 1 live run(s) over to the other replicas" in deployment.replicas[stopped].log()
    assert_went_on(deployment, run_id, readers, stopped)


# Last: the database is stopped and started again under the replicas still up.


@contextlib.contextmanager
def database_away(deployment: Deployment) -> Iterator[None]:
    """PostgreSQL stopped for the block, once every replica has noticed; started again on the same port after it,
    whatever happened, and waited for until every replica reaches it again."""

    def states() -> set[str]:
        # As anyone sees it: an admin's token could not be checked while the database is away.
        return {
            httpx.get(f"{deployment.replicas[replica_id].url}/healthz", timeout=5).json()["status"]
            for replica_id in deployment.alive()
        }

    deployment.database.stop("fast")
    try:
        wait_until(lambda: states() == {"degraded"}, 20, "every replica to notice the database is away")
        yield
    finally:
        deployment.database.resume()
    wait_until(lambda: states() == {"ok"}, 30, "every replica to reach the database again")


def test_while_the_database_is_away_replicas_say_so_and_live_runs_go_on_after(deployment: Deployment) -> None:
    with deployment.client() as client:
        started = client.post("/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT})
        assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    with deployment.client(token=False, timeout=30) as anonymous:
        first = anonymous.send(anonymous.build_request("GET", f"/api/runs/{run_id}/events"), stream=True)
        reader = Reader(deployment, run_id)
        thread = threading.Thread(target=reader.read, args=(first,), daemon=True)
        thread.start()
        wait_until(lambda: any(e["type"] == "step_finished" for e in reader.events), 20, "the first step to end")

        with database_away(deployment):

            def degraded() -> bool:
                health = anonymous.get("/healthz").json()
                return health["status"] == "degraded" and health["replica"]["database"] == "failing"

            wait_until(degraded, 20, "/healthz through nginx to say the database is failing")

        thread.join(STREAM_SECONDS + 10)
        assert reader.error is None, reader.error
        seqs = [event["seq"] for event in reader.events]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # nothing lost, nothing repeated
        assert reader.events[-1]["type"] == "run_finished" and reader.events[-1]["status"] == "success"
        snapshot = anonymous.get(f"/api/runs/{run_id}").json()
        assert [step["status"] for step in snapshot["steps"]] == ["success"] * 4
    with deployment.client() as client:
        # New runs are taken again (a replica may answer 503 with Retry-After a little longer: a client retries).
        def taken() -> bool:
            again = client.post("/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT})
            assert again.status_code in (202, 503), again.text
            return again.status_code == 202

        wait_until(taken, 30, "a new run to be taken")


def test_a_run_started_with_a_token_while_the_database_is_away_is_answered_503_with_retry_after(
    deployment: Deployment,
) -> None:
    with deployment.client() as client, database_away(deployment):
        refused = client.post("/api/runs", json={"scenario_id": NEWS, "input": NEWS_INPUT}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0  # passed on by nginx, not tried on another replica
