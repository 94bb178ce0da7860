"""`stepline run SCENARIO`: run a scenario from the command line and show its progress.

In this process (the real app, its MCP servers and scenarios as `serve` would have them) or on a
running Stepline (`--server URL`), both through the JSON API: POST /api/runs, then the run's event
stream, folded into its state as the pages fold it. Exit status: 0 success, 1 failed or cancelled,
2 the run could not start (bad input, unknown scenario, server unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from web.events import EventType, RequestKind
from web.run_client import ApiError, RunClient, RunLost, Unreachable, in_process, remote
from web.run_progress import LiveProgress, PlainProgress, Progress, printable, use_live_display
from web.run_state import RunState
from web.settings import Settings

T = TypeVar("T")
EXIT_SUCCESS = 0
EXIT_FAILED = 1  # failed or cancelled, or followed no further
EXIT_NOT_STARTED = 2  # bad input, unknown scenario, no server


class InputProblem(ValueError):
    """The run input given on the command line cannot be read; the message says which option and why."""


# How a request is named to whoever watches the run in a terminal.
REQUEST_WORDS = {
    RequestKind.ELICITATION: "a form to be filled",
    RequestKind.URL: "a page to be visited",
    RequestKind.SAMPLING: "a reply to be written",
    RequestKind.APPROVAL: "an approval",
}


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        run_input = read_input(args.input_json, args.input_file, args.input_pairs)
        if args.server:
            _check_remote_options(args)
    except InputProblem as exc:
        return _fail(str(exc))
    if not args.server:
        settings = in_process_settings(settings, recorded=args.data_dir is not None)
    try:
        return asyncio.run(_run(args, settings, run_input))
    except KeyboardInterrupt:  # the third Ctrl-C
        print("stepline run: stopped", file=sys.stderr)
        return EXIT_FAILED


def in_process_settings(settings: Settings, *, recorded: bool) -> Settings:
    """`settings` for one run in this process: recorded only where asked (the default data directory
    is a running `serve`'s own), reached by no network, its scenarios read once."""
    return settings.model_copy(
        update={"history": recorded, "allowed_hosts": None, "host": "127.0.0.1", "reload_seconds": 0}
    )


def _check_remote_options(args: argparse.Namespace) -> None:
    local = [
        flag
        for flag, value in (
            ("--scenarios", args.scenarios),
            ("--mcp-config", args.mcp_config),
            ("--data-dir", args.data_dir),
        )
        if value is not None
    ]
    if local:
        raise InputProblem(f"{', '.join(local)}: only for a run in this process; --server runs with the server's own")
    if not args.server.startswith(("http://", "https://")):
        raise InputProblem(f"--server {args.server}: give Stepline's address as a URL, e.g. http://127.0.0.1:8000")


def read_input(input_json: str | None, input_file: Path | None, pairs: list[str]) -> dict[str, Any]:
    """The run input: --input or --input-file, then each `-i key=value` over it."""
    if input_json is not None and input_file is not None:
        raise InputProblem("give the input with --input or with --input-file, not both")
    run_input: dict[str, Any] = {}
    if input_json is not None:
        run_input = _json_object(input_json, "--input")
    elif input_file is not None:
        try:
            text = sys.stdin.read() if str(input_file) == "-" else input_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise InputProblem(f"cannot read --input-file {input_file}: {why}") from None
        run_input = _json_object(text, f"--input-file {input_file}")
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InputProblem(f"-i {pair}: write it as KEY=VALUE, e.g. -i url=https://example.com/a")
        run_input[key] = _json_or_text(value)
    return run_input


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise InputProblem(f"{where} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputProblem(f"{where} must be a JSON object (field names and values), not {_json_kind(value)}")
    return value


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value, parse_constant=_no_constant)
    except ValueError:
        return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; no API takes them


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _fail(message: str) -> int:
    print(f"stepline run: {message}", file=sys.stderr)
    return EXIT_NOT_STARTED


class NotStarted(Exception):
    """The run was not started: the message says why, `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_NOT_STARTED) -> None:
        super().__init__(message)
        self.code = code


async def _run(args: argparse.Namespace, settings: Settings, run_input: dict[str, Any]) -> int:
    # Progress goes where the final answer does not: the snapshot alone is on stdout with --json.
    stream = sys.stderr if args.json else sys.stdout
    progress: Progress = LiveProgress(stream) if use_live_display(stream) else PlainProgress(stream)
    interrupts = Interrupts()
    connect = (
        remote(args.server, on_reconnect=progress.reconnecting)
        if args.server
        else in_process(settings, on_reconnect=progress.reconnecting)
    )
    with interrupts.handled():
        async with connect as client:
            try:
                accepted = await _start(client, args.scenario, run_input, interrupts)
            except NotStarted as exc:
                print(f"stepline run: {exc}", file=sys.stderr)
                return exc.code
            run_id = accepted["run_id"]
            # Where the run can still be looked at should this process lose it: on the server, not in here.
            elsewhere = f": {client.base_url}/runs/{run_id}" if args.server else ""
            # Who can answer a request the run waits for: people on the server's page, nobody in this process.
            answer_where = (
                f"answer it at {client.base_url}/runs/{run_id}"
                if args.server
                else "nobody can answer it in this process (run it on a server with --server to answer on its "
                "page); Ctrl-C cancels the run"
            )
            snapshot = await _watch(client, accepted, progress, interrupts, elsewhere, answer_where)
    if snapshot is None:
        return EXIT_FAILED
    progress.summary(snapshot, with_output=not args.json)
    if args.json:
        print(json.dumps(snapshot, indent=2, ensure_ascii=False))
    return EXIT_SUCCESS if snapshot["status"] == "success" else EXIT_FAILED


async def _start(
    client: RunClient, scenario_id: str, run_input: dict[str, Any], interrupts: Interrupts
) -> dict[str, Any]:
    """The accepted run (POST /api/runs's answer), or NotStarted saying why not."""
    try:
        return await interrupts.unless_interrupted(client.start(scenario_id, run_input))
    except Interrupted:
        raise NotStarted("interrupted; no run was started", EXIT_FAILED) from None
    except ApiError as exc:
        raise NotStarted(await _error_text(client, exc, scenario_id)) from None
    except Unreachable as exc:
        raise NotStarted(str(exc)) from None


async def _watch(
    client: RunClient,
    accepted: dict[str, Any],
    progress: Progress,
    interrupts: Interrupts,
    elsewhere: str,
    answer_where: str,
) -> dict[str, Any] | None:
    """Show the run until it ends, then its final snapshot; None (having said why) when it was not followed
    to its end or its end cannot be read."""
    run_id = accepted["run_id"]
    interrupts.on_first = lambda: progress.cancelling(run_id)
    state = RunState(run_id, accepted["scenario_id"], accepted["input"], accepted["started_at"])
    with progress.shown(state):
        try:
            await _follow(client, state, progress, interrupts, answer_where)
        except Interrupted:
            progress.note(f"stopped waiting; run {run_id} may still be ending{elsewhere}")
            return None
        except RunLost as exc:
            progress.note(f"{exc}; the run may still be going{elsewhere}")
            return None
    try:
        return await client.snapshot(run_id)
    except (Unreachable, ApiError) as exc:
        progress.note(f"run {run_id} ended {state.status}, but its final state could not be read: {exc}")
        return None


async def _follow(
    client: RunClient, state: RunState, progress: Progress, interrupts: Interrupts, answer_where: str
) -> None:
    """Fold the run's events into `state` until it ends; the first Ctrl-C cancels it, the second stops waiting."""

    async def read() -> None:
        async with contextlib.aclosing(client.events(state.run_id)) as events:
            async for event in events:
                state.apply(event)
                progress.event(event, state)
                if event["type"] == EventType.INPUT_REQUESTED:
                    what = REQUEST_WORDS.get(event["kind"], "an answer")
                    progress.note(
                        f"step '{event['step_name']}' waits for {what}: {event.get('message') or ''}; {answer_where}"
                    )

    async def cancel_when_asked() -> None:
        await interrupts.first.wait()
        try:
            await client.cancel(state.run_id)
        except (ApiError, Unreachable) as exc:
            progress.note(f"could not cancel run {state.run_id}: {exc}")

    canceller = asyncio.create_task(cancel_when_asked())
    try:
        await interrupts.unless_interrupted(read(), by=interrupts.second)
    finally:
        canceller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await canceller


async def _error_text(client: RunClient, error: ApiError, scenario_id: str) -> str:
    """Why the run was refused: each field of the input the scenario refuses, or the scenarios there are."""
    detail = error.detail
    if error.status == 422 and isinstance(detail, list):
        lines = [f"the input is not accepted by scenario '{printable(scenario_id)}':"]
        for problem in detail:
            problem = problem if isinstance(problem, dict) else {"msg": problem}
            loc = [str(part) for part in problem.get("loc", [])]
            where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "input"
            lines.append(f"  {printable(where)}: {printable(problem.get('msg'))}")
        return "\n".join(lines)
    if error.status == 404 and isinstance(detail, str) and detail.startswith("Unknown scenario"):
        try:
            known = await client.scenario_ids()
        except (ApiError, Unreachable):
            return printable(detail)
        return printable(f"{detail}. Scenarios: {', '.join(sorted(known)) or 'none'}")
    return printable(error)


class Interrupted(Exception):
    """Ctrl-C came while waiting for something that is not worth finishing."""


class Interrupts:
    """SIGINT, counted: the first sets `first`, the second `second`; a third stops the process at once."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self.on_first: Callable[[], None] = lambda: None

    @contextlib.contextmanager
    def handled(self) -> Iterator[Interrupts]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        try:
            yield self
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def _interrupt(self) -> None:
        if self.first.is_set():
            self.second.set()
            # Leaving may itself wait (for the run in this process to end): the next Ctrl-C does not.
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        else:
            self.first.set()
            self.on_first()

    async def unless_interrupted(self, work: Coroutine[Any, Any, T], by: asyncio.Event | None = None) -> T:
        """`work`'s result, or Interrupted when `by` (the first Ctrl-C unless given) is set first."""
        by = by or self.first
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(by.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise Interrupted
        return task.result()
