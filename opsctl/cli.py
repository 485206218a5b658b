"""opsctl's command line: the command tree, options, and errors mapped to the exit codes of
opsctl/errors.py. Work is done elsewhere."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable

import click
from rich.console import Console

from opsctl import __version__
from opsctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, OpsctlError
from opsctl.lab.spec import BALANCERS, FLAVORS
from opsctl.safetext import visible

if TYPE_CHECKING:
    from opsctl.vault import VaultOptions


def _stderr() -> Console:
    return Console(stderr=True)


def handle_errors(func: Callable) -> Callable:
    """User-facing errors become one line on stderr and exit code 2; never a traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OpsctlError as exc:
            click.echo(f"opsctl: error: {visible(exc)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("opsctl: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
    return wrapper


def _vault_options(func: Callable) -> Callable:
    """Ansible's vault options, as ansible-playbook takes them, handed to FUNC as `vault`."""
    from opsctl.vault import VaultOptions

    @functools.wraps(func)
    def collect(*args: Any, vault_ids: tuple[str, ...], vault_password_files: tuple[str, ...],
                ask_vault_pass: bool, **kwargs: Any) -> Any:
        return func(*args, vault=VaultOptions(tuple(vault_ids), tuple(vault_password_files), ask_vault_pass),
                    **kwargs)

    collect = click.option("--ask-vault-pass", is_flag=True,
                           help="Ask for the vault password (on the terminal only).")(collect)
    collect = click.option("--vault-password-file", "vault_password_files", multiple=True, metavar="FILE",
                           help="The vault password file (or script); repeatable.")(collect)
    return click.option("--vault-id", "vault_ids", multiple=True, metavar="LABEL@SOURCE",
                        help="A vault identity, e.g. prod@~/.vault-pass or dev@prompt; repeatable. "
                             "ansible.cfg and ANSIBLE_VAULT_* settings apply as for ansible-playbook.")(collect)


def inventory_options(func: Callable) -> Callable:
    """--inventory, --limit, -v and the vault options: taken by every command that works on hosts."""
    func = _vault_options(func)
    func = click.option("-v", "--verbose", count=True, help="More detail; repeat for more.")(func)
    func = click.option("--limit", "-l", metavar="PATTERN",
                        help="Only hosts matching this Ansible host pattern, e.g. 'web:!web3'.")(func)
    func = click.option("--inventory", "-i", metavar="NAME|PATH", required=True,
                        help="An inventory NAME (inventories/NAME; 'lab' is the lab's) "
                             "or a PATH to any Ansible inventory file or directory.")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="opsctl")
def cli() -> None:
    """Keep nginx + php-fpm fleets alive under flash-sale traffic.

    opsctl sizes and applies kernel, nginx and php-fpm settings from a capacity model, makes
    stops and reloads graceful, moves log rotation out of the peak, checks a fleet's readiness
    before an event, and reloads php-fpm host by host without losing a request. Changes go
    through Ansible roles (also usable on their own); checks read the running state over SSH.

    \b
    Start with a lab of real hosts on this machine:
      opsctl lab up
      opsctl inventory --inventory lab
      opsctl check --inventory lab

    Exit codes: 0 success, 1 findings or failed hosts, 2 could not run (bad input).
    """


@cli.command("inventory")
@inventory_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="table for people, json for scripts.")
@handle_errors
def inventory_cmd(inventory: str, limit: str | None, verbose: int, fmt: str, vault: VaultOptions) -> None:
    """List hosts with their groups and address, and each group's event profile.

    The inventory is read with Ansible's own parser (INI or YAML, group_vars/, host_vars/), and
    every event profile (variable `opsctl_event`) is validated: a malformed one is an error
    naming the file and the key.
    """
    from opsctl.inventory import load_inventory
    from opsctl.report import inventory_json, print_inventory

    inv = load_inventory(inventory, limit, vault)
    if fmt == "json":
        click.echo(json.dumps(inventory_json(inv), indent=2))
    else:
        print_inventory(Console(), inv, verbose)


