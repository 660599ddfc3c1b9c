"""The alert channels group: each channel's address parses, and (``--probe``) its host accepts a connection.

The probe is dry: a TCP connection is opened and closed, nothing is posted, so no one is paged.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from ragvigil.config import ChannelSettings, Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped


def _address(c: ChannelSettings) -> tuple[str, int] | str:
    """(host, port) the channel delivers to, or why its settings cannot say."""
    if c.type == "email":
        if not c.smtp_host or not c.smtp_to:
            return "smtp_host and smtp_to are needed"
        return c.smtp_host, c.smtp_port
    if c.url is None:
        return "url is not set"
    parts = urlsplit(c.url.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url is not an http(s) URL with a host (scheme {parts.scheme or 'none'!r})"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "url has an invalid port"
    return parts.hostname, port


def check_channels(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    channels = settings.alerts.channels
    if not channels:
        return [skipped("channels", "no alert channel configured: alerts only reach the incident list")]
    rows = []
    for c in channels:
        name = f"channels[{c.name}]"
        address = _address(c)
        if isinstance(address, str):
            rows.append(fail(name, f"{c.type}: {address}", f"set alerts.channels[{c.name}] right"))
            continue
        host, port = address
        where = f"{c.type} to {host}:{port}"
        if not options.probe:
            rows.append(ok(name, f"{where} (not probed: --probe connects)"))
            continue
        try:
            socket.create_connection((host, port), timeout=min(options.timeout_s, c.timeout_s)).close()
        except OSError as exc:
            fix = f"check that {host}:{port} is reachable from here (DNS, firewall, proxy), or correct the channel"
            rows.append(fail(name, f"{where}: {exc}", fix))
            continue
        rows.append(ok(name, f"{where} accepts connections"))
    return rows
