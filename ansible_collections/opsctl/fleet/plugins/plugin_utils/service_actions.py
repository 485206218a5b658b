"""What a command line (a cron line, a cron.daily script line, a postrotate line) does to php-fpm
or nginx: one classifier for the opsctl_lifecycle role's cron filter and for `opsctl check`.

Actions, from worst (failure mode F3, docs/failure-modes.md):
- restart: a restart through a service manager (init script, service, invoke-rc.d, systemctl),
  or a stop followed by a start of the same service on the same line: down while it restarts,
  and SIGTERM with stock scripts;
- kill / killall / pkill: a signal that cuts requests (none, TERM, KILL, INT, 9, 15, 2, ...);
- stop: a service-manager stop, or a graceful stop signal (QUIT; WINCH for nginx): no request is
  cut once the role has run, but the node is down until something starts it;
- reload: reload, force-reload (a reload on Debian's scripts and on systemd units with an
  ExecReload), or USR2 / HUP;
- reopen: USR1, or the init script's rotate.
restart and the kills are `hard`. Lines are matched with regular expressions, not a shell
parser: a quoted or aliased command can escape them.

Some forms are known to restart or stop php-fpm or nginx but cannot be rewritten in place
without changing what else the line does: systemctl with several units, supervisorctl,
OpenRC's rc-service, a script named restart-nginx. They are found (check reports them, the
lifecycle role reports and keeps them: `rewritable` is false), never edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# php8.2-fpm, php-fpm, php74-php-fpm (Remi), php-fpm-74 (panels); nginx, openresty
_SVC = r"(?P<svc>php(?:\d+(?:\.\d+)?)?(?:-php)?-fpm(?:-?\d+(?:\.\d+)?)?|nginx|openresty)"
_UNIT = _SVC + r"(?:\.service)?"
# The verbs a service manager takes; what each one is (graceful ones too, so that a reload is
# known to be one and not mistaken for "no action").
_VERBS = r"restart|stop|force-stop|try-restart|condrestart|reload-or-restart|force-reload|reload|rotate"
_SYSTEMCTL_VERBS = r"restart|stop|try-restart|kill|reload-or-restart|try-reload-or-restart|force-reload|reload"
_VERB_ACTION = {"restart": "restart", "try-restart": "restart", "condrestart": "restart",
                "stop": "stop", "force-stop": "stop", "kill": "kill",
                "reload": "reload", "force-reload": "reload", "reload-or-restart": "reload",
                "try-reload-or-restart": "reload", "rotate": "reopen"}
_SIGNAL_OPT = r"(?P<opts>(?:\s+-{1,2}\S+(?:\s+(?!-)(?:[A-Z0-9]+)(?=\s))?)*)"
_PATTERNS = [
    # /etc/init.d/php8.2-fpm restart, /etc/rc.d/init.d/php-fpm stop
    re.compile(r"(?P<cmd>/etc/(?:rc\.d/)?init\.d/" + _SVC + r"\s+(?P<verb>" + _VERBS + r"))\b"),
    # service php-fpm restart, invoke-rc.d nginx stop
    re.compile(r"(?P<cmd>\b(?:service|invoke-rc\.d)\s+" + _SVC + r"\s+(?P<verb>" + _VERBS + r"))\b"),
    # systemctl restart php8.2-fpm.service, systemctl kill nginx
    re.compile(r"(?P<cmd>\bsystemctl(?:\s+--?\S+)*\s+(?P<verb>" + _SYSTEMCTL_VERBS + r")\s+" + _UNIT + r")(?![\w.-])"),
    # killall -9 php-fpm8.2, pkill -f nginx
    re.compile(r"(?P<cmd>\b(?P<verb>killall|pkill)" + _SIGNAL_OPT + r"\s+(?:-\S+\s+)*['\"]?" + _SVC + r"['\"]?)(?![\w.-])"),
    # kill -TERM $(cat /run/php/php8.2-fpm.pid), kill `pidof nginx`
    re.compile(r"(?P<cmd>\b(?P<verb>kill)" + _SIGNAL_OPT + r"\s+(?P<target>\$\([^)]*\)|`[^`]*`))"),
]
# Found, not rewritten: the command also acts on other programs, or is not a service manager
# whose reload opsctl knows.
_OTHER_MANAGERS = [
    # systemctl restart mysql nginx (several units: a rewrite would drop the others)
    re.compile(r"(?P<cmd>\bsystemctl(?:\s+--?\S+)*\s+(?P<verb>restart|stop|try-restart|kill)\s+(?:[\w@.:-]+\s+)+" + _UNIT
               + r")(?![\w.-])"),
    # supervisorctl restart php-fpm, supervisorctl stop app:php-fpm
    re.compile(r"(?P<cmd>\bsupervisorctl\s+(?P<verb>restart|stop)\s+(?:[\w@.:-]+\s+)*(?:[\w-]+:)?" + _SVC + r")(?![\w.-])"),
    # rc-service nginx restart (OpenRC)
    re.compile(r"(?P<cmd>\brc-service\s+" + _SVC + r"\s+(?P<verb>restart|stop))\b"),
    # /usr/local/bin/restart-nginx.sh, restart_php-fpm
    re.compile(r"(?P<cmd>(?<![\w-])(?P<verb>restart)[-_]" + _SVC + r"(?:\.sh)?)(?![\w-])"),
]
# /usr/local/nginx/sbin/nginx -s stop: the binary signals the master its pid file names. stop is
# SIGTERM (a fast shutdown that cuts requests), quit SIGQUIT, reload SIGHUP, reopen SIGUSR1.
_NGINX_SIGNAL = re.compile(r"(?P<cmd>(?<![\w.-])(?:\S*/)?(?P<svc>nginx|openresty)(?:\s+-[cpg]\s+\S+)*"
                           r"\s+-s\s+(?P<verb>stop|quit|reload|reopen))\b")
_NGINX_SIGNAL_ACTION = {"stop": "kill", "quit": "stop", "reload": "reload", "reopen": "reopen"}
_SVC_ONLY = re.compile(_SVC)
_START = r"(?:/etc/(?:rc\.d/)?init\.d/{svc}\s+start|\b(?:service|invoke-rc\.d)\s+{svc}\s+start|\bsystemctl\s+start\s+{svc})"
# What a signal does to a php-fpm or nginx master; any other signal (TERM, KILL, INT, none) cuts
# requests. 0 only tests that the process exists.
_SIGNAL_ACTION = {"QUIT": "stop", "3": "stop", "WINCH": "stop", "28": "stop",
                  "USR2": "reload", "12": "reload", "HUP": "reload", "1": "reload",
                  "USR1": "reopen", "10": "reopen", "0": ""}
_RANK = {"restart": 5, "kill": 4, "killall": 4, "pkill": 4, "stop": 3, "reload": 2, "reopen": 1}
HARD = ("restart", "kill", "killall", "pkill")


@dataclass(frozen=True)
class Action:
    """One thing a command line does to php-fpm or nginx."""
    service: str   # "php-fpm" or "nginx"
    name: str      # as written: php8.2-fpm, nginx
    action: str    # restart | kill | killall | pkill | stop | reload | reopen
    why: str
    start: int     # the command's span in the line: what a rewrite replaces
    end: int
    rewritable: bool = True   # False: found, but a rewrite would change what else the line does

    @property
    def hard(self) -> bool:
        return self.action in HARD


def service_kind(name: str) -> str:
    return "php-fpm" if "fpm" in name else "nginx"


def _signal(opts: str) -> str | None:
    """The signal kill/killall/pkill options name (QUIT, 9, ...), None for the default (TERM)."""
    words = [w.lstrip("-").upper() for w in opts.split()]
    for i, word in enumerate(words):
        if word in ("S", "SIGNAL") and i + 1 < len(words):
            return words[i + 1].removeprefix("SIG")
        if word.startswith("SIGNAL="):
            return word.split("=", 1)[1].removeprefix("SIG")
        if word.removeprefix("SIG") in _SIGNAL_ACTION or word.isdigit() or word in ("TERM", "KILL", "INT"):
            return word.removeprefix("SIG")
    return None


def _service(match: re.Match[str]) -> str | None:
    """The php-fpm or nginx name a match acts on (for kill: named inside its $(...) target)."""
    if "target" in match.groupdict():
        inner = _SVC_ONLY.search(match["target"])
        return inner["svc"] if inner else None
    return match["svc"]


def _action(match: re.Match[str], line: str, svc: str) -> tuple[str, str]:
    verb = match["verb"]
    if verb in ("kill", "killall", "pkill") and "opts" in match.groupdict():
        signal = _signal(match["opts"] or "")
        action = _SIGNAL_ACTION.get(signal, verb) if signal else verb
        if action == verb:
            return verb, f"{verb} with a hard signal ({signal or 'TERM'}) on {svc}"
        if action == "stop":
            return "stop", f"graceful stop ({signal}) of {svc}: the node is down until it is started"
        return action, f"{action} ({signal}) of {svc}"
    action = _VERB_ACTION[verb]
    if action == "restart":
        return action, f"{verb} of {svc}: down while it restarts, and SIGTERM with stock scripts"
    if action == "kill":
        return action, f"systemctl kill of {svc}: SIGTERM to every process of the unit"
    if action == "stop":
        return action, f"{verb} of {svc} without a start: graceful (QUIT) once the role ran"
    return action, f"{verb} of {svc}"


def classify(line: str) -> Action | None:
    """The worst thing `line` does to php-fpm or nginx (the first of its rank), or None."""
    found: Action | None = None
    for pattern in _PATTERNS:
        for match in pattern.finditer(line):
            svc = _service(match)
            if svc is None:
                continue
            action, why = _action(match, line, svc)
            if action == "stop" and re.search(_START.format(svc=re.escape(svc)), line[match.end():]):
                action, why = "restart", f"stop then start of {svc}: a restart"
            if not action:
                continue
            here = Action(service_kind(svc), svc, action, why, match.start("cmd"), match.end("cmd"))
            if found is None or _RANK[action] > _RANK[found.action]:
                found = here
    return found or _other_manager(line) or _nginx_signal(line)


def _nginx_signal(line: str) -> Action | None:
    """`nginx -s SIGNAL`: found, not rewritten (the binary and its -c are the host's own)."""
    match = _NGINX_SIGNAL.search(line)
    if not match:
        return None
    action = _NGINX_SIGNAL_ACTION[match["verb"]]
    why = ("nginx -s stop: SIGTERM, a fast shutdown that cuts requests; use -s quit or -s reload"
           if action == "kill" else f"nginx -s {match['verb']}")
    return Action("nginx", match["svc"], action, why, match.start("cmd"), match.end("cmd"), rewritable=False)


def _other_manager(line: str) -> Action | None:
    """A restart or stop in a form opsctl finds but does not rewrite (see the module's note)."""
    for pattern in _OTHER_MANAGERS:
        match = pattern.search(line)
        if match:
            svc, action = match["svc"], _VERB_ACTION[match["verb"]]
            why = (f"{match['cmd'].split()[0].rsplit('/', 1)[-1]} {match['verb']} of {svc}: "
                   "a form opsctl does not rewrite; make it a graceful reload by hand")
            return Action(service_kind(svc), svc, action, why, match.start("cmd"), match.end("cmd"), rewritable=False)
    return None
