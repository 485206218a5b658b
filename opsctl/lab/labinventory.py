"""Write the Ansible inventory of a lab: hosts, SSH settings and the lab app's event profile."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import yaml

from opsctl.lab.rootfs import DEPLOY
from opsctl.lab.spec import UPSTREAM, LabHost, LabSpec

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


# Every connection to a lab host is bounded: connect, and a dead peer noticed within 15 s.
BOUNDS = {"ConnectTimeout": 5, "ServerAliveInterval": 5, "ServerAliveCountMax": 3}


def ssh_config(spec: LabSpec) -> str:
    """How a user would tell OpenSSH to reach the lab: its key and known_hosts, and with a
    bastion, ProxyJump through it for every address of the management network."""
    lines = ["# managed by opsctl lab: rewritten by `opsctl lab up`, removed by `opsctl lab down`."]
    bastion = spec.bastion
    if bastion is not None:
        lines += [f"Host {bastion.name} {bastion.address}", f"    HostName {bastion.address}", "    User root", "",
                  "Host " + " ".join(h.ssh_address for h in spec.hosts if h.ssh_address),
                  f"    ProxyJump {bastion.name}", ""]
    lines += ["Host *", f"    IdentityFile {spec.key_file}", "    IdentitiesOnly yes",
              f"    UserKnownHostsFile {spec.known_hosts}", "    StrictHostKeyChecking yes"]
    lines += [f"    {k} {v}" for k, v in BOUNDS.items()]
    return "\n".join(lines) + "\n"


def _connection_vars(spec: LabSpec) -> dict:
    """A lab with a bastion is described as its users describe theirs (an ssh_config, -F);
    the other labs with Ansible's own variables. Either way a ControlPath of the lab's own,
    whose masters `opsctl lab down` ends."""
    control = f"-o ControlPath={spec.control_dir}/%C"
    if spec.bastion is not None:
        return {"ansible_ssh_common_args": f"-F {spec.ssh_config} {control}"}
    bounds = " ".join(f"-o {k}={v}" for k, v in BOUNDS.items())
    return {"ansible_ssh_private_key_file": str(spec.key_file),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={spec.known_hosts} -o StrictHostKeyChecking=yes "
                                       f"-o IdentitiesOnly=yes {bounds} {control}",
            "opsctl_known_hosts": str(spec.known_hosts)}


def _host_vars(host: LabHost) -> dict:
    """SSH reaches a host behind the bastion on the management network; the balancer and the
    clients on its own address, which the drain and the smoke requests use."""
    if host.ssh_address:
        return {"ansible_host": host.ssh_address, "opsctl_service_address": host.address}
    return {"ansible_host": host.address}


def render(spec: LabSpec, now: datetime) -> dict[str, str]:
    """Relative path -> file content of the lab inventory directory."""
    hosts_yml = {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            **_connection_vars(spec),
            "opsctl_lab": spec.name,
        },
        "children": {
            role: {"hosts": {h.name: _host_vars(h) for h in spec.by_role(role)}}
            for role in ("lb", "web")
        },
    }}
    web = web_profile(now)
    lb = dict(web, peak_qps=web["peak_qps"] * len(spec.by_role("web")),
              concurrency=web["concurrency"] * len(spec.by_role("web")))
    web_vars = {"opsctl_event": web, "opsctl_smoke_path": "/health.php", "opsctl_balancers": [
        {"host": h.name, "type": spec.balancer, "upstream": UPSTREAM} for h in spec.by_role("lb")]}
    files = {
        "hosts.yml": _dump(hosts_yml),
        "group_vars/web.yml": _dump(web_vars),
        "group_vars/lb.yml": _dump({"opsctl_event": lb}),
    }
    if spec.bastion is not None:
        # web1 as most fleets log in: a user of its own, sudo with a password.
        files["host_vars/web1.yml"] = _dump({"ansible_user": DEPLOY[0], "ansible_become": True,
                                             "ansible_become_password": spec.deploy_password_file.read_text()})
    return files


def write(spec: LabSpec, now: datetime) -> None:
    for relative, text in render(spec, now).items():
        path = spec.inventory_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
    spec.ssh_config.write_text(ssh_config(spec))
    spec.ssh_config.chmod(0o600)
