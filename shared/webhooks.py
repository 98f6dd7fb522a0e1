"""Where a rule's webhook may go, and which keys may sign it.

A rule's author picks a webhook's URL and signing key, but the alerts service sends it
from inside the plant's network with the service's own environment. Left open, a rule
could POST to the database, the broker or a cloud metadata endpoint, and have its body
signed with any variable of the process (the database URL, the broker password) — an
offline guessing oracle for them. So:

- Targets: a public address is allowed; loopback, link-local (cloud metadata),
  private (RFC 1918, ULA), shared, unspecified, multicast and reserved ones only when
  the operator lists them (or the host's name) in `INSA_ALERTS_WEBHOOK_ALLOW`. The API
  refuses a literal internal address or an obviously internal name when the rule is
  written (`url_problem`); the alerts service checks every address the host resolves
  to when it connects, and connects to exactly those addresses (`GuardedBackend`), so a
  name cannot be re-resolved elsewhere in between (DNS rebinding). Redirects are not
  followed.
- Keys: a rule names a secret (`secret: scada`) and the service reads only
  `INSA_WEBHOOK_SECRET_<NAME>` (`INSA_WEBHOOK_SECRET_SCADA`), a namespace the operator
  provisions for rule authors. A legacy `secret_env` is honoured only inside it.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from dataclasses import dataclass

import anyio
import httpcore
import httpx

from shared.settings import is_placeholder

ALLOW_SETTING = "INSA_ALERTS_WEBHOOK_ALLOW"
SECRET_PREFIX = "INSA_WEBHOOK_SECRET_"
SECRET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_]{0,63}$"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Names that resolve inside the network by convention (RFC 6761, 6762, 8375 and the
# usual private suffixes); single-label names (compose services: `timescaledb`) too.
INTERNAL_SUFFIXES = ("localhost", "local", "internal", "localdomain", "home.arpa", "lan")


class WebhookRefused(Exception):
    """The webhook's target or key is not allowed, or its key is not there: nothing is
    sent (the message says why, for `last_error`)."""


def secret_variable(name: str | None, legacy_env: str | None) -> str | None:
    """The environment variable holding a webhook's key; never one outside the
    namespace, whatever the rule says."""
    if name is not None:
        return SECRET_PREFIX + name.upper()
    if legacy_env is None:
        return None
    if not legacy_env.startswith(SECRET_PREFIX) or legacy_env == SECRET_PREFIX:
        raise WebhookRefused(
            f"secret_env {legacy_env} is outside the webhook secrets ({SECRET_PREFIX}<NAME>); "
            f"not sent: provision {SECRET_PREFIX}<NAME> and name it in the rule as "
            "`secret: <name>`")
    return legacy_env


def secret_env_problem(legacy_env: str) -> str | None:
    """Why a rule may not be written with this `secret_env` (None: it may)."""
    try:
        secret_variable(None, legacy_env)
    except WebhookRefused:
        return (f"must name a webhook secret ({SECRET_PREFIX}<NAME>), not another "
                "variable of the alerts service; use `secret: <name>` instead")
    return None


def read_secret(variable: str, environ: typing.Mapping[str, str]) -> str:
    """The key from the namespace. A missing one is not sent unsigned; a short or
    placeholder one is refused, since any rule author may have bodies signed with it."""
    secret = environ.get(variable)
    if not secret:
        raise WebhookRefused(f"webhook secret {variable} is not set in the alerts "
                             "service's environment; not sent unsigned")
    if is_placeholder(secret):
        raise WebhookRefused(f"webhook secret {variable} is a placeholder or shorter than "
                             "12 characters; not sent")
    return secret


def internal_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("site-local", isinstance(address, ipaddress.IPv6Address)
               and address.is_site_local))
    for kind, matches in checks:
        if matches:
            return kind
    return None if address.is_global else "non-public"  # e.g. 100.64.0.0/10 (CGNAT)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host is written as, in any form the resolver accepts
    (`127.1` and `0x7f000001` are 127.0.0.1), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class WebhookPolicy:
    """The operator's allow-list: host names (exact) and addresses or networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> WebhookPolicy:
        """`10.20.0.0/16, 192.168.1.5, hooks.plant.lan` (ValueError naming a bad entry)."""
        hosts, networks = set(), []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not all(label and label.replace("-", "").replace("_", "")
                                       .isalnum() for label in _host_key(entry).split(".")):
                raise ValueError(f"{ALLOW_SETTING}: {entry!r} is neither a host name nor "
                                 "an address or network")
            hosts.add(_host_key(entry))
        return cls(frozenset(hosts), tuple(networks))

    def _listed(self, address: IPAddress) -> bool:
        forms = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        return any(form in network for form in forms for network in self.networks
                   if form.version == network.version)

    def address_problem(self, host: str, address: IPAddress) -> str | None:
        """Why `host`, resolved to `address`, may not be sent to (None: it may)."""
        if _host_key(host) in self.hosts or self._listed(address):
            return None
        kind = internal_kind(address)
        if kind is None:
            return None
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address, not in {ALLOW_SETTING}"
        if literal_address(host) == address:
            return f"{address} is {what}"
        return f"{_host_key(host)} resolves to {address}, {what}"

    def url_problem(self, url: str) -> str | None:
        """What the API can tell when a rule is written, without resolving: a literal
        internal address or an obviously internal name not allowed. (The resolved
        addresses are checked when the webhook is sent.)"""
        try:
            host = httpx.URL(url).host  # the parser that sends it
        except httpx.InvalidURL as exc:
            return f"not a valid URL: {exc}"
        if not host:
            return "the URL has no host"
        if _host_key(host) in self.hosts:
            return None
        address = literal_address(host)
        if address is not None:
            return self.address_problem(host, address)
        key = _host_key(host)
        if "." not in key or any(key == s or key.endswith("." + s) for s in INTERNAL_SUFFIXES):
            return f"{key} is an internal host name, not in {ALLOW_SETTING}"
        return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend (where a connection's host is resolved), checking
    every address the host resolves to against the policy and then connecting to one of
    those very addresses: the name is resolved once, so it cannot answer a public
    address to the check and an internal one to the connection. TLS still verifies the
    certificate against the host name (httpcore passes it as SNI after connecting), and
    the Host header is the URL's."""

    def __init__(self, policy: WebhookPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        for address in addresses:  # any refused address refuses the host
            if (problem := self.policy.address_problem(host, address)) is not None:
                raise WebhookRefused(problem)
        failure: Exception | None = None
        for address in addresses:  # as the resolver ordered them (IPv6, then IPv4, …)
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(timeout):
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from None
        except OSError as exc:  # gaierror: retried, as a refused connection is
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses: list[IPAddress] = []
        for *_, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return addresses

    async def connect_unix_socket(
            self, path: str, timeout: float | None = None,
            socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("webhooks go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, errors, pooling) whose connection pool
    connects through `GuardedBackend`. httpx takes no network backend itself, so the pool
    is rebuilt with one — httpcore's documented extension point."""

    def __init__(self, policy: WebhookPolicy) -> None:
        super().__init__()
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            # Never fall back to an unguarded pool if httpx's layout changes.
            raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps an httpcore pool "
                               "in _pool; webhooks cannot be guarded")
        self._pool = httpcore.AsyncConnectionPool(  # httpx's default limits
            ssl_context=httpx.create_ssl_context(), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=5.0,
            network_backend=GuardedBackend(policy))


def guarded_client(policy: WebhookPolicy) -> httpx.AsyncClient:
    """The webhook client: guarded connections, no redirects followed (a receiver cannot
    send the POST on elsewhere), no proxy from the environment (it would do the
    resolving, past the check)."""
    return httpx.AsyncClient(transport=GuardedTransport(policy), follow_redirects=False,
                             trust_env=False)
