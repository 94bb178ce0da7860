"""The hosts served (DNS rebinding) and whose X-Forwarded-* headers are believed, over the real app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from inprocess import InProcessApp

from web.cli import main
from web.settings import Settings

NEWS = "news_source_discovery_v1"
RUN = {"scenario_id": NEWS, "input": {"url": "https://signal.example/culture/lighthouse-library-explainer"}}
PROXY = ("10.0.0.1", 40000)
STRANGER = ("192.0.2.7", 40000)
# Allowed names for the app behind a proxy: its upstream address, the public name, and patterns.
PUBLIC = "stepline.example.com"
BEHIND_PROXY = {
    "allowed_hosts": f"127.0.0.1, {PUBLIC}, *.corp.example, 10.0.0.5:8443",
    "forwarded_allow_ips": "10.0.0.0/8",
}


@contextmanager
def app_with(folder: Path, client: tuple[str, int] = ("127.0.0.1", 50000), **settings: Any) -> Iterator[InProcessApp]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPLINE_DEMO_DELAY", "0")
        app = InProcessApp(Settings(data_dir=folder / "data", **settings), client_address=client)
    with app:
        yield app


@pytest.fixture(scope="module")
def loopback_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """Bound to 127.0.0.1 (the default), nothing configured."""
    with app_with(tmp_path_factory.mktemp("loopback")) as app:
        yield app


def run_ids(app: InProcessApp) -> list[str]:
    return [run["run_id"] for run in app.get("/api/runs").json()["runs"]]


def status_for_host(app: InProcessApp, host: str) -> int:
    return app.get("/healthz", headers={"Host": host}).status_code


def test_a_rebound_host_name_gets_400_and_starts_nothing(loopback_app: InProcessApp) -> None:
    before = run_ids(loopback_app)
    page = loopback_app.get("/", headers={"Host": "evil.example"})
    assert page.status_code == 400
    assert "does not answer to the host 'evil.example'" in page.text
    assert "Allowed: 127.0.0.1, localhost, [::1]" in page.text and "--allowed-hosts" in page.text
    # The attacker's page is same-origin with itself: a matching Origin must not help.
    rebound = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    assert loopback_app.post("/api/runs", json=RUN, headers=rebound).status_code == 400
    form = loopback_app.post(f"/scenarios/{NEWS}", data={"in.url": RUN["input"]["url"]}, headers=rebound)
    assert form.status_code == 400
    assert run_ids(loopback_app) == before


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "localhost", "LocalHost.", "[::1]:8000", "[::1]"])
def test_the_loopback_names_are_served_with_any_port(loopback_app: InProcessApp, host: str) -> None:
    assert status_for_host(loopback_app, host) == 200


@pytest.mark.parametrize(
    "host", ["localhost.evil.example", "127.0.0.1.nip.io", "127.0.0.2:8000", "[::2]", "localhost:x", "local host"]
)
def test_look_alikes_of_the_loopback_names_are_refused(loopback_app: InProcessApp, host: str) -> None:
    assert status_for_host(loopback_app, host) == 400


def test_x_forwarded_host_from_a_client_that_is_not_a_proxy_is_ignored(loopback_app: InProcessApp) -> None:
    before = run_ids(loopback_app)
    spoofed = {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"}
    response = loopback_app.post("/api/runs", json=RUN, headers=spoofed)
    assert response.status_code == 403
    assert "another site" in response.text
    assert run_ids(loopback_app) == before
    # Ignored, not refused: the request itself names an allowed host.
    assert loopback_app.get("/healthz", headers={"X-Forwarded-Host": "evil.example"}).status_code == 200


@pytest.mark.parametrize("settings", [{"allowed_hosts": "*"}, {"host": "0.0.0.0"}], ids=["star", "non-loopback bind"])
def test_any_host_is_served_when_configured_or_bound_beyond_the_loopback(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    with app_with(tmp_path, **settings) as app:
        assert status_for_host(app, "evil.example") == 200
        assert status_for_host(app, "stepline.example.com:8080") == 200


def test_configured_hosts_and_patterns(tmp_path: Path) -> None:
    with app_with(tmp_path, client=STRANGER, **BEHIND_PROXY) as app:
        served = ["stepline.example.com", "STEPLINE.example.com:443", "a.corp.example", "b.a.corp.example:8000"]
        served += ["10.0.0.5:8443", "127.0.0.1:8000"]
        refused = ["corp.example", "acorp.example", "10.0.0.5:80", "10.0.0.5", "localhost:8000", "evil.example"]
        assert {host: status_for_host(app, host) for host in served + refused} == {
            **{host: 200 for host in served},
            **{host: 400 for host in refused},
        }
        # X-Forwarded-* from a client that is not one of the proxies: neither refused nor believed.
        assert app.get("/healthz", headers={"X-Forwarded-Host": "evil.example"}).status_code == 200
        posing = {"Origin": f"https://{PUBLIC}", "X-Forwarded-Host": PUBLIC, "X-Forwarded-Proto": "https"}
        assert app.post("/api/runs", json=RUN, headers=posing).status_code == 403


def test_a_configured_proxy_is_believed_and_its_host_checked(tmp_path: Path) -> None:
    with app_with(tmp_path, client=PROXY, **BEHIND_PROXY) as app:
        # The browser's page is at the public name; the proxy says so.
        forwarded = {"Origin": f"https://{PUBLIC}", "X-Forwarded-Host": PUBLIC, "X-Forwarded-Proto": "https"}
        started = app.post("/api/runs", json=RUN, headers=forwarded)
        assert started.status_code == 202, started.text
        # Without the proxy's word, that Origin is another site.
        assert app.post("/api/runs", json=RUN, headers={"Origin": f"https://{PUBLIC}"}).status_code == 403
        # The host the client asked the proxy for is checked as well as the proxy's own Host.
        rebound = {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"}
        refused = app.post("/api/runs", json=RUN, headers=rebound)
        assert refused.status_code == 400
        assert "'evil.example'" in refused.text
        assert run_ids(app) == [started.json()["run_id"]]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--allowed-hosts", "stepline.example.com, bad/host"], "allowed hosts: 'bad/host' is not a host name"),
        (["--allowed-hosts", " , "], "allowed hosts is empty"),
        (["--forwarded-allow-ips", "10.0.0.300"], "forwarded allow ips: '10.0.0.300' is not an IP address"),
    ],
)
def test_serve_names_a_wrong_host_or_proxy_entry(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
