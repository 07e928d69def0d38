"""Fetching remove.bg's `image_url` without becoming a proxy into the network we run in (SSRF).

Every hop is checked, the first and each redirect alike: http(s) only, and every address the host
resolves to must be public. The check sits in aiohttp's resolver, so the address we checked is the
address we connect to (a DNS answer that changes between check and connect cannot slip through).
IP literals never reach a resolver in aiohttp, so they are checked before the request is made.
Size and time are capped; nothing of the URL but scheme and host is ever logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from serve.errors import ApiError, echo
from serve.settings import ImageUrlSettings

log = logging.getLogger(__name__)

# Cloud instance-metadata endpoints: AWS/GCP/Azure/OpenStack, AWS over IPv6, ECS task metadata,
# Alibaba. Most are link-local already; naming them gives a clearer refusal.
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in
                      ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")}

_REDIRECTS = (301, 302, 303, 307, 308)


# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it through a translator.
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 addresses an IPv6 address carries (and how): a v4 service can be reached through them."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append((ip.ipv4_mapped, "IPv4-mapped"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "6to4"))
    if ip.teredo is not None:
        found += [(ip.teredo[0], "Teredo server"), (ip.teredo[1], "Teredo client")]
    if any(ip in net for net in NAT64_PREFIXES):
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"))
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        found.append((ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"))
    return found


def address_refusal(address: str, allow_networks: list[str] = ()) -> str | None:
    """Why `address` may not be fetched from, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if any(ip in ipaddress.ip_network(n, strict=False) for n in allow_networks):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None and any(ip.ipv4_mapped in ipaddress.ip_network(n, strict=False)
                                              for n in allow_networks):
            return None  # ::ffff:10.0.0.5 is 10.0.0.5, which the operator trusts
        for v4, how in embedded_ipv4(ip):
            why = address_refusal(str(v4))  # the operator's networks name addresses, not embeddings
            if why:
                return f"{why} ({how}, embedded in {ip})"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "not a public address (unspecified)"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


class _Refused(Exception):
    """Raised inside aiohttp's connector; not an OSError, so aiohttp does not rewrap it as a DNS error."""


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver, then refuses the host if any of its addresses is not allowed."""

    def __init__(self, allow_networks: list[str]):
        self._inner = ThreadedResolver()
        self._allow = allow_networks
        self.refusal: str | None = None

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        try:
            results = await self._inner.resolve(host, port, family)
        except UnicodeError:  # _check_url refuses these first; a resolver must never raise past aiohttp
            self.refusal = "its host is not a valid host name"
            raise _Refused(self.refusal) from None
        for r in results:
            why = address_refusal(r["host"], self._allow)
            if why:
                self.refusal = f"the host {host} resolves to {why}"
                raise _Refused(self.refusal)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: URL, allow_networks: list[str]) -> None:
    if url.scheme not in ("http", "https"):
        scheme = echo(url.scheme) if url.scheme else "a relative URL"
        raise ApiError(400, "url_refused", f"image_url must be http or https, not {scheme}")
    if not url.host:
        raise ApiError(400, "url_refused", "image_url has no host")
    try:
        url.host.encode("idna")  # what the resolver does; a label over 63 chars or empty fails here
    except UnicodeError:
        raise ApiError(400, "url_refused", "image_url's host is not a valid host name") from None
    try:
        ipaddress.ip_address(url.host.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    why = address_refusal(url.host, allow_networks)
    if why:
        raise ApiError(400, "url_refused", f"image_url points to {why}")


async def fetch_image(url_text: str, settings: ImageUrlSettings) -> bytes:
    """The bytes at `url_text`, following at most `max_redirects` checked redirects."""
    if not settings.enabled:
        raise ApiError(400, "url_disabled", "image_url is disabled on this server; upload the file instead")
    try:
        url = URL(url_text)
    except (ValueError, TypeError):
        raise ApiError(400, "url_refused", "image_url is not a valid URL") from None
    resolver = GuardedResolver(settings.allow_networks)
    try:
        # wait_for caps the whole chain of hops, not each request.
        return await asyncio.wait_for(_fetch_hops(url, settings, resolver), settings.timeout_s)
    except _Refused:
        raise ApiError(400, "url_refused", f"image_url refused: {resolver.refusal}") from None
    except (TimeoutError, asyncio.TimeoutError):
        raise ApiError(400, "url_fetch_failed", f"image_url took longer than {settings.timeout_s:g} s") from None
    except aiohttp.ClientError as e:
        if resolver.refusal:
            raise ApiError(400, "url_refused", f"image_url refused: {resolver.refusal}") from None
        raise ApiError(400, "url_fetch_failed", f"could not fetch image_url: {type(e).__name__}") from None


async def _fetch_hops(url: URL, settings: ImageUrlSettings, resolver: GuardedResolver) -> bytes:
    max_bytes = int(settings.max_mb * 1024 * 1024)
    too_large = ApiError(413, "file_too_large", f"image_url's file is over {settings.max_mb:g} MB")
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        for _ in range(settings.max_redirects + 1):
            _check_url(url, settings.allow_networks)
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    try:
                        url = url.join(URL(resp.headers["Location"]))
                        url.port  # noqa: B018 (a port out of range raises only when read)
                    except ValueError:  # a bad port, a broken IPv6 literal: yarl raises ValueError
                        raise ApiError(400, "url_fetch_failed", "image_url redirected to an invalid URL") from None
                    continue
                if resp.status != 200:
                    raise ApiError(400, "url_fetch_failed", f"image_url answered HTTP {resp.status}")
                if (resp.content_length or 0) > max_bytes:
                    raise too_large
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > max_bytes:
                        raise too_large
                log.info("fetched image_url from %s://%s (%d bytes)", url.scheme, url.host, len(data))
                return bytes(data)
    raise ApiError(400, "url_fetch_failed", f"image_url redirected more than {settings.max_redirects} times")
