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

from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log, durations

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


def _http_opener(scanned: list[Line]) -> int | None:
    """The index of the line that opens the file's http block, None without one."""
    return next((i for i, line in enumerate(scanned) if line.depth == 0 and "{" in _code(line.text)
                 and _code(line.text).split("{")[0].split() == ["http"]), None)


def _server_depth(scanned: list[Line]) -> int:
    """How deep a file's server blocks open: 0 in a site file, 1 in a main file whose http block
    holds them itself (RHEL's nginx.conf, many source builds)."""
    return int(_http_opener(scanned) is not None)


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


# --- access logs --------------------------------------------------------------------------------

# A switched access_log keeps the line it replaced after this mark, so that opting out puts it back.
ACCESS_LOG_MARK = "# managed by opsctl, was: "
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[^\s;]+')
_LOG_FORMAT = re.compile(r"(?:^|[;{}\s])log_format\s+(\S+)\s+((?:escape=\S+\s+)?)((?:'[^']*'|\"[^\"]*\"|\s)+);")
# The formats a switch loses nothing of: nginx's built-in combined, and `main` as RHEL's and
# nginx.org's packages define it (combined and X-Forwarded-For). opsctl_timing logs all of theirs.
_STOCK = {" ".join(access_log.COMBINED.split()), " ".join(access_log.MAIN.split())}


def stock_log_formats(texts: list[str]) -> list[str]:
    """The format names whose access logs may be switched: combined and every log_format these
    files define as a stock one. [] when the first text (nginx.conf) has no http block, where the
    format would have to be defined before any access_log uses it."""
    if _http_opener(_scan(texts[0].splitlines())) is None:
        return []
    names = ["combined"]
    for text in texts:
        for name, escape, parts in _LOG_FORMAT.findall("\n".join(_code(line) for line in text.splitlines())):
            definition = "".join(part[1:-1] for part in re.findall(r"'[^']*'|\"[^\"]*\"", parts))
            if not escape and " ".join(definition.split()) in _STOCK and name not in names:
                names.append(name)
    return names


def _switched(words: list[str], fmt: str, params: Mapping[str, object], stock: list[str]) -> list[str] | None:
    """An access_log's new arguments, or None when it stays: off, syslog, a format of its own."""
    path = words[0].strip("'\"")
    if path == "off" or path.startswith("syslog:") or (len(words) > 1 and words[1] not in stock):
        return None
    given = words[2:]
    add = [f"{key}={value}" for key, value in params.items() if not any(w.startswith(f"{key}=") for w in given)]
    if "$" in path:            # nginx buffers no log whose name holds variables
        add = []
    elif any(w == "gzip" or w.startswith("gzip=") for w in given):
        add = [a for a in add if not a.startswith("buffer=")]   # gzip brings its own buffer
    return [words[0], fmt, *given, *add]


def _access_log_words(text: str) -> list[str]:
    """The arguments of an access_log line, [] for any other line (one with several directives
    is left alone)."""
    parsed = _directive(text)
    if not parsed or parsed[0] != "access_log" or _code(text).count(";") != 1:
        return []
    return _WORD.findall(parsed[1])


def access_logs_set(content: str, fmt: str, params: Mapping[str, object], stock: list[str]) -> str:
    """Every access_log to a file in a stock format (named or not) switched to `fmt` with the
    `params` (buffer=, flush=) it does not set itself; its earlier line kept after ACCESS_LOG_MARK.
    A line switched before is made again from that earlier line (new params apply). fmt "": the
    switched lines put back as they were."""
    lines = content.splitlines()
    for i, text in enumerate(lines):
        indent, original = _indent_of(text), text.strip()
        if ACCESS_LOG_MARK in text:
            original = text.split(ACCESS_LOG_MARK, 1)[1]
            lines[i] = indent + original
        words = _access_log_words(original) if fmt else []
        new = _switched(words, fmt, params, stock) if words else None
        if new is not None:
            lines[i] = f"{indent}access_log {' '.join(new)};  {ACCESS_LOG_MARK}{original}"
    return "\n".join(lines) + "\n"


def access_logs_kept(content: str, fmt: str, stock: list[str]) -> list[str]:
    """The access_log lines to files that keep a format of their own (neither stock nor `fmt`)."""
    out = []
    for text in content.splitlines():
        words = _access_log_words(text) if ACCESS_LOG_MARK not in text else []
        if len(words) > 1 and words[1] not in stock and words[1] != fmt and words[0] != "off":
            out.append(_code(text).strip())
    return out


_INCLUDE_NOTE = "# managed by opsctl: the access-log format"


def http_include_set(content: str, include: str) -> str:
    """nginx.conf with `include PATH;` first in its http block (before any access_log there uses
    what it defines); include "": that line removed. Without an http block: unchanged."""
    lines = [text for text in content.splitlines() if not text.rstrip().endswith(_INCLUDE_NOTE)]
    at = _http_opener(_scan(lines))
    if include and at is not None:
        following = lines[at + 1] if at + 1 < len(lines) else ""
        indent = (_indent_of(following) if following.strip() else "") or "\t"
        lines.insert(at + 1, f"{indent}include {include};  {_INCLUDE_NOTE}")
    return "\n".join(lines) + "\n"


def log_format(which: str) -> dict[str, object]:
    """opsctl's access-log format ("opsctl"): its name and its text in pieces, one per line of the
    file it goes in. Defined once, in plugin_utils/access_log.py, whose reader compiles the same text."""
    if which != "opsctl":
        raise ValueError(f"no access-log format {which!r}: only 'opsctl'")
    return {"name": access_log.OPSCTL_TIMING_NAME, "lines": list(access_log.OPSCTL_TIMING)}


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
            "nginx_stock_log_formats": stock_log_formats,
            "nginx_access_logs_set": access_logs_set,
            "nginx_access_logs_kept": access_logs_kept,
            "nginx_http_include_set": http_include_set,
            "nginx_log_format": log_format,
        }
