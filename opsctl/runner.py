"""Run opsctl's playbooks through ansible-runner: one private directory per run, fast settings
that a user's own ansible.cfg still overrides, and events turned into small typed records.

ansible-playbook runs in the operator's working directory, so it reads the ansible.cfg that
opsctl read, and with a scrubbed environment: ansible-runner records the whole environment of
a run in artifacts/*/command, so only what ansible-playbook needs is handed on."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from opsctl.errors import OpsctlError
from opsctl.paths import collections_env, playbooks_dir, state_dir
from opsctl.redact import is_secret_name
from opsctl import vault as vaults

KEEP_RUNS = 20
# What ssh itself prints when a raw task's PTY closes; never the reason for anything.
_SSH_NOISE = re.compile(r"^Shared connection to \S+ closed\.$")

# Why each: pipelining saves a round trip per task; ControlPersist keeps one SSH connection per
# host for the whole run; a smaller fact subset is all the roles read; the default callback
# stays (AWX-safe). Applied only where the user's configuration leaves Ansible's default.
_FAST_SETTINGS = {
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=120s",
    "ANSIBLE_GATHER_SUBSET": "min",
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
}

# What ansible-playbook needs from the operator's environment: where programs and the home are,
# who the user is (Ansible's default remote user), the locale (Ansible refuses a non-UTF-8 one),
# the SSH agent and Kerberos ticket, and Ansible's own settings (ANSIBLE_*, never one holding a
# secret). A token or password exported in the operator's shell stays out of the run.
_PASSED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
                         "TMPDIR", "SSH_AUTH_SOCK", "KRB5CCNAME"})
_PASSED_PREFIXES = ("LC_", "ANSIBLE_")

_EVENT_KINDS = {
    "playbook_on_task_start": "task_start",
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
    "playbook_on_stats": "stats",
}


@dataclass(frozen=True)
class Event:
    """One thing Ansible reported: a task started, or a host's result of it."""
    kind: str                 # task_start | ok | failed | unreachable | skipped | stats
    task: str = ""
    host: str = ""
    changed: bool = False
    message: str = ""
    diffs: tuple[dict, ...] = ()   # --diff: Ansible's before/after (or prepared text) per change
    # What a per-host set_stats task recorded for this host (opsctl_step, opsctl_pending_restart):
    # the views follow these data, never a task's title, which anyone may rename.
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    host: str
    task: str
    kind: str                 # failed | unreachable
    message: str

    def line(self) -> str:
        return f"{self.host}: {self.task}: {self.message}"


@dataclass
class RunResult:
    rc: int
    status: str
    artifact_dir: Path
    stats: dict[str, dict[str, int]] = field(default_factory=dict)   # host -> ok/changed/failures/...
    failures: list[Failure] = field(default_factory=list)
    reason: str = ""          # why the run ended badly when no host failure says it

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures


def one_line(text: Any, limit: int = 300) -> str:
    """A result message as one readable line: Ansible's can span pages."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def result_message(res: dict[str, Any]) -> str:
    """What a person needs from a task result: a failed command's own last words (its msg is
    only "non-zero return code"), else the module's msg, else the end of its output."""
    keys = ("stderr", "stdout", "msg") if res.get("rc") not in (None, 0) else ("msg", "stderr", "stdout")
    for key in keys:
        value = res.get(key)
        if value:
            lines = [line for line in str(value).splitlines()
                     if line.strip() and not _SSH_NOISE.match(line.strip())]
            if key == "msg" or lines:
                return one_line(lines[-1] if key != "msg" else value)
    return ""


def to_event(raw: dict[str, Any]) -> Event | None:
    kind = _EVENT_KINDS.get(raw.get("event", ""))
    if kind is None:
        return None
    data = raw.get("event_data", {})
    res = data.get("res") or {}
    task = data.get("task") or data.get("name") or ""
    return Event(kind=kind, task=str(task), host=str(data.get("host", "")),
                 changed=bool(res.get("changed")) if isinstance(res, dict) else False,
                 message=result_message(res) if isinstance(res, dict) else "",
                 diffs=_diffs(res) if isinstance(res, dict) else (),
                 stats=_host_stats(res) if isinstance(res, dict) else {})


def _host_stats(res: dict[str, Any]) -> dict[str, Any]:
    """The data of a set_stats result, when it was recorded per host (data about that host)."""
    stats = res.get("ansible_stats")
    if not isinstance(stats, dict) or not stats.get("per_host") or not isinstance(stats.get("data"), dict):
        return {}
    return dict(stats["data"])


def _diffs(res: dict[str, Any]) -> tuple[dict, ...]:
    """The diff of a result, and of each loop item's result."""
    found: list[dict] = []
    for one in [res] + [r for r in res.get("results") or [] if isinstance(r, dict)]:
        diff = one.get("diff")
        if one.get("changed") and diff:
            found.extend(d for d in (diff if isinstance(diff, list) else [diff]) if isinstance(d, dict) and d)
    return tuple(found)


def _user_configured(names: list[str]) -> set[str]:
    """The settings a user's ansible.cfg or environment already decides; those win over ours."""
    from ansible.config.manager import ConfigManager

    manager = ConfigManager()
    decided = set()
    for name in names:
        key = name.removeprefix("ANSIBLE_")
        if name in os.environ:
            decided.add(name)
            continue
        try:
            _, origin = manager.get_config_value_and_origin(key)
        except Exception:     # an unknown key in this Ansible version: ours is harmless
            continue
        if origin != "default":
            decided.add(name)
    return decided


