"""Edit nginx configuration files in place, directive by directive (filters opsctl.fleet.nginx_*).

Why in place rather than full templates: nginx.conf and the sites are the vendor's and the
team's files (their includes, vhosts, TLS); opsctl owns only the directives it sets, so a
package upgrade shows a small conffile diff and nothing else of the site changes. The parser is
line based (one directive per line, as in every vendor file): it tracks block depth by braces
outside comments and quotes, which is all these edits need. nginx times are read by
plugin_utils/durations.py, so the role and opsctl share one rule and one bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations

_TIMEOUT = re.compile(r"^(?P<indent>\s*)(?P<name>(fastcgi|proxy)_(connect|send|read)_timeout)\s+(?P<value>[^;\s]+)\s*;")
# A file of more lines than this is refused rather than edited line by line (seconds per 100 000
# lines): real nginx.conf and site files hold a few thousand at most. The whole `nginx -T` dump,
# only scanned once for timeouts, may be larger.
MAX_LINES = 200_000
MAX_DUMP_LINES = 1_000_000


seconds = durations.nginx_seconds   # an nginx time in seconds; ValueError beyond 3650d or not a time


@dataclass
class Line:
    text: str
    depth: int          # block depth before this line
    block: str          # the innermost enclosing block's header ("" at top level), e.g. "server"
    block_start: int    # index of the line that opened that block (-1 at top level)


def _code(text: str) -> str:
    """The line without its comment (a '#' outside quotes starts one)."""
    if "#" not in text:
        return text   # the common line: no character-by-character walk
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return text[:i]
    return text


def _too_large(lines: list[str], limit: int = MAX_LINES) -> None:
    if len(lines) > limit:
        raise ValueError(f"nginx configuration too large to read: more than {limit} lines")


def _scan(lines: list[str]) -> list[Line]:
    _too_large(lines)
    out: list[Line] = []
    stack: list[tuple[str, int]] = []
    for i, text in enumerate(lines):
        code = _code(text)
        block, start = stack[-1] if stack else ("", -1)
        out.append(Line(text, len(stack), block, start))
        if "{" not in code and "}" not in code:
            continue
        for ch in code:
            if ch == "{":
                header = code[: code.index("{")].split()
                stack.append((header[0] if header else "", i))
            elif ch == "}" and stack:
                stack.pop()
    return out


def _directive(text: str) -> tuple[str, str] | None:
    """(name, arguments) of a simple directive line, else None."""
    code = _code(text).strip()
    if not code.endswith(";") or "{" in code:
        return None
    name, _sep, args = code[:-1].strip().partition(" ")
    return name, args.strip()


def _indent_of(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _set_in_block(lines: list[str], block: str, name: str, value: object, insert: bool) -> None:
    """Set `name value;` in every block named `block` at depth <= 1 ("" = main context)."""
    scanned = _scan(lines)
    want_depth = 0 if block == "" else 1
    hits = [i for i, line in enumerate(scanned)
            if line.depth == want_depth and line.block == block and (_directive(line.text) or ("",))[0] == name]
    for i in hits:
        lines[i] = f"{_indent_of(lines[i])}{name} {value};"
    if hits or not insert:
        return
    if block == "":
        anchor = next((i for i, line in enumerate(scanned)
                       if line.depth == 0 and (_directive(line.text) or ("",))[0] == "worker_processes"), None)
        at = anchor + 1 if anchor is not None else next(
            (i for i, line in enumerate(scanned) if _code(line.text).strip()), 0)
        lines.insert(at, f"{name} {value};")
        return
    opener = next((i for i, line in enumerate(scanned)
                   if line.depth == 0 and _code(line.text).split("{")[0].split() == [block]
                   and "{" in _code(line.text)), None)
    if opener is None:
        raise ValueError(f"no {block} {{ }} block in nginx.conf")
    lines.insert(opener + 1, f"\t{name} {value};")


def main_set(content: str, main: Mapping[str, object], events: Mapping[str, object],
             http: Mapping[str, object]) -> str:
    """nginx.conf with main and events directives set (inserted when absent) and http-level
    directives replaced where nginx.conf already has them (elsewhere they go to conf.d)."""
    lines = content.splitlines()
    for name, value in main.items():
        _set_in_block(lines, "", name, value, insert=True)
    for name, value in events.items():
        _set_in_block(lines, "events", name, value, insert=True)
    for name, value in http.items():
        _set_in_block(lines, "http", name, value, insert=False)
    return "\n".join(lines) + "\n"


def http_has(content: str, names: list[str]) -> list[str]:
    """Which of these directives nginx.conf sets itself at http level (a second one is an error)."""
    found = {(_directive(line.text) or ("",))[0] for line in _scan(content.splitlines())
             if line.depth == 1 and line.block == "http"}
    return [name for name in names if name in found]


def _listen_key(args: str) -> str:
    """The address:port a listen directive binds ("80" and "*:80" are the same)."""
    addr = args.split()[0]
    if addr.startswith("unix:") or addr.startswith("["):
        return addr if addr.startswith("unix:") or "]:" in addr else addr + ":80"
    if addr.isdigit():
        return f"*:{addr}"
    return addr if ":" in addr else f"{addr}:80"


def _with_param(text: str, param: str, value: object | None) -> str:
    """A directive line with `param=value` set (value None: removed), before the ';'."""
    code = _code(text)
    comment = code[len(code.rstrip()):] + text[len(code):]
    body = code.rstrip()[:-1]
    present = re.compile(rf"(\s+){re.escape(param)}=[^\s;]+")
    if value is None:
        body = present.sub("", body)
    elif present.search(body):
        # In place: the order of a server's parameters (and a drain's "down") stays as it was.
        body = present.sub(lambda m: f"{m.group(1)}{param}={value}", body, count=1)
    else:
        body = f"{body} {param}={value}"
    return f"{body};{comment}"


def _server_depth(scanned: list[Line]) -> int:
    """How deep a file's server blocks open: 0 in a site file, 1 in a main file whose http block
    holds them itself (RHEL's nginx.conf, many source builds)."""
    return int(any(line.depth == 0 and _code(line.text).split("{")[0].split() == ["http"]
                   for line in scanned if "{" in line.text))


def _set_listen_backlog(lines: list[str], backlog: object) -> None:
    scanned = _scan(lines)
    inside = _server_depth(scanned) + 1
    groups: dict[str, list[int]] = {}
    for i, line in enumerate(scanned):
        parsed = _directive(line.text)
        if parsed and parsed[0] == "listen" and line.block == "server" and line.depth == inside:
            groups.setdefault(_listen_key(parsed[1]), []).append(i)
    for indexes in groups.values():
        # nginx takes listen options (backlog=) from one listen per address:port only; the
        # default_server one is unique per address:port by nginx's own rule.
        chosen = next((i for i in indexes if "default_server" in _code(lines[i]).split()), indexes[0])
        for i in indexes:
            lines[i] = _with_param(lines[i], "backlog", backlog if i == chosen else None)


def _add_server_include(lines: list[str], include: str) -> None:
    scanned = _scan(lines)
    statement = f"include {include};"
    # One pass over the lines, not one per server: a site of many thousand servers stays linear.
    has_it = {line.block_start for line in scanned if _code(line.text).strip() == statement}
    depth = _server_depth(scanned)
    out: list[str] = []
    for i, line in enumerate(scanned):
        out.append(lines[i])
        if (line.depth == depth and "{" in _code(line.text) and _code(line.text).split("{")[0].split() == ["server"]
                and i not in has_it):
            # Indented one step further than the server line, in the file's own style.
            indent = line.text[:len(line.text) - len(line.text.lstrip())]
            out.append(indent + ("    " if indent.startswith(" ") else "\t") + f"{statement}  # managed by opsctl: load shedding")
    lines[:] = out


def _set_upstream_servers(lines: list[str], params: Mapping[str, object]) -> None:
    scanned = _scan(lines)
    inside = _server_depth(scanned) + 1
    for i, line in enumerate(scanned):
        parsed = _directive(line.text)
        if line.block == "upstream" and line.depth == inside and parsed and parsed[0] == "server":
            for param, value in params.items():
                lines[i] = _with_param(lines[i], param, value)


def _set_timeouts(lines: list[str], timeouts: Mapping[str, object]) -> None:
    for i, text in enumerate(lines):
        match = _TIMEOUT.match(_code(text))
        if match and match.group("name") in timeouts:
            lines[i] = f"{match.group('indent')}{match.group('name')} {timeouts[match.group('name')]};"


def site_set(content: str, listen_backlog: object, include: str, upstream: Mapping[str, object],
             timeouts: Mapping[str, object]) -> str:
    """A site file (or a main file whose http block holds servers) with the listen backlog, the
    load-shedding include in every server, the upstream servers' max_fails/fail_timeout and every
    fastcgi/proxy timeout it overrides set."""
    lines = content.splitlines()
    _set_listen_backlog(lines, listen_backlog)
    _set_upstream_servers(lines, upstream)
    _set_timeouts(lines, timeouts)
    _add_server_include(lines, include)
    return "\n".join(lines) + "\n"


def timeout_overrides(dump: str, limits: Mapping[str, object], skip: list[str]) -> list[str]:
    """From `nginx -T`: every fastcgi/proxy timeout above its limit (seconds, to the millisecond)
    in a file not in skip."""
    found, current = [], ""
    lines = dump.splitlines()
    _too_large(lines, MAX_DUMP_LINES)
    for text in lines:
        if text.startswith("# configuration file "):
            current = text[len("# configuration file "):].rstrip(":")
            continue
        match = _TIMEOUT.match(_code(text))
        if match and current not in skip and match.group("name") in limits:
            name, value = match.group("name"), match.group("value")
            try:
                above, note = durations.millis(seconds(value)) > durations.millis(float(str(limits[name]))), ""
            except durations.OutOfRange:   # above any limit; the figure shown cut, never whole
                above, note = True, f" (more than {durations.MAX_SECONDS // 86400}d)"
            except ValueError:              # not a time: nginx -t refuses it, nothing to report
                above, note = False, ""
            if above:
                found.append(f"{durations.cut(current)}: {name} {durations.cut(value)}{note}")
    return found


class FilterModule:
    def filters(self) -> dict:
        return {
            "nginx_main_set": main_set,
            "nginx_http_has": http_has,
            "nginx_site_set": site_set,
            "nginx_timeout_overrides": timeout_overrides,
            "nginx_time": durations.time_text,   # 5 -> 5s, 0.8 -> 800ms
        }