@cli.command()
@inventory_options
@click.option("--check", "dry_run", is_flag=True, help="Dry run: change nothing.")
@click.option("--diff", is_flag=True, help="Show what each file would become.")
@click.option("--tags", metavar="TAGS", help="Apply only these parts (sysctl, limits, nginx, php_fpm, lifecycle, logrotate).")
@click.option("--explain", is_flag=True, help="Print the capacity model's decisions per host and change nothing.")
@click.option("--no-restart", is_flag=True,
              help="Do not restart hosts whose new settings a reload cannot apply; report them as pending.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output of --explain: table for people, json for scripts.")
@handle_errors
def harden(inventory: str, limit: str | None, verbose: int, dry_run: bool, diff: bool,
           tags: str | None, explain: bool, no_restart: bool, fmt: str, vault: VaultOptions) -> None:
    """Apply capacity-sized sysctl, limits, nginx and php-fpm settings fleet-wide.

    Settings are derived from each group's event profile (peak qps, request time, client
    timeout, worker memory) and applied idempotently through Ansible roles; every file is
    validated (nginx -t, php-fpm -t) before it goes live and services are reloaded, never
    restarted. Settings a reload cannot apply (php-fpm listen.backlog) are then applied by a
    drained, graceful rolling restart of exactly the hosts that need it (--no-restart: only
    reported). --explain prints each host's values and why, and changes nothing.

    Exit codes: 0 every host converged, 1 a host failed or was unreachable, 2 bad input.
    """
    from opsctl.harden_flow import HardenOptions, run_harden

    sys.exit(run_harden(HardenOptions(inventory=inventory, limit=limit, verbose=verbose, check=dry_run, diff=diff,
                                      tags=tags, explain=explain, restart=not no_restart, fmt=fmt,
                                      vault=vault)))


@cli.command()
@inventory_options
@click.option("--event", metavar="WHEN", help="Event start, e.g. 2026-11-11T00:00+08:00 (default: the profile's window).")
@click.option("--duration", metavar="DURATION", help="Event length, e.g. 2h.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "junit", "markdown"]), default="table", show_default=True)
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), default="fail", show_default=True,
              help="Lowest severity that makes the exit code 1.")
@click.option("--catalog", multiple=True, metavar="FILE", help="An extra check catalog (YAML).")
@click.option("--hosts", "hosts", metavar="PATTERN",
              help="The table shows these hosts' own results in full instead of the fleet's grouped findings: "
                   "a glob on host names (web7, 'web1*'). Every host is still checked and in the verdict.")
@handle_errors
def check(inventory: str, limit: str | None, verbose: int, event: str | None, duration: str | None,
          fmt: str, fail_on: str, catalog: tuple[str, ...], hosts: str | None, vault: VaultOptions) -> None:
    """Pre-event readiness checks over SSH: fast, parallel, with numbers and remediation.

    Every host runs one read-only probe (roles/opsctl_preflight/files/probe.sh in the collection) over one SSH connection, in
    parallel; the facts are judged by the check catalog (roles/opsctl_preflight/files/catalog.yml, plus
    --catalog files) against each host's event profile, the window under check and the
    capacity model. Unreachable hosts, bad host keys and auth failures are per-host errors.

    The table groups the same finding across hosts (web[01-98], web100) and fits the terminal;
    piped, it is one plain line per group. -v adds passes and every host's own results;
    --hosts PATTERN shows those hosts' results in full.

    Exit codes: 0 ready, 1 findings at or above --fail-on (or hosts not checked), 2 could not run.
    """
    from opsctl.check_flow import CheckOptions, run_checks

    sys.exit(run_checks(CheckOptions(inventory=inventory, limit=limit, verbose=verbose, event=event,
                                     duration=duration, fmt=fmt, fail_on=fail_on, catalogs=catalog,
                                     hosts=hosts, vault=vault)))