def runner_env(forks: int) -> dict[str, str]:
    """Environment for ansible-runner; every value a string (ansible-runner #1159)."""
    decided = _user_configured([*_FAST_SETTINGS, "ANSIBLE_FORKS"])   # reads ansible.cfg once
    env = {k: v for k, v in _FAST_SETTINGS.items() if k not in decided}
    env.update(collections_env())
    if "ANSIBLE_FORKS" not in decided:
        env["ANSIBLE_FORKS"] = str(max(5, min(forks, 50)))
    env["ANSIBLE_FORCE_COLOR"] = "False"
    # ansible-playbook lives next to the Python that runs opsctl, on PATH or not (a venv).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return env


def _passed(name: str) -> bool:
    return (name in _PASSED_ENV or name.startswith(_PASSED_PREFIXES)) and not is_secret_name(name)


def scrubbed_env(prepared: dict[str, str], operator: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner's environment for a run (the operator's, plus ours and its own settings)
    without what the operator's environment holds beyond what ansible-playbook needs."""
    return {k: v for k, v in prepared.items() if _passed(k) or operator.get(k) != v}


def _operator_cwd() -> str:
    """Where the operator runs opsctl: ansible-playbook reads ./ansible.cfg there, as opsctl did."""
    try:
        return os.getcwd()
    except OSError:    # the directory was removed meanwhile: Ansible would find no ./ansible.cfg
        return str(playbooks_dir())


def _new_run_dir(name: str) -> Path:
    """One private_data_dir per run (runs sharing one are not safe: ansible-runner #808);
    the oldest are removed so that a busy operator's disk does not fill up."""
    base = state_dir() / "runs"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    runs = sorted(p for p in base.iterdir() if p.is_dir())
    for old in runs[: max(0, len(runs) - KEEP_RUNS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    path = base / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{name}"
    path.mkdir(mode=0o700)
    return path


def playbook_path(name: str) -> Path:
    path = playbooks_dir() / f"{name}.yml"
    if not path.is_file():
        raise OpsctlError(f"playbook {path} is missing: reinstall opsctl")
    return path


def run_playbook(name: str, inventory_source: Path | str, *, limit: str | None = None,
                 verbosity: int = 0, extravars: dict[str, Any] | None = None,
                 on_event: Callable[[Event], None] | None = None, host_count: int = 5,
                 tags: str | None = None, check: bool = False, diff: bool = False,
                 vault: vaults.VaultOptions = vaults.VaultOptions(),
                 host_vars: Mapping[str, Mapping[str, Any]] | None = None) -> RunResult:
    """Run playbooks/NAME.yml against an inventory and report every host's outcome.

    `host_vars` (host -> its inventory vars) says where Ansible would skip host key checks:
    refused unless those hosts accept it (opsctl/hostkeys.py), then said in one warning line."""
    import ansible_runner
    from ansible_runner.utils import signal_handler

    from opsctl.hostkeys import guard_ansible

    warning = guard_ansible(host_vars if host_vars is not None else {"every host": {}})
    if warning:
        print(warning, file=sys.stderr)

    failures: list[Failure] = []

    def handler(raw: dict[str, Any]) -> bool:
        event = to_event(raw)
        if event is not None:
            if event.kind in ("failed", "unreachable") and not raw["event_data"].get("ignore_errors"):
                failures.append(Failure(event.host, event.task, event.kind, event.message))
            if on_event is not None:
                on_event(event)
        return True

    vault = vaults.resolve(vault)
    flags = [flag for flag, wanted in (("--check", check), ("--diff", diff)) if wanted]
    cmdline = " ".join(flags + vaults.playbook_cmdline(vault))
    run_dir = _new_run_dir(name)
    # ansible_runner.run() without its dump of kwargs to files: the environment is scrubbed
    # and the working directory set after ansible-runner has prepared the run.
    config = ansible_runner.RunnerConfig(
        private_data_dir=str(run_dir), playbook=str(playbook_path(name)),
        inventory=str(Path(inventory_source).resolve()), limit=limit, tags=tags,
        extravars=extravars or {}, envvars=runner_env(host_count), verbosity=verbosity or None,
        cmdline=cmdline or None, passwords=vaults.playbook_answers(vault) or None, quiet=True,
        suppress_env_files=True, rotate_artifacts=1, project_dir=str(playbooks_dir()))
    config.prepare()
    config.env = scrubbed_env(config.env, os.environ)
    config.cwd = _operator_cwd()
    runner = ansible_runner.Runner(config, event_handler=handler, cancel_callback=signal_handler())
    runner.run()
    rc = runner.rc if runner.rc is not None else 1
    return RunResult(rc=rc, status=runner.status, artifact_dir=Path(runner.config.artifact_dir),
                     stats=runner.stats or {}, failures=failures,
                     reason=_last_words(runner) if rc and not failures else "")


def _last_words(runner: Any) -> str:
    """The last line Ansible printed: a syntax error or a missing binary says it there."""
    try:
        lines = [line for line in runner.stdout.read().splitlines() if line.strip()]
    except (OSError, AttributeError):
        return ""
    return one_line(lines[-1]) if lines else ""
