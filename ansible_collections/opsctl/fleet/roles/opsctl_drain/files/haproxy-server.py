# managed by opsctl (role opsctl_drain, haproxy driver): drain one backend server of this
# HAProxy balancer through its runtime API, or put it back, and prove the new state from HAProxy.
#
#   drained: `set server BACKEND/SERVER state drain` (no new requests), then wait until HAProxy
#            counts no session and no queued request on it (scur + qcur in `show stat`), polling
#            every 0.2 s for at most TIMEOUT seconds;
#   serving: `set server BACKEND/SERVER state ready`.
# The server is SERVER when given, else every server of BACKEND whose address (`show servers
# state`) is ADDRESS (a name is resolved here, on the balancer) and whose port is PORT. The admin
# socket is SOCKET when given, else the `stats socket` of the configuration the running HAProxy
# was started with (its -f files and directories), else CONFIG, else /etc/haproxy/haproxy.cfg.
# Standard library only (python3 is on every host Ansible manages; socat is not).
# Output: one line per server and step, then `changed` or `unchanged`.
# Exit: 0 done, 2 bad input or nothing to act on (nothing changed), 3 the runtime API refused,
#       4 sessions still open after TIMEOUT (the server stays drained), 5 the state did not take.
# Environment: BACKEND SERVER ADDRESS PORT STATE=drained|serving TIMEOUT SOCKET CONFIG
import glob
import os
import re
import socket
import sys
import time

# srv_admin_state bits (HAProxy's server-t.h): forced maintenance, forced drain, inherited drain.
FMAINT, FDRAIN, DRAIN = 0x01, 0x08, 0x18
NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
API_TIMEOUT_S = 5.0


def fail(code, message):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def config_files():
    """The configuration the running HAProxy read: its -f arguments (a directory: its *.cfg in
    order, as HAProxy reads it), else CONFIG, else Debian's path."""
    given = os.environ.get("CONFIG", "")
    paths = [given] if given else []
    if not paths:
        for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    args = handle.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if os.path.basename(args[0]) == "haproxy":
                paths = [args[k + 1] for k, arg in enumerate(args[:-1]) if arg == "-f"]
                if paths:
                    break
    files = []
    for path in paths or ["/etc/haproxy/haproxy.cfg"]:
        files += sorted(glob.glob(os.path.join(path, "*.cfg"))) if os.path.isdir(path) else [path]
    return files


def admin_socket():
    """SOCKET, else the configuration's `stats socket` with `level admin` (else the first)."""
    if os.environ.get("SOCKET"):
        return os.environ["SOCKET"]
    found = []
    for path in config_files():
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    words = line.split("#", 1)[0].split()
                    if words[:2] == ["stats", "socket"] and len(words) > 2:
                        found.append((words[2], "level" not in words or "admin" in words))
        except OSError as exc:
            fail(2, f"cannot read the HAProxy configuration {path}: {exc.strerror}, nothing changed")
    admin = [where for where, is_admin in found if is_admin]
    if not admin:
        fail(2, f"no `stats socket ... level admin` in {', '.join(config_files())}: give the balancer's "
                "socket in the inventory (opsctl_balancers: socket), nothing changed")
    return admin[0]


def api(where, command):
    """One runtime API command, its whole answer (the socket closes after one command)."""
    spec = where.split("@", 1)[1] if where.startswith(("unix@", "ipv4@", "ipv6@")) else where
    host, _sep, port = spec.rpartition(":")
    if not spec.startswith("/") and not (host and port.isdigit()):
        fail(2, f"admin socket {where}: neither a path nor ADDRESS:PORT, nothing changed")
    if spec.startswith("/"):
        conn, target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), spec
    else:
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        conn, target = socket.socket(family, socket.SOCK_STREAM), (host.strip("[]"), int(port))
    conn.settimeout(API_TIMEOUT_S)
    try:
        conn.connect(target)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(chunk)
    except OSError as exc:
        fail(3, f"HAProxy's runtime API at {where} did not answer `{command}`: {exc}")
    finally:
        conn.close()


def servers(where, backend):
    """{name: (address, port, admin_state)} of BACKEND, from `show servers state`."""
    text = api(where, f"show servers state {backend}")
    if not text.startswith("1\n"):
        fail(2, f"backend {backend}: {text.strip() or 'no answer'} (show servers state), nothing changed")
    out = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if line.startswith("#") or len(cols) < 19:
            continue
        out[cols[3]] = (cols[4], cols[18], int(cols[6]))
    return out