@cli.command()
@click.argument("service", type=click.Choice(["php-fpm", "nginx"]))
@inventory_options
@click.option("--rolling", is_flag=True, required=True,
              help="One batch at a time: test, drain, reload, verify, re-enable (required: the only mode).")
@click.option("--batch", default="1", show_default=True, metavar="N|N%", help="Hosts per batch.")
@click.option("--restart", is_flag=True, help="Graceful stop and start instead of a reload (for settings a reload cannot apply).")
@click.option("--check", "dry_run", is_flag=True, help="Print the plan (batches, balancers touched) and change nothing.")
@click.option("--resume-from", metavar="HOST", help="Skip the hosts before HOST in rollout order.")
@handle_errors
def reload(service: str, inventory: str, limit: str | None, verbose: int, rolling: bool, batch: str,
           restart: bool, dry_run: bool, resume_from: str | None, vault: VaultOptions) -> None:
    """Gracefully reload php-fpm or nginx, host by host, losing no request.

    \b
    For each batch of hosts (web group, or hosts with opsctl_balancers):
      test    php-fpm -t / nginx -t; a failure stops the rollout before the host is touched
      drain   mark the host down on its balancers (nginx: upstream `down` + graceful reload),
              then wait until no request is in flight on it
      reload  SIGUSR2 / SIGHUP (--restart: SIGQUIT, wait, start), then wait until every old
              worker is gone and new ones answer
      smoke   a real request from the balancer to the host must succeed
      enable  put the host back on its balancers
    Any failure stops the rollout: the failed host stays drained, every other host serves,
    and the output says which host failed at which step and how to resume. The same playbook
    runs on its own: ansible-playbook -i INVENTORY opsctl.fleet.rolling_reload.
    """
    from opsctl.rolling_flow import reload_rolling

    sys.exit(reload_rolling(inventory, limit, service, mode="restart" if restart else "reload", batch=batch,
                            resume_from=resume_from, dry_run=dry_run, verbose=verbose, vault=vault))


@cli.command()
@inventory_options
@click.option("--interval", default="1s", show_default=True, metavar="DURATION",
              help="Time between two samples of every host (at least 0.2s).")
@click.option("--duration", metavar="DURATION", help="Stop after this long, e.g. 10m (default: until Ctrl-C).")
@click.option("--record", metavar="FILE", help="Append every sample to FILE as JSON lines (host, time, figures).")
@click.option("--once", is_flag=True, help="Take one sample of every host (rates over one interval), print it, exit.")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True,
              help="Output of --once.")
@handle_errors
def watch(inventory: str, limit: str | None, verbose: int, interval: str, duration: str | None,
          record: str | None, once: bool, fmt: str, vault: VaultOptions) -> None:
    """Live full-screen view of the fleet during an event: what is about to overflow, now.

    One SSH session per host stays open (through jump hosts, host keys checked, sudo as for
    check); one small sampler runs on each host and answers one JSON line per interval. Hosts
    are sorted worst first; fleet totals on top; a figure past its threshold is red.

    \b
    Per host, every interval:
      req/s, 2xx 499 5xx   the access log's new lines since the last sample, by status
      p50/p99 ms           upstream response time, when the log_format has it ($upstream_response_time)
      queue                the fullest accept queue of an nginx or php-fpm listener: waiting/limit
                           (ss Recv-Q/Send-Q); red above half the limit
      ovf/s                ListenOverflows (+ListenDrops) per second: connections refused for a
                           full queue; red when above 0
      CW                   CLOSE_WAIT sockets on php-fpm TCP listeners; red, with an arrow, when growing
      fpm a/i/q, mcr       php-fpm active/idle/listen queue and max children reached, from each pool's
                           status page (pm.status_path; opsctl harden sets one); "-" without one
      iow load mem         iowait share of CPU time, 1-minute load, memory in use
    A host that stops answering is LOST within two intervals and reconnected in the background.

    \b
    Examples:
      opsctl watch -i prod --limit web                  full screen until Ctrl-C
      opsctl watch -i prod --record sale.jsonl          and keep every sample
      opsctl watch -i prod --once --format json         one sample, for scripts and monitoring

    Exit codes: 0 done (--once: every host answered), 1 --once and a host did not, 2 bad input.
    """
    from opsctl.watch.run import WatchOptions, parse_times, run_watch

    seconds, until = parse_times(interval, duration)
    sys.exit(run_watch(WatchOptions(inventory=inventory, limit=limit, interval=seconds, duration=until,
                                    record=record, once=once, fmt=fmt, vault=vault)))


