"""The readiness probe as a host runs it: discovery (discover.sh) in front of probe.sh, one script.

check sends it whole; harden's plan sends it limited to what the capacity model reads, as the
opsctl_capacity role does (OPSCTL_PROBE_SECTIONS=capacity).
"""

from __future__ import annotations

import re

from opsctl.paths import roles_dir

_SECTIONS = re.compile(r"^[a-z_0-9 ]*$")


def probe_script(sections: str = "") -> bytes:
    if not _SECTIONS.match(sections):
        raise ValueError(f"probe sections {sections!r}: names of sections only")
    files = roles_dir() / "opsctl_preflight" / "files"
    head = f"OPSCTL_PROBE_SECTIONS='{sections}'\n".encode() if sections else b""
    return head + (files / "discover.sh").read_bytes() + b"\n" + (files / "probe.sh").read_bytes()