def addresses(name):
    try:
        return {info[4][0] for info in socket.getaddrinfo(name.strip("[]"), None)}
    except OSError as exc:
        fail(2, f"backend address {name} does not resolve on this balancer: {exc}, nothing changed")


def stat_rows(where, backend):
    """{server: row} of BACKEND from `show stat` (CSV with a `# ` header)."""
    lines = api(where, "show stat").splitlines()
    if not lines or not lines[0].startswith("# "):
        fail(3, f"show stat: {' '.join(lines)[:200] or 'no answer'}")
    header = lines[0][2:].split(",")
    rows = (dict(zip(header, line.split(","))) for line in lines[1:] if line)
    return {row["svname"]: row for row in rows if row.get("pxname") == backend}


def pick(where, backend, server, address, port):
    known = servers(where, backend)
    if server:
        if server not in known:
            fail(2, f"no server {server} in backend {backend} (servers: {', '.join(known) or 'none'}), nothing changed")
        return {server: known[server]}
    wanted = addresses(address)
    chosen = {name: s for name, s in known.items() if s[0] in wanted and s[1] == port}
    if not chosen:
        listed = ", ".join(f"{name} {s[0]}:{s[1]}" for name, s in known.items()) or "none"
        fail(2, f"no server at {address}:{port} in backend {backend} ({listed}), nothing changed")
    return chosen


def set_state(where, backend, name, state):
    answer = api(where, f"set server {backend}/{name} state {state}").strip()
    if answer:
        fail(3, f"set server {backend}/{name} state {state}: {answer}")


def wait_idle(where, backend, names, timeout):
    started = time.monotonic()
    busiest = 0
    while True:
        rows = stat_rows(where, backend)
        busy = {n: int(rows[n]["scur"] or 0) + int(rows[n]["qcur"] or 0) for n in names if n in rows}
        busiest = max([busiest, *busy.values()])
        if not any(busy.values()):
            elapsed = int((time.monotonic() - started) * 1000)
            for n in names:
                print(f"{backend}/{n}: status {rows[n]['status']}, scur 0 after {elapsed} ms "
                      f"(at most {busiest} sessions while draining)")
            return
        if time.monotonic() - started > timeout:
            fail(4, f"sessions still open on {backend} after {timeout}s (scur + qcur): "
                    + ", ".join(f"{n} {c}" for n, c in busy.items()))
        time.sleep(0.2)


def main():
    env = os.environ
    backend, server, address = env.get("BACKEND", ""), env.get("SERVER", ""), env.get("ADDRESS", "")
    port, state, timeout = env.get("PORT", ""), env.get("STATE", ""), env.get("TIMEOUT", "")
    for label, value in (("backend", backend), ("server", server or "x"), ("backend address", address)):
        if not NAME.match(value.strip("[]")):
            fail(2, f"invalid {label} '{value}', nothing changed")
    if not port.isdigit() or not timeout.isdigit() or state not in ("drained", "serving"):
        fail(2, f"invalid port '{port}', timeout '{timeout}' or state '{state}' (drained or serving), nothing changed")
    where = admin_socket()
    chosen = pick(where, backend, server, address, port)
    changed = False
    for name, (_addr, _port, admin) in chosen.items():
        if state == "drained" and not admin & FDRAIN:
            set_state(where, backend, name, "drain")
            changed = True
        elif state == "serving" and admin & (FMAINT | FDRAIN):
            set_state(where, backend, name, "ready")
            changed = True
    if state == "drained":
        wait_idle(where, backend, list(chosen), int(timeout))
    now = servers(where, backend)
    rows = stat_rows(where, backend)
    for name in chosen:
        admin = now[name][2]
        if (state == "drained") != bool(admin & DRAIN) or (state == "serving" and admin & FMAINT):
            fail(5, f"{backend}/{name} is {rows[name]['status']} (admin state {admin}) after the change, expected {state}")
        if state == "serving":
            print(f"{backend}/{name}: status {rows[name]['status']}, weight {rows[name]['weight']}")
    print("changed" if changed else "unchanged")


main()
