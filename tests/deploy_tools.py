"""The validators the deploy-file tests run (hadolint, docker compose, nginx, promtool, systemd-analyze...)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def tool(*names: str, why: str = "") -> str:
    """The first of ``names`` on PATH or next to this Python (the venv's console scripts); skipped when none
    is there, a failure under CI (``.ci/run`` installs them)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    message = f"none of {', '.join(names)} is installed{why}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


NGINX_SITE = DEPLOY / "nginx" / "ragvigil.conf"


def nginx_wrapper(site: str, upstreams: list[str], port: int, tmp: Path) -> Path:
    """A whole nginx config in ``tmp`` around the committed site file: its replicas replaced by ``upstreams``
    (host:port, in order), listening on 127.0.0.1:``port``, every file nginx writes kept in ``tmp``."""
    import re

    servers = iter(upstreams)
    site = re.sub(r"server ragvigil-\d+:8000", lambda _m: f"server {next(servers)}", site)
    site = re.sub(r"listen 8080;", f"listen 127.0.0.1:{port};", site)
    (tmp / "site.conf").write_text(site)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
"""
    )
    return conf
