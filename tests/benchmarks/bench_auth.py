"""What identifying a request costs: `python -m tests.benchmarks.bench_auth [--requests N]`.

Two figures:

- identify: `Authenticator.identify` on one request, in this process, for each identity source: anonymous
  (nothing to read), the proxy's header (from a trusted address, its groups mapped to a role) and a bearer
  token (hashed and looked up afresh in the history file, so a revoke takes effect on the next request);
- GET /api/runs/{id}: the latency a client sees from a real `stepline serve` (loopback, so anonymous
  requests are admin), alternating requests with and without a token, so drift in the machine's load
  falls on both alike. The difference is what a token costs end to end, its INFO log line included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.requests import Request

from tests.benchmarks.support import percentile
from tests.conftest import PROJECT_ROOT, start_server
from web.access import Role
from web.auth import Authenticator
from web.settings import Settings
from web.store import DB_NAME
from web.tokens import TokenAdmin, TokenBook, open_token_database

# Enough calls per batch that the timer's own cost vanishes; the median batch damps a noisy machine.
CALLS_PER_BATCH = 2000
BATCHES = 15
WARMUP_REQUESTS = 50


def request(*headers: tuple[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/runs",
            "query_string": b"",
            "headers": [(name.encode(), value.encode()) for name, value in headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
    )


def per_call_microseconds(identify: Callable[[], object]) -> float:
    batches = []
    for _ in range(BATCHES):
        started = time.perf_counter()
        for _ in range(CALLS_PER_BATCH):
            identify()
        batches.append((time.perf_counter() - started) / CALLS_PER_BATCH * 1e6)
    return statistics.median(batches)


def bench_identify(home: Path) -> None:
    data_dir = home / "identify"
    connection = open_token_database(data_dir)
    secret, _ = TokenAdmin(connection).create("bench", Role.OPERATOR, lifetime=None)
    connection.close()
    settings = Settings(
        host="127.0.0.1",
        data_dir=data_dir,
        auth_header="X-Forwarded-User",
        groups_header="X-Forwarded-Groups",
        trusted_proxies="127.0.0.1",
        role_map="ops=operator,*=viewer",
        allow_anonymous=Role.VIEWER,
    )
    book = TokenBook(data_dir / DB_NAME)
    authenticator = Authenticator(settings, tokens=book)
    cases = {
        "anonymous": request(),
        "proxy header": request(("x-forwarded-user", "alice"), ("x-forwarded-groups", "staff,ops")),
        "bearer token": request(("authorization", f"Bearer {secret}")),
    }
    print("identify (Authenticator.identify, one request, median of batches):")
    for what, one in cases.items():
        identity = authenticator.identify(one)
        assert identity is not None, what
        print(f"  {what:<13} {per_call_microseconds(lambda one=one: authenticator.identify(one)):7.1f} µs"
              f"  -> {identity.name} ({identity.source.value}, {identity.role.value})")
    book.close()


def bench_get_run(home: Path, requests: int) -> None:
    data_dir = home / "serve"
    created = subprocess.run(
        [sys.executable, "-m", "web", "token", "create", "bench", "--role", "viewer", "--data-dir", str(data_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = created.stdout.strip()
    server = start_server(home, "--data-dir", str(data_dir))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = client.post(
                "/api/runs", json={"scenario_id": "outlet_profile_v1", "input": {"domain": "daily.example.com"}}
            )
            started.raise_for_status()
            path = f"/api/runs/{started.json()['run_id']}"
            while client.get(path).json()["status"] not in {"success", "failed", "cancelled"}:
                time.sleep(0.05)
            headers = {"without a token": {}, "with a token": {"Authorization": f"Bearer {secret}"}}
            timings: dict[str, list[float]] = {what: [] for what in headers}
            for n in range(WARMUP_REQUESTS + requests):
                for what, extra in headers.items():
                    begun = time.perf_counter()
                    response = client.get(path, headers=extra)
                    elapsed = time.perf_counter() - begun
                    assert response.status_code == 200, response.text
                    if n >= WARMUP_REQUESTS:
                        timings[what].append(elapsed * 1000)
        print(f"GET /api/runs/{{id}} on a real `stepline serve`, {requests} requests each, alternating:")
        for what, values in timings.items():
            print(f"  {what:<16} p50 {percentile(values, 50):6.2f} ms   p90 {percentile(values, 90):6.2f} ms")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind to GET /api/runs/{id}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as home:
        bench_identify(Path(home))
        bench_get_run(Path(home), args.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
