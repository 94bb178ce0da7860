"""Which hosts a server answers to, and which reverse proxies' `X-Forwarded-*` headers it believes.

A request must name one of the allowed hosts, so a page on a rebound DNS name (`evil.example`
resolving to 127.0.0.1) cannot reach a server on the loopback. `X-Forwarded-*` headers are believed
only from the configured reverse proxies: from anyone else they would let a client claim any host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

from web.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}
# What a loopback-bound server answers to by default: names only this machine resolves to it.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# A refused Host is echoed back to help whoever set it up; an attacker's megabyte is not.
ECHO_MAX_CHARS = 100
HOST_VALUE = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+?)\.?(?::(?P<port>[0-9]{1,5}))?")
HOST_PATTERN = re.compile(r"\*|(?P<name>(?:\*\.)?[a-z0-9_.-]+?|\[[0-9a-f:.]+\])\.?(?::(?P<port>[0-9]{1,5}))?")


def is_loopback(host: str) -> bool:
    """Whether a listening address (`--host`) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPattern:
    """One allowed host: a name (`*` any, `*.example.com` its subdomains) and a port (None: any)."""

    name: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        match = HOST_PATTERN.fullmatch(text.strip().lower())
        if not match:
            raise ValueError(
                f"allowed hosts: {text.strip()!r} is not a host name, address or pattern "
                "(e.g. stepline.example.com, 10.0.0.5:8000, [::1], *.example.com, *)"
            )
        port = match["port"]
        return cls(match["name"] or "*", int(port) if port else None)

    def matches(self, name: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.name == "*":
            return True
        if self.name.startswith("*."):
            return name.endswith(self.name[1:])
        return name == self.name

    def __str__(self) -> str:
        return self.name if self.port is None else f"{self.name}:{self.port}"


class TrustedProxies:
    """The reverse proxies whose `X-Forwarded-*` headers are believed: addresses, networks, or `*`."""

    def __init__(self, spec: str) -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self.anyone = "*" in entries
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded allow ips: {entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, *)"
                ) from None

    def __contains__(self, address: str | None) -> bool:
        if self.anyone:
            return True
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def client(self, forwarded_for: str) -> str | None:
        """The client behind the proxies: the nearest `X-Forwarded-For` address that is not a proxy."""
        chain = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(chain):
            if hop not in self:
                return hop
        return chain[0] if chain else None


@dataclass(frozen=True)
class HostPolicy:
    """Which `Host` values are served, and whose `X-Forwarded-*` headers are believed."""

    allowed: tuple[HostPattern, ...]
    proxies: TrustedProxies

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        """Raises ValueError naming the setting and the entry that is wrong."""
        if settings.allowed_hosts is not None:
            entries = [entry for entry in settings.allowed_hosts.split(",") if entry.strip()]
            if not entries:
                raise ValueError("allowed hosts is empty: name at least one host, or * for any")
        elif is_loopback(settings.host):
            bound = settings.host.strip("[]")
            entries = [*LOOPBACK_NAMES, f"[{bound}]" if ":" in bound else bound]
        else:
            # Bound where others can reach it: any name is served (the operator was warned at start).
            entries = ["*"]
        allowed = tuple(dict.fromkeys(HostPattern.parse(entry) for entry in entries))
        return cls(allowed, TrustedProxies(settings.forwarded_allow_ips))

    def refusal(self, hosts: list[str | None]) -> str | None:
        """Why a request naming these hosts is not served, or None when every one is allowed."""
        if any(pattern.name == "*" and pattern.port is None for pattern in self.allowed):
            return None
        for host in hosts:
            match = HOST_VALUE.fullmatch(host.strip().lower()) if host else None
            port = match["port"] if match else None
            if match and any(p.matches(match["name"], int(port) if port else None) for p in self.allowed):
                continue
            named = f"the host {host[:ECHO_MAX_CHARS]!r}" if host else "no host (the request has no Host header)"
            allowed = ", ".join(str(pattern) for pattern in self.allowed)
            return f"Refused: this server does not answer to {named}. Allowed: {allowed} (see --allowed-hosts)."
        return None


def believe_forwarded_headers(scope: Scope, headers: Headers, proxies: TrustedProxies) -> list[str]:
    """Take the scheme and client a trusted proxy reports; return the hosts it says were asked for."""
    proto = headers.get("x-forwarded-proto", "").strip().lower()
    if proto in DEFAULT_PORTS:
        scope["scheme"] = proto
    forwarded_for = ",".join(headers.getlist("x-forwarded-for"))
    client = proxies.client(forwarded_for) if forwarded_for else None
    if client:
        scope["client"] = (client, 0)
    return [host.strip() for value in headers.getlist("x-forwarded-host") for host in value.split(",") if host.strip()]
