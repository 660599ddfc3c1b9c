"""What a doctor run may do beyond reading: probe channels over the network, load the embedder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DoctorOptions:
    """``probe``: open a TCP connection to each alert channel's host (nothing is sent); ``deep``: load the
    bundled embedder and embed one word (seconds of CPU); ``timeout_s``: each check group's bound."""

    probe: bool = False
    deep: bool = False
    timeout_s: float = 5.0
