"""The steps of `opsctl check`: load the inventory (overlapped with the imports), refuse bad
input, probe every host with a progress line, print the report in the format asked for, and
say ready or not as an exit code."""

from __future__ import annotations

from dataclasses import dataclass

import click
from rich.console import Console

from opsctl.errors import EXIT_FAILED, EXIT_OK, OpsctlError
from opsctl.vault import VaultOptions, resolve


@dataclass(frozen=True)
class CheckOptions:
    inventory: str
    limit: str | None
    verbose: int
    event: str | None
    duration: str | None
    fmt: str
    fail_on: str
    catalogs: tuple[str, ...]
    vault: VaultOptions
    hosts: str | None = None     # --hosts PATTERN: whose own results the table shows


def run_checks(opts: CheckOptions) -> int:
    """The exit code: 0 ready, 1 findings at or above fail_on (or hosts not checked)."""
    from opsctl.inventory import load_inventory_soon

    # First: the load overlaps with the imports below. Vault secrets named on the command line
    # are read (and prompted for) here, before the fork; ansible.cfg's in the forked parser.
    pending = load_inventory_soon(opts.inventory, opts.limit, resolve(opts.vault) if opts.vault.given else opts.vault)
    from opsctl.checks import output
    from opsctl.checks.run import EventOverride, load_checks, run_check, validate_override

    try:
        override = EventOverride(opts.event, opts.duration)
        validate_override(override)
        engine, _ = load_checks(opts.catalogs)
    except BaseException:
        pending.cancel()   # bad input: stop the load cleanly before the error is printed
        raise
    inv = pending()
    _refuse_unknown_hosts(opts.hosts, [h.name for h in inv.hosts])
    err = Console(stderr=True)
    seen: list = []
    with err.status(output.progress_line(0, len(inv.hosts), 0, "")) as status:
        def answered(outcome) -> None:
            seen.append(outcome)
            status.update(output.progress_line(len(seen), len(inv.hosts),
                                               sum(o.status == "error" for o in seen), outcome.name))
        report = run_check(inv, engine, override, fail_on=opts.fail_on, on_host=answered)
    _print_report(report, opts.fmt, opts.verbose, opts.hosts)
    return EXIT_OK if report.ready else EXIT_FAILED


def _refuse_unknown_hosts(pattern: str | None, names: list[str]) -> None:
    """--hosts that names no host is a typo: say so before anything connects."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip, cut
    from opsctl.checks.grouping import compress_hosts
    from opsctl.checks.output import matches

    if pattern is not None and not any(matches(name, pattern) for name in names):
        raise OpsctlError(f"--hosts {clip(pattern)}: no host of the inventory matches "
                          f"(its hosts: {cut(compress_hosts(names), 200) or 'none'})")


def _print_report(report, fmt: str, verbose: int, hosts: str | None) -> None:
    from opsctl.checks import output
    from opsctl.checks.run import dumps

    if fmt == "json":
        click.echo(dumps(report))
    elif fmt == "junit":
        click.echo(output.junit(report))
    elif fmt == "markdown":
        click.echo(output.markdown(report), nl=False)
    else:
        output.print_table(Console(), report, verbose, hosts)
