"""Who a request is, and what they may do: roles, and each scenario's own permissions.

An identity comes from the portal's proxy (a trusted header), from an API token, or is anonymous
(web.auth decides which). Its role bounds what it may do anywhere; a scenario's `access` may narrow
who sees it and who runs it, by group (or by name). What an identity may not see is answered as if it
did not exist (404); what it may see but not do is refused (403).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Role(StrEnum):
    VIEWER = "viewer"  # pages, snapshots, streams, the tool catalog
    OPERATOR = "operator"  # and start, cancel, rerun, answer requests
    ADMIN = "admin"  # and tokens, reload, every scenario whatever its access

    @property
    def rank(self) -> int:
        return ROLE_RANKS[self]

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


ROLE_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class IdentitySource(StrEnum):
    PROXY = "proxy"  # the portal's proxy named the user in a trusted header
    TOKEN = "token"  # an API token (Authorization: Bearer)
    ANONYMOUS = "anonymous"  # nobody named: allowed on loopback, or when configured
    LOCAL = "local"  # the account that started a local process: `stepline mcp` serving its client over stdio


@dataclass(frozen=True)
class Identity:
    """The one making a request. `scenarios`: the scenarios a token is limited to (None: no limit)."""

    name: str
    source: IdentitySource
    role: Role
    groups: frozenset[str] = frozenset()
    scenarios: frozenset[str] | None = None

    def has(self, role: Role) -> bool:
        return self.role.includes(role)

    def audit(self) -> dict[str, str]:
        """What a run records of who acted: name and source, never a token."""
        return {"name": self.name, "source": self.source.value}


class ScenarioWithAccess(Protocol):
    scenario_id: str

    @property
    def access(self) -> Any: ...  # web.scenarios.ScenarioAccess | None


def _listed(identity: Identity, allowed: Collection[str] | None) -> bool:
    """Whether a scenario's list (None: everyone) names one of the identity's groups, or the identity itself."""
    return allowed is None or identity.name in allowed or not identity.groups.isdisjoint(allowed)


def may_view(identity: Identity | None, scenario: ScenarioWithAccess | None) -> bool:
    """Whether `identity` may see a scenario and its runs. The runs of a scenario no longer in the catalog
    (None) are an admin's to see: whom its file let see them cannot be known any more."""
    if identity is None or not identity.has(Role.VIEWER):
        return False
    if identity.has(Role.ADMIN):
        return True
    if scenario is None:
        return False
    if identity.scenarios is not None and scenario.scenario_id not in identity.scenarios:
        return False
    access = scenario.access
    if access is None:
        return True
    # Who may run a scenario may see it.
    return _listed(identity, access.view) or (access.run is not None and _listed(identity, access.run))


def may_run(identity: Identity | None, scenario: ScenarioWithAccess | None) -> bool:
    """Whether `identity` may start, cancel or rerun runs of a scenario (it may see it, with an operator's role)."""
    if not may_view(identity, scenario) or identity is None or not identity.has(Role.OPERATOR):
        return False
    if identity.has(Role.ADMIN):
        return True
    access = scenario.access if scenario is not None else None
    return access is None or _listed(identity, access.run)
