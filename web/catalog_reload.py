"""Keeps the catalog in step with its folder while the service runs: no restart to add, change or remove a scenario.

The folder is polled (file sizes, modification times and inodes: no dependency, and it works on any
file system, mounted volumes included) every `interval` seconds, and at once when asked (SIGHUP).
Only files whose signature changed are read again. A run in flight holds its own Scenario, so it
keeps the plan it started with whatever the file says later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from web.scenarios import Catalog, CatalogChanges

log = logging.getLogger(__name__)


class CatalogWatcher:
    """Rescans `catalog` every `interval` seconds (0: only when `wake` is called) while `running`."""

    def __init__(self, catalog: Catalog, interval: float) -> None:
        self.catalog = catalog
        self.interval = interval
        self._wake = asyncio.Event()
        # Told after each rescan that changed the catalog (MCP clients hear their tool list changed).
        self.on_change: list[Callable[[], Awaitable[None]]] = []

    def wake(self) -> None:
        """Rescan now rather than at the next tick."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CatalogWatcher]:
        task = asyncio.create_task(self._watch(), name="scenario folder watcher")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval or None):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.rescan()
            except (OSError, RuntimeError) as exc:  # out of descriptors or threads: the next tick tries again
                log.warning("Scenario folder %s not checked this time: %s", self.catalog.folder, exc)
            except Exception:  # a watcher that dies would silently freeze the catalog
                log.exception("Could not rescan the scenario folder %s", self.catalog.folder)

    async def rescan(self) -> CatalogChanges:
        # Reading and parsing happen off the event loop; the catalog changes on it, in one go.
        files = await asyncio.to_thread(self.catalog.scan)
        changes = self.catalog.apply(files)
        for name in changes.added:
            log.info("Scenario added: %s", name)
        for name in changes.reloaded:
            log.info("Scenario reloaded: %s", name)
        for name in changes.removed:
            log.info("Scenario removed: %s (its past runs stay in history)", name)
        if changes.added or changes.reloaded or changes.removed:
            for listener in self.on_change:
                await listener()
        return changes
