"""Runs shared by replicas on one PostgreSQL database: the SQL the history's writer runs for ownership.

A live run belongs to the replica named in its row's `owner`, which renews the run's lease while it runs
it (web.replicas); a run whose lease ran out may be claimed by another replica. Every batch the writer
commits first locks the rows of the runs it writes for and keeps only those this replica still owns:
a replica that lost a run (frozen past its lease while another claimed it) writes nothing more of it,
and is told so before it calls another tool. Committed events are announced with NOTIFY, run id and seq
only, for the other replicas to read from the events table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from web.database import Database

# "<run_id> <seq>": the run's events up to seq are committed.
EVENTS_CHANNEL = "stepline_events"
# "queued": a run waits for a replica with room; "released": a replica shutting down handed its runs over.
RUNS_CHANNEL = "stepline_runs"
LIVE_STATUSES = ("queued", "running", "waiting")


@dataclass(frozen=True)
class Ownership:
    """This replica's id and how long a lease it takes; the writer thread's side of web.replicas."""

    replica_id: str
    lease_seconds: float

    def insert_runs(
        self, database: Database, runs: Iterable[tuple[tuple[Any, ...], bool]], *, again: bool = False
    ) -> None:
        """New runs' rows: owned by this replica, leased from now, or (`owned` False) queued for any replica.
        `again`: written once more after a lost connection; a row already there is taken as written."""
        conflict = " ON CONFLICT DO NOTHING" if again else ""
        owned, queued = [], []
        for params, mine in runs:
            (owned if mine else queued).append(params)
        database.executemany(
            "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at, started_by, owner, lease_until)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, now() + make_interval(secs => ?)){conflict}",
            [(*params, self.replica_id, self.lease_seconds) for params in owned],
        )
        database.executemany(
            "INSERT INTO runs (run_id, scenario_id, status, message, input, created_at, started_by)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?){conflict}",
            queued,
        )
        if queued:
            database.execute("SELECT pg_notify(?, 'queued')", (RUNS_CHANNEL,))

    def fence(self, database: Database, run_ids: set[str]) -> set[str]:
        """Lock the rows of `run_ids` (in one order, so two writers never deadlock) and return those this
        replica no longer owns: nothing of them may be written."""
        if not run_ids:
            return set()
        rows = database.execute(
            "SELECT run_id, owner FROM runs WHERE run_id = ANY(?) ORDER BY run_id FOR UPDATE",
            (sorted(run_ids),),
        ).fetchall()
        mine = {run_id for run_id, owner in rows if owner == self.replica_id}
        return run_ids - mine

    def announce(self, database: Database, saved: dict[str, int]) -> None:
        """NOTIFY the other replicas of what this commit wrote: delivered when it commits, never before."""
        if saved:
            database.execute(
                "SELECT pg_notify(?, note) FROM unnest(?::text[]) AS note",
                (EVENTS_CHANNEL, [f"{run_id} {seq}" for run_id, seq in saved.items()]),
            )

    def release(self, database: Database) -> list[str]:
        """Hand every live run this replica owns back to the others (a graceful shutdown's drain)."""
        with database.transaction():
            released = [
                row[0]
                for row in database.execute(
                    "UPDATE runs SET owner = NULL, lease_until = NULL WHERE owner = ? AND status IN (?, ?, ?)"
                    " RETURNING run_id",
                    (self.replica_id, *LIVE_STATUSES),
                ).fetchall()
            ]
            if released:
                database.execute("SELECT pg_notify(?, 'released')", (RUNS_CHANNEL,))
        return released
