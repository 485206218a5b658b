"""Write the Ansible inventory of a lab: hosts, SSH settings and the lab app's event profile."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import yaml

from opsctl.lab.spec import UPSTREAM, LabSpec

HEADER = "# managed by opsctl lab: rewritten by `opsctl lab up`, removed by `opsctl lab down`.\n"
EVENT_TZ = "Asia/Shanghai"


def _next_midnight(now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(EVENT_TZ))
    return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def web_profile(now: datetime) -> dict:
    """What the lab's web hosts are expected to carry.

    The lab app's work.php sleeps 100 ms by default and order.php 300 ms; a 2-core machine
    drives a few hundred such requests per second across the lab, so 100 qps per web host
    is a peak it can really be loaded with.
    """
    return {
        "name": "lab-flash-sale",
        "peak_qps": 100,
        "concurrency": 400,
        "request_time": {"typical_ms": 100, "p99_ms": 300},
        "client_timeout_s": 5,
        "php_worker_memory_mb": 32,
        "window": {
            "start": _next_midnight(now).strftime("%Y-%m-%dT%H:%M"),
            "duration": "2h",
            "timezone": EVENT_TZ,
            "prepare": "1h",
        },
    }


def _dump(data: dict) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def render(spec: LabSpec, now: datetime) -> dict[str, str]:
    """Relative path -> file content of the lab inventory directory."""
    ssh_args = (f"-o UserKnownHostsFile={spec.known_hosts} -o StrictHostKeyChecking=yes "
                f"-o IdentitiesOnly=yes")
    hosts_yml = {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_private_key_file": str(spec.key_file),
            "ansible_ssh_common_args": ssh_args,
            "opsctl_known_hosts": str(spec.known_hosts),
            "opsctl_lab": spec.name,
        },
        "children": {
            role: {"hosts": {h.name: {"ansible_host": h.address} for h in spec.by_role(role)}}
            for role in ("lb", "web")
        },
    }}
    web = web_profile(now)
    lb = dict(web, peak_qps=web["peak_qps"] * len(spec.by_role("web")),
              concurrency=web["concurrency"] * len(spec.by_role("web")))
    web_vars = {"opsctl_event": web, "opsctl_smoke_path": "/health.php", "opsctl_balancers": [
        {"host": h.name, "type": "nginx", "upstream": UPSTREAM} for h in spec.by_role("lb")]}
    return {
        "hosts.yml": _dump(hosts_yml),
        "group_vars/web.yml": _dump(web_vars),
        "group_vars/lb.yml": _dump({"opsctl_event": lb}),
    }


def write(spec: LabSpec, now: datetime) -> None:
    for relative, text in render(spec, now).items():
        path = spec.inventory_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