@cli.group()
def logrotate() -> None:
    """Log rotation out of the peak: rescheduled, spread across hosts, reopened, throttled."""


@logrotate.command("plan")
@inventory_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def logrotate_plan(inventory: str, limit: str | None, verbose: int, fmt: str, vault: VaultOptions) -> None:
    """Print each host's rotation slot and the event windows it avoids.

    Hosts behind the same balancers (same `opsctl_balancers`) are spread evenly over the fleet
    window (`opsctl_logrotate_window`, default 04:00-05:00 UTC) and never share a minute; the
    window moves clear of every declared event window (with its prepare margin). Old logs are
    pruned later, at the time shown, throttled. The opsctl_logrotate role computes the same slots.
    """
    from opsctl.inventory import load_inventory
    from opsctl.logrotate_plan import plan
    from opsctl.report import print_logrotate_plan

    from opsctl.vault import resolve

    vault = resolve(vault)   # once for both loads
    selected = [h.name for h in load_inventory(inventory, limit, vault).hosts]
    plans = plan(load_inventory(inventory, None, vault), selected)
    if fmt == "json":
        click.echo(json.dumps([dict(p.slot.as_dict(), balancers=p.balancers) for p in plans], indent=2))
    else:
        print_logrotate_plan(Console(), plans)


@logrotate.command("apply")
@inventory_options
@click.option("--check", "dry_run", is_flag=True, help="Dry run: change nothing.")
@click.option("--diff", is_flag=True, help="Show what each file would become.")
@handle_errors
def logrotate_apply(inventory: str, limit: str | None, verbose: int, dry_run: bool, diff: bool, vault: VaultOptions) -> None:
    """Apply the log rotation role alone (opsctl.fleet.logrotate; `harden --tags logrotate` too).

    Every host gets the slot `opsctl logrotate plan` prints; rotation reopens logs with SIGUSR1
    and never restarts anything; old logs are pruned later, throttled. Exit codes: 0 every host
    converged, 1 a host failed, 2 bad input.
    """
    from opsctl.harden_flow import HardenOptions, apply_alone

    sys.exit(apply_alone("logrotate", HardenOptions(
        inventory=inventory, limit=limit, verbose=verbose, check=dry_run, diff=diff, tags=None,
        explain=False, restart=False, fmt="table", vault=vault)))


def log_reading_options(func: Callable) -> Callable:
    """--rate and --timeout of the commands that read the access logs on the hosts."""
    func = click.option("--timeout", "timeout_s", default="10m", show_default=True, metavar="DURATION",
                        help="Give up on a host that has not answered within this long.")(func)
    return click.option("--rate", "rate_mb", type=float, metavar="MB/S",
                        help="Read at most this many MB of log a second on each host, besides nice 19 and idle I/O "
                             "(default 4: about a fifth of one core).")(func)


@cli.command("report")
@inventory_options
@click.option("--since", required=True, metavar="TIME",
              help="Start of the window: 2026-12-06T10:00 (UTC unless a zone is given) or a duration ago, e.g. 2h.")
@click.option("--until", metavar="TIME", help="End of the window (not included), as --since (default: now).")
@click.option("--record", metavar="FILE",
              help="An `opsctl watch --record` file: its accept queue, overflows and CLOSE_WAIT per host and minute beside the logs'.")
