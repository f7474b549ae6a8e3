"""Listen and upstream addresses: parsing as Go's ``net.SplitHostPort`` does, resolving a
listen address to the single address Go would bind, binding it, and the Go error texts that
the API returns with a 500 (``listen tcp 127.0.0.1:3310: bind: address already in use``).

Go binds only the first resolved address and prefers IPv4 for a host name, so
``localhost:3310`` is reported as ``127.0.0.1:3310``; asyncio's bind-to-every-address
behaviour would differ, so listeners are bound here by hand. A wildcard host (empty,
``0.0.0.0`` or ``::``) is bound dual-stack and reported as ``[::]:PORT``, like Go.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from chaos.proxy.errors import ListenError

LISTEN_BACKLOG = 128
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 — the set of wildcard spellings, to recognise them; nothing binds here


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A resolved listen address: a numeric host (``""`` for the wildcard) and a port."""

    host: str
    port: int

    @property
    def is_wildcard(self) -> bool:
        return self.host == ""

    @property
    def text(self) -> str:
        if self.is_wildcard:
            return join_host_port("::" if socket.has_ipv6 else "0.0.0.0", self.port)  # noqa: S104 — shows a wildcard address the operator asked for
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(address: str) -> tuple[str, str]:
    """Split ``host:port`` / ``[v6]:port``; raise ``ValueError`` with Go's message."""
    colon = address.rfind(":")
    if colon < 0:
        raise ValueError(f"address {address}: missing port in address")
    if address.startswith("["):
        close = address.find("]")
        if close < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        if close + 1 == len(address):
            raise ValueError(f"address {address}: missing port in address")
        if close + 1 != colon:
            if address[close + 1] == ":":
                raise ValueError(f"address {address}: too many colons in address")
            raise ValueError(f"address {address}: missing port in address")
        host = address[1:close]
    else:
        host = address[:colon]
        if ":" in host:
            raise ValueError(f"address {address}: too many colons in address")
    if "[" in address[1:] or "]" in address[colon:]:
        raise ValueError(f"address {address}: unexpected '[' or ']' in address")
    return host, address[colon + 1 :]


def parse_port(port: str) -> int:
    """A decimal port or a service name, as Go's ``LookupPort`` accepts."""
    if port.isdigit():
        number = int(port)
        if number > 65535:
            raise ValueError(f"address {port}: invalid port")
        return number
    if port == "":
        return 0
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise ValueError(f"lookup tcp/{port}: unknown port") from None


async def resolve_listen(listen: str) -> ListenAddress:
    """Resolve a listen string to the one address Go would bind (IPv4 first)."""
    try:
        host, port_text = split_host_port(listen)
        port = parse_port(port_text)
    except ValueError as exc:
        raise ListenError(f"listen tcp: {exc}") from None
    if host in _WILDCARD_HOSTS:
        return ListenAddress("", port)
    try:
        return ListenAddress(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ListenError(f"listen tcp: lookup {host}: no such host") from None
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    chosen = (ipv4 or infos)[0]
    return ListenAddress(str(chosen[4][0]), port)


def bind(address: ListenAddress) -> tuple[socket.socket, str]:
    """Bind and listen; return the socket and its actual address as Go reports it."""
    if address.is_wildcard and socket.has_ipv6:
        try:
            return _bind_socket(socket.AF_INET6, "::", address.port, is_dual_stack=True)
        except ListenError as exc:
            if "address already in use" in exc.message:
                raise
            # No IPv6 on this host (common in containers): fall back to IPv4 only.
    if address.is_wildcard:
        return _bind_socket(socket.AF_INET, "0.0.0.0", address.port, is_dual_stack=False)  # noqa: S104 — binds all interfaces only when the operator's listen address is a wildcard
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    return _bind_socket(family, address.host, address.port, is_dual_stack=False)


def _bind_socket(
    family: socket.AddressFamily, host: str, port: int, *, is_dual_stack: bool
) -> tuple[socket.socket, str]:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        where = join_host_port(host, port)
        raise ListenError(f"listen tcp {where}: socket: {go_errno_text(exc)}") from None
    try:
        # Go sets SO_REUSEADDR on listeners, so re-enabling a proxy can re-bind its port
        # while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if is_dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"listen tcp {join_host_port(host, port)}: bind: {go_errno_text(exc)}"
        ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    return sock, join_host_port(str(bound_host), int(bound_port))


def go_errno_text(exc: OSError) -> str:
    """``Address already in use`` → ``address already in use`` (Go's syscall wording)."""
    text = exc.strerror or str(exc) or "unknown error"
    return text[:1].lower() + text[1:]


def upstream_host_port(upstream: str) -> tuple[str, int]:
    """Where to dial for a proxy's upstream; raises ``ValueError`` when it cannot parse."""
    host, port = split_host_port(upstream)
    return host or "localhost", parse_port(port)
