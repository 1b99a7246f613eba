"""Where the upstream client may connect: the SSRF rules, as pure functions (no network, no httpx).

Two checks, both needed:

* **by URL**, before every request and every redirect hop: ``http``/``https`` only, no userinfo, and
  the host must be the upstream's own origin or on the redirect allowlist (exact names, or ``*.suffix``
  patterns for the Hub's CDN and Xet bridge hosts); never this instance's own origins;
* **by address**, when the connection is made (mirror/upstream.py resolves the name itself, checks
  every address, and connects to the checked address): loopback, private and CGNAT addresses only
  when the operator said so (``allow_private``, a tiered mirror inside the network) and only for the
  upstream's origin and for redirect hosts named exactly, never for a ``*.`` pattern; link-local
  (169.254.0.0/16, fe80::/10, the cloud metadata services), unspecified, multicast and reserved
  addresses never; this instance's own port on a loopback or bound address never. Checking the
  address actually connected to is what defeats DNS rebinding.

Numeric host spellings (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``) are read the way
the C resolver reads them, so they are treated as what they are.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# What huggingface.co redirects file downloads to: cdn-lfs.huggingface.co, cdn-lfs-us-1.hf.co,
# us.aws.cdn.hf.co, cas-bridge.xethub.hf.co (shared/docs/hf-protocol.md).
DEFAULT_REDIRECT_HOSTS = ("*.huggingface.co", "*.hf.co")

_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_IPV4_CHARS = re.compile(r"^[0-9a-fA-FxX.]+$")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressError(ValueError):
    """A URL or an address the upstream client must not reach; the message says which rule."""


def normalize_host(host: str) -> str:
    """Lower-case ``host`` without a trailing dot; numeric IPv4 forms as a dotted quad; IPv6 compressed.

    Raises EgressError for a host that looks numeric but is no address (``1.2.3.999``)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if ":" in name:
        try:
            return str(ipaddress.IPv6Address(name.split("%", 1)[0]))
        except ValueError as exc:
            raise EgressError(f"{host!r} is not a valid IPv6 address") from exc
    last = name.rsplit(".", 1)[-1]
    if name and _NUMERIC_LABEL.match(last):
        # WHATWG URL rule: a host whose last label is a number is an IPv4 address (in any C-resolver form)
        try:
            if not _IPV4_CHARS.match(name):
                raise OSError
            return socket.inet_ntoa(socket.inet_aton(name))
        except OSError as exc:
            raise EgressError(f"{host!r} is not a valid IPv4 address") from exc
    return name


def ip_of(host: str) -> IPAddress | None:
    """The address a (normalized) host names literally, else None (a DNS name)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_class(ip: IPAddress) -> str:
    """``public``, ``private`` (loopback, RFC 1918, ULA, CGNAT) or ``forbidden`` (link-local, metadata,
    unspecified, multicast, reserved); an address embedded in IPv6 (mapped, 6to4, NAT64) counts as itself."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return address_class(embedded)
    if ip in _METADATA or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return "forbidden"
    if ip.is_loopback:
        return "private"
    if ip.is_reserved:
        return "forbidden"
    if ip.is_private or (ip.version == 4 and ip in _CGNAT):
        return "private"
    return "public" if ip.is_global else "forbidden"


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # normalized
    port: int


def parse_target(url: str) -> Target:
    """Scheme, normalized host and port of ``url``. Raises EgressError for another scheme, userinfo, no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressError(f"{url!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise EgressError(f"{url!r}: only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise EgressError(f"{url!r} carries a user name or password (user@host); refused")
    if not parts.hostname:
        raise EgressError(f"{url!r} has no host")
    return Target(scheme, normalize_host(parts.hostname), port or _DEFAULT_PORTS[scheme])


def normalize_url(url: str) -> str:
    """``url`` (checked by parse_target) with its host in normal form and no trailing slash."""
    target = parse_target(url)
    parts = urlsplit(url)
    host = f"[{target.host}]" if ":" in target.host else target.host
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return parts._replace(scheme=target.scheme, netloc=netloc).geturl().rstrip("/")


@dataclass(frozen=True)
class EgressPolicy:
    """The rules for one upstream. ``redirect_hosts``: exact names (``cdn.internal``, ``10.0.0.5:9000``)
    or ``*.suffix`` patterns (any subdomain of suffix); an entry without a port matches any port.
    ``self_origins``: (host, port) pairs of this instance, never connected to."""

    redirect_hosts: tuple[str, ...] = DEFAULT_REDIRECT_HOSTS
    allow_private: bool = False
    self_origins: frozenset[tuple[str, int]] = frozenset()

    def _entry(self, target: Target) -> str | None:
        """``exact`` or ``pattern`` when the redirect allowlist admits ``target``, else None."""
        for entry in self.redirect_hosts:
            name, port = split_host_entry(entry)
            if port is not None and port != target.port:
                continue
            if name.startswith("*."):
                if target.host.endswith(name[1:]) and ip_of(target.host) is None:
                    return "pattern"
            elif normalize_host(name) == target.host:
                return "exact"
        return None

    def check_url(self, url: str, origin: Target) -> Target:
        """The target of ``url`` if the upstream client may ask it: the upstream's own origin or an
        allowlisted redirect host, never this instance. Raises EgressError naming the rule."""
        target = parse_target(url)
        if (target.host, target.port) in self.self_origins:
            raise EgressError(f"{url}: that is this hubgate itself; refused")
        if target == origin or self._entry(target) is not None:
            return target
        raise EgressError(
            f"{url}: {target.host} is neither the upstream ({origin.host}) nor on HUBGATE_UPSTREAM_REDIRECT_HOSTS; refused"
        )

    def check_address(self, host: str, port: int, ip: IPAddress, origin: Target) -> None:
        """May a connection for ``host``:``port`` go to ``ip``? Raises EgressError naming the rule."""
        kind = address_class(ip)
        if kind == "public":
            return
        if (str(ip), port) in self.self_origins or (ip.is_loopback and any(p == port for _, p in self.self_origins)):
            raise EgressError(f"{host} resolves to {ip}, port {port}: that is this hubgate itself; refused")
        if kind == "private" and self.allow_private:
            target = Target(origin.scheme, normalize_host(host), port)
            if target.host == origin.host and port == origin.port or self._entry(target) == "exact":
                return
        hint = "" if self.allow_private or kind != "private" else \
            " (an upstream inside the network needs HUBGATE_UPSTREAM_ALLOW_PRIVATE=true)"
        raise EgressError(f"{host} resolves to {ip}, a {describe_address(ip)} address; refused{hint}")


def split_host_entry(entry: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets, or bare without a port) as (lower-case host, port or None).
    Raises ValueError for a port that is not a number."""
    entry = entry.strip().lower()
    if entry.startswith("[") and "]:" in entry:
        name, _, port = entry.rpartition(":")
        return name, int(port)
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port)
    return entry, None


def describe_address(ip: IPAddress) -> str:
    inner = _embedded_ipv4(ip) or ip
    if inner.is_loopback:
        return "loopback"
    if inner.is_link_local or inner in _METADATA:
        return "link-local/metadata"
    if inner.is_private or (inner.version == 4 and inner in _CGNAT):
        return "private"
    return "reserved"