@log_reading_options
@click.option("--format", "fmt", type=click.Choice(["markdown", "html", "json"]), default="markdown", show_default=True,
              help="markdown: findings and tables for the incident ticket; html: one self-contained page with "
                   "plots (opens with no network); json: every figure.")
@handle_errors
def report_cmd(inventory: str, limit: str | None, verbose: int, since: str, until: str | None, record: str | None,
               rate_mb: float | None, timeout_s: str, fmt: str, vault: VaultOptions) -> None:
    """The event afterwards, from every host's nginx access logs.

    On every host (one SSH session each, in parallel, as profile suggest) a small Python script
    reads the access logs nginx writes, rotated ones too, under nice 19 and the idle I/O class
    at --rate, and sends back per-minute counts by status class (2xx, 3xx, 499, 502, 503, 504,
    other) and latency histograms per vhost and upstream; never a log line. The report rolls
    them up fleet-wide, per host, per vhost and per upstream, with upstream response time
    p50/p90/p99/max per minute and findings in numbers. Exit codes: 0 every host answered,
    1 a host did not, 2 bad input.
    """
    from opsctl.event_report import ReportOptions, parse_window, run_report
    from opsctl.host_logs import DEFAULT_RATE_MB, parse_rate
    from opsctl.profile_suggest import parse_span

    start, end = parse_window(since, until)
    opts = ReportOptions(since=start, until=end, rate_mb=DEFAULT_RATE_MB if rate_mb is None else parse_rate(rate_mb),
                         timeout_s=parse_span(timeout_s, "--timeout"), record=record)
    sys.exit(run_report(inventory, limit, vault, opts, fmt))


@cli.group()
def profile() -> None:
    """The event profile (opsctl_event) measured from what the hosts served."""


@profile.command("suggest")
@inventory_options
@click.option("--since", default="7d", show_default=True, metavar="DURATION",
              help="Read the requests of this last stretch, e.g. 7d, 12h (by the log lines' own times).")
@click.option("--expect", default="1x", show_default=True, metavar="FACTOR",
              help="How many times the busiest second seen the event brings, e.g. 10x.")
@log_reading_options
@click.option("--format", "fmt", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True,
              help="table: figures with evidence, then the YAML block; yaml: the group_vars block only.")
@handle_errors
def profile_suggest(inventory: str, limit: str | None, verbose: int, since: str, expect: str, rate_mb: float | None,
                    timeout_s: str, fmt: str, vault: VaultOptions) -> None:
    """Propose the event profile from each host's access logs and php-fpm workers.

    On every host (one SSH session each, in parallel) a small Python script reads the access
    logs nginx writes, rotated ones too (.1, .2.gz), under nice 19 and the idle I/O class at
    --rate, and sends back aggregates only, never a log line: the busiest second and minute,
    and request / upstream time histograms. php-fpm worker memory is the p95 of the running
    workers' RSS. Exit codes: 0 every host answered, 1 a host did not, 2 bad input.
    """
    from opsctl.host_logs import DEFAULT_RATE_MB, parse_rate
    from opsctl.profile_suggest import SuggestOptions, parse_expect, parse_span, run_suggest

    opts = SuggestOptions(since_s=parse_span(since), expect=parse_expect(expect),
                          rate_mb=DEFAULT_RATE_MB if rate_mb is None else parse_rate(rate_mb),
                          timeout_s=parse_span(timeout_s, "--timeout"))
    sys.exit(run_suggest(inventory, limit, vault, opts, fmt))


@cli.group()
def lab() -> None:
    """A local fleet of real hosts (sshd, nginx, php-fpm) in network namespaces.

    Needs root and Debian's openssh-server, nginx and php-fpm packages. Each host has its own
    network namespace, file system view (an overlay on /) and sshd with its own host key; the
    keys are recorded in the lab's known_hosts, so SSH checks them. `--inventory lab` then
    names the lab's inventory.
    """


_name_option = click.option("--name", default="lab", show_default=True,
                            help="Lab name; several labs can run side by side.")


@lab.command("up")
@_name_option
@click.option("--web", default=2, show_default=True, help="Number of web hosts (nginx + php-fpm).")
@click.option("--subnet", metavar="CIDR", help="IPv4 /24 for the lab (default: derived from --name).")
@click.option("--flavor", type=click.Choice(FLAVORS), default="debian", show_default=True,
              help="How the web hosts are laid out: debian, Debian's packages; source, php-fpm and nginx "
                   "built from source under /usr/local (php-src's init script, a unix socket in /tmp, nginx "
                   "started by hand with -c; the package's own files are removed inside the host); multi, "
                   "Debian's packages plus a second pool (api, TCP), Debian's php7.4-fpm beside them and a "
                   "panel's php-fpm master under /www/server/php/74 (four pools, three masters); rhel, the RHEL family's layout "
                   "(/etc/php-fpm.conf, /etc/php-fpm.d, users apache and nginx, nginx's server in nginx.conf) "
                   "with Remi's PHP 7.4 collection beside it, every service a systemd unit, no init scripts.")
@click.option("--bastion", is_flag=True,
              help="Put the lb and web hosts behind a bastion host (bastion1): their sshd listens only on a "
                   "management network the controller has no route to, the inventory reaches them through "
                   "an ssh_config with ProxyJump, and web1 is reached as a non-root user (deploy) whose sudo "
                   "needs a password (ansible_become_password).")
@click.option("--balancer", type=click.Choice(BALANCERS), default="nginx", show_default=True,
              help="What the lb host balances with: nginx (an upstream of the web hosts, stock proxy settings) or "
                   "haproxy (Debian's package and its haproxy.cfg with the admin socket, a backend of the web hosts "
                   "with an HTTP health check; the web hosts' opsctl_balancers say type haproxy).")
@handle_errors
def lab_up(name: str, web: int, subnet: str | None, flavor: str, bastion: bool, balancer: str) -> None:
    """Start the lab (one lb host, --web web hosts); safe to run again."""
    from opsctl.lab import fleet
    from opsctl.report import print_lab_status

    err = _stderr()
    with err.status("bringing the lab up") as status:
        spec = fleet.up(name, web, subnet, report=lambda msg: status.update(msg), flavor=flavor, bastion=bastion,
                        balancer=balancer)
    _, health = fleet.wait_healthy(name)
    print_lab_status(Console(), spec, health)
    if not all(h.healthy for h in health):
        raise OpsctlError(f"lab {name!r} is up but some services do not answer (see above)")


@lab.command("down")
@_name_option
@handle_errors
def lab_down(name: str) -> None:
    """Remove every namespace, link, mount, process and file of the lab (also after a crash)."""
    from opsctl.lab import fleet

    fleet.down(name, report=lambda msg: click.echo(msg, err=True))
    click.echo(f"lab {name!r} is down")


@lab.command("status")
@_name_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def lab_status(name: str, fmt: str) -> None:
    """Each host, its address and whether sshd, nginx and php-fpm answer. Exit 1 if any does not."""
    from opsctl.lab import fleet
    from opsctl.report import print_lab_status

    spec, health = fleet.status(name)
    if fmt == "json":
        click.echo(json.dumps([h.__dict__ for h in health], indent=2))
    else:
        print_lab_status(Console(), spec, health)
    healthy = all(h.healthy for h in health)
    sys.exit(EXIT_OK if healthy else EXIT_FAILED)


def _quiet_dependency_warnings() -> None:
    """Ansible imports cryptography's DSA class, which cryptography 47+ deprecates with a warning on
    stderr: not the operator's concern, and it would break the one-line error contract."""
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"ansible\.")


def main() -> None:
    _quiet_dependency_warnings()
    cli(prog_name="opsctl")
