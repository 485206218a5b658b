"""Prepare a lab host's own file system layer (the overlay's upper dir) before it boots."""

from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from opsctl.lab.spec import UPSTREAM, LabHost, LabSpec

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class PhpInstall:
    version: str   # "8.2"
    binary: str    # "/usr/sbin/php-fpm8.2"
    service: str   # "php8.2-fpm": init script, pid file and socket name on Debian


def detect_php_fpm() -> PhpInstall | None:
    """The newest php-fpm the machine has, as Debian names it."""
    found = []
    for binary in glob.glob("/usr/sbin/php-fpm*"):
        match = re.fullmatch(r"/usr/sbin/php-fpm(\d+\.\d+)", binary)
        if match:
            found.append(PhpInstall(match[1], binary, f"php{match[1]}-fpm"))
    return max(found, key=lambda p: tuple(int(x) for x in p.version.split(".")), default=None)


def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(str(ASSETS)), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def _write(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def host_public_key(spec: LabSpec, host: LabHost) -> str:
    """The host's public key, generated once per host and kept across `up`s."""
    key = spec.host_dir(host) / "upper/etc/ssh/opsctl_lab_host_ed25519_key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}@opsctl-lab",
                        "-f", str(key)], check=True, capture_output=True)
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def _fresh_root_home(home: Path) -> None:
    """Give the host root's home of a stock install, not the controller's.

    An opaque upper dir hides the machine's /root: its shell startup files (a pyenv init, say)
    would run on every SSH command the lab host serves and make it unlike any real web host.
    """
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    os.setxattr(home, "trusted.overlay.opaque", b"y")
    for name in (".bashrc", ".profile"):
        skel = Path("/etc/skel") / name
        if skel.is_file() and not (home / name).exists():
            shutil.copyfile(skel, home / name)


def _sshd_config(host: LabHost) -> str:
    """The lab's sshd_config; behind a bastion, sshd listens on the management network only."""
    text = (ASSETS / "sshd_config").read_text()
    if not host.ssh_address:
        return text
    # ops logs in with a password (ansible_password), as some fleets still do; no one else may.
    return (text.replace("ListenAddress 0.0.0.0", f"ListenAddress {host.ssh_address}")
            + f"Match User {OPS[0]}\n    PasswordAuthentication yes\n")


def prepare(spec: LabSpec, host: LabHost, php: PhpInstall, controller_pubkey: str, password: str = "") -> None:
    base = spec.host_dir(host)
    upper = base / "upper"
    for sub in ("upper", "work", "merged"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    _fresh_root_home(upper / "root")
    (upper / "root/.ssh").mkdir(parents=True, exist_ok=True)
    (upper / "root/.ssh").chmod(0o700)
    _write(upper / "root/.ssh/authorized_keys", controller_pubkey.strip() + "\n", 0o600)
    host_public_key(spec, host)
    env = _templates()
    source = host.role == "web" and spec.flavor == "source"
    multi = host.role == "web" and spec.flavor == "multi"
    rhel = host.role == "web" and spec.flavor == "rhel"
    haproxy = host.role == "lb" and spec.balancer == "haproxy"
    context = {"host": host, "php": php, "upstream": UPSTREAM, "webs": spec.by_role("web"), "source": source,
               "multi": multi, "rhel": rhel, "multi_debian": MULTI_DEBIAN, "haproxy": haproxy}
    _write(upper / "etc/opsctl-lab/init.sh", env.get_template("init.sh.j2").render(context), 0o755)
    _write(upper / "etc/opsctl-lab/services.sh", env.get_template("services.sh.j2").render(context), 0o755)
    _write(upper / "etc/opsctl-lab/sshd_config", _sshd_config(host), 0o600)
    # A host resolves its own name, as an installed one does (sudo asks for it).
    _write(upper / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n")
    _write(upper / "usr/sbin/policy-rc.d", (ASSETS / "policy-rc.d").read_text(), 0o755)
    if host.role == "bastion":
        return
    if spec.bastion and host.name == "web1":
        add_sudo_user(upper, DEPLOY, password, controller_pubkey)
        add_sudo_user(upper, OPS, password)
    if source:
        source_layout(upper, php)
    elif rhel:
        rhel_layout(upper, php)
    elif haproxy:
        _write(upper / "etc/haproxy/haproxy.cfg", env.get_template("lb-haproxy.cfg.j2").render(
            context, stock=Path(HAPROXY_CFG).read_text()))
    else:
        site = "web-site.conf.j2" if host.role == "web" else "lb-site.conf.j2"
        _write(upper / "etc/nginx/sites-available/default", env.get_template(site).render(context))
    if multi:
        multi_layout(upper, php)
    if host.role == "web":
        for page in sorted((ASSETS / "app").iterdir()):
            _write(upper / "var/www/opsctl-lab" / page.name, page.read_text())
        orders = upper / "var/lib/opsctl-lab"
        orders.mkdir(parents=True, exist_ok=True)
        uid, gid = RHEL_USERS["apache"] if rhel else pwd.getpwnam("www-data")[2:4]
        os.chown(orders, uid, gid)
        orders.chmod(0o750)


def _whiteout(upper: Path, path: str) -> None:
    """Hide PATH of the machine's own file system inside the host (an overlayfs whiteout)."""
    target = upper / path.lstrip("/")
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def source_layout(upper: Path, php: PhpInstall) -> None:
    """php-fpm and nginx as source builds lay them out, with Debian's package files removed.

    The binaries are the machine's own, copied under /usr/local; the package's binaries, init
    scripts, units, configuration and rotation rules are whited out, so nothing of the Debian
    layout remains for discovery to lean on. php.ini stays where the binary was built to read it.
    """
    source = ASSETS / "source"
    php_prefix, nginx_prefix = upper / "usr/local/php", upper / "usr/local/nginx"
    for sub in ("sbin", "etc/php-fpm.d", "var/run", "var/log"):
        (php_prefix / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(php.binary, php_prefix / "sbin/php-fpm")
    _write(php_prefix / "etc/php-fpm.conf", (source / "php-fpm.conf").read_text())
    _write(php_prefix / "etc/php-fpm.d/www.conf", (source / "www.conf").read_text())
    _write(upper / "etc/init.d/php-fpm", (source / "php-fpm.init").read_text(), 0o755)
    for sub in ("sbin", "conf/vhost", "logs"):
        (nginx_prefix / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/sbin/nginx", nginx_prefix / "sbin/nginx")
    for name in ("mime.types", "fastcgi.conf", "fastcgi_params"):
        shutil.copyfile(Path("/etc/nginx") / name, nginx_prefix / "conf" / name)
    _write(nginx_prefix / "conf/nginx.conf", (source / "nginx.conf").read_text())
    _write(nginx_prefix / "conf/vhost/opsctl-lab.conf", (source / "vhost.conf").read_text())
    _whiteout_debian_packages(upper, php)


# Debian's haproxy package's own configuration: the lab's HAProxy balancer starts from it.
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"


# The users RHEL's httpd and nginx packages create (apache has the fixed uid 48).
RHEL_USERS = {"apache": (48, 48), "nginx": (988, 988)}
REMI = "/opt/remi/php74/root"


def _opaque_dir(upper: Path, path: str) -> Path:
    """A directory of the host that shows nothing of the machine's own at PATH."""
    target = upper / path.lstrip("/")
    if target.exists() and not target.is_dir():
        target.unlink()
    target.mkdir(parents=True, exist_ok=True)
    os.setxattr(target, "trusted.overlay.opaque", b"y")
    return target


def _host_file(upper: Path, path: str) -> str:
    """A file as the host sees it so far: its own copy, else the machine's."""
    own = upper / path.lstrip("/")
    return (own if own.exists() else Path(path)).read_text()


def _add_users(upper: Path, users: dict[str, tuple[int, int]], home: str = "/nonexistent",
               shell: str = "/usr/sbin/nologin") -> None:
    """The host's passwd and group, plus USERS (no password), inside the host."""
    passwd, group = _host_file(upper, "/etc/passwd"), _host_file(upper, "/etc/group")
    for name, (uid, gid) in users.items():
        if not re.search(rf"^{name}:", passwd, re.M):
            passwd += f"{name}:x:{uid}:{gid}:{name}:{home.format(name=name)}:{shell}\n"
        if not re.search(rf"^{name}:", group, re.M):
            group += f"{name}:x:{gid}:\n"
    _write(upper / "etc/passwd", passwd)
    _write(upper / "etc/group", group)


# The non-root users of a lab with a bastion, on web1: deploy logs in by key, ops by password
# (sshd allows passwords for ops alone); both become root with sudo and the lab's password.
DEPLOY = ("deploy", 2000)
OPS = ("ops", 2001)


def add_sudo_user(upper: Path, user: tuple[str, int], password: str, controller_pubkey: str = "") -> None:
    """USER inside the host: a home (with the controller's key when given), the password, and a
    sudoers rule that asks for it."""
    name, uid = user
    _add_users(upper, {name: (uid, uid)}, home="/home/{name}", shell="/bin/bash")
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True,
                            text=True, check=True).stdout.strip()
    shadow = _host_file(upper, "/etc/shadow")
    if not re.search(rf"^{name}:", shadow, re.M):
        shadow += f"{name}:{hashed}:20000:0:99999:7:::\n"
    _write(upper / "etc/shadow", shadow, 0o640)
    os.chown(upper / "etc/shadow", 0, grp.getgrnam("shadow").gr_gid)
    home = upper / "home" / name
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    if controller_pubkey:
        _write(home / ".ssh/authorized_keys", controller_pubkey.strip() + "\n", 0o600)
    for path in (home, home / ".ssh", *(home / ".ssh").iterdir()):
        os.chown(path, uid, uid)
    home.chmod(0o700)
    (home / ".ssh").chmod(0o700)
    _write(upper / f"etc/sudoers.d/opsctl-lab-{name}", f"{name} ALL=(ALL:ALL) ALL\n", 0o440)


def _whiteout_debian_packages(upper: Path, php: PhpInstall, replaced: tuple[str, ...] = ()) -> None:
    """Hide Debian's php-fpm and nginx package files inside the host: their binaries, init
    scripts, units, configuration and rotation rules (php.ini stays where the binary reads it).
    REPLACED: paths the layout writes itself, so nothing of Debian's shows through them anyway."""
    for path in (php.binary, f"/etc/init.d/{php.service}", f"/etc/php/{php.version}/fpm/php-fpm.conf",
                 f"/etc/php/{php.version}/fpm/pool.d", f"/etc/logrotate.d/{php.service}",
                 f"/usr/lib/systemd/system/{php.service}.service", "/usr/sbin/nginx", "/etc/nginx",
                 "/etc/init.d/nginx", "/etc/logrotate.d/nginx", "/usr/lib/systemd/system/nginx.service"):
        if path not in replaced:
            _whiteout(upper, path)


def rhel_layout(upper: Path, php: PhpInstall) -> None:
    """php-fpm and nginx as the RHEL family lays them out, with Remi's PHP 7.4 collection beside.

    RHEL: /usr/sbin/php-fpm, /etc/php-fpm.conf and /etc/php-fpm.d/, service php-fpm from a
    systemd unit (no KillSignal: SIGTERM), pools run as apache, nginx as nginx, its servers in
    nginx.conf with conf.d/*.conf at http level and default.d/*.conf inside the server. Remi:
    /opt/remi/php74/root/usr/sbin/php-fpm, /etc/opt/remi/php74, /var/opt/remi/php74, unit
    php74-php-fpm. No init scripts at all. The binaries are the machine's own PHP and nginx copied
    into place (so "php74" is the machine's PHP under Remi's paths; nginx is at /usr/sbin/nginx on
    both families); Debian's files are hidden.
    """
    rhel = ASSETS / "rhel"
    _whiteout_debian_packages(upper, php, replaced=("/usr/sbin/nginx", "/etc/nginx", "/etc/logrotate.d/nginx",
                                                    "/usr/lib/systemd/system/nginx.service"))
    _add_users(upper, RHEL_USERS)
    for target in ("usr/sbin/php-fpm", REMI.lstrip("/") + "/usr/sbin/php-fpm"):
        (upper / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(php.binary, upper / target)
    nginx = _opaque_dir(upper, "/etc/nginx")
    for name in ("mime.types", "fastcgi.conf", "fastcgi_params"):
        shutil.copyfile(Path("/etc/nginx") / name, nginx / name)
    files = {"etc/php-fpm.conf": "php-fpm.conf", "etc/php-fpm.d/www.conf": "www.conf",
             "etc/opt/remi/php74/php-fpm.conf": "remi-php-fpm.conf",
             "etc/opt/remi/php74/php-fpm.d/www.conf": "remi-www.conf",
             "usr/lib/systemd/system/php-fpm.service": "php-fpm.service",
             "usr/lib/systemd/system/php74-php-fpm.service": "remi-php-fpm.service",
             "usr/lib/systemd/system/nginx.service": "nginx.service",
             "etc/nginx/nginx.conf": "nginx.conf", "etc/nginx/conf.d/php-fpm.conf": "php-fpm.nginx.conf",
             "etc/nginx/default.d/php.conf": "php.nginx.conf", "etc/nginx/default.d/php74.conf": "php74.nginx.conf",
             "etc/logrotate.d/nginx": "nginx.logrotate"}
    for target, asset in files.items():
        _write(upper / target, (rhel / asset).read_text())
    rule = (rhel / "php-fpm.logrotate").read_text()
    for service, logdir, pidfile in (("php-fpm", "/var/log/php-fpm", "/run/php-fpm/php-fpm.pid"),
                                     ("php74-php-fpm", "/var/opt/remi/php74/log/php-fpm",
                                      "/var/opt/remi/php74/run/php-fpm/php-fpm.pid")):
        text = rule.replace("@SERVICE@", service).replace("@LOGDIR@", logdir).replace("@PIDFILE@", pidfile)
        _write(upper / f"etc/logrotate.d/{service}", text)
    apache = RHEL_USERS["apache"]
    for path, owner in (("var/log/php-fpm", (0, apache[1])), ("var/opt/remi/php74/log/php-fpm", (0, apache[1])),
                        ("var/opt/remi/php74/run/php-fpm", (0, 0)), ("var/lib/php/session", (0, apache[1]))):
        (upper / path).mkdir(parents=True, exist_ok=True)
        os.chown(upper / path, *owner)
        (upper / path).chmod(0o770 if owner[1] else 0o755)


# The second Debian package version of a multi host (php7.4-fpm beside the machine's own).
MULTI_DEBIAN = "7.4"


def _debian_version(upper: Path, php: PhpInstall, version: str) -> None:
    """Debian's package layout of another PHP version beside the machine's (as ondrej's packages
    put php7.4-fpm beside php8.2-fpm): the machine's package files with the version replaced,
    the binary a copy of its own."""
    shutil.copy2(php.binary, upper / f"usr/sbin/php-fpm{version}")
    old = php.version
    for path, mode in ((f"/etc/init.d/php{old}-fpm", 0o755), (f"/etc/php/{old}/fpm/php-fpm.conf", 0o644),
                       (f"/etc/php/{old}/fpm/pool.d/www.conf", 0o644), (f"/etc/logrotate.d/php{old}-fpm", 0o644),
                       (f"/usr/lib/tmpfiles.d/php{old}-fpm.conf", 0o644),
                       (f"/usr/lib/php/php{old}-fpm-reopenlogs", 0o755)):
        _write(upper / path.replace(old, version).lstrip("/"), Path(path).read_text().replace(old, version), mode)


def multi_layout(upper: Path, php: PhpInstall) -> None:
    """Three php-fpm masters and four pools: Debian's package with a second pool (api, on TCP),
    Debian's package of a second PHP version (php7.4-fpm, its www pool), and a panel's PHP under
    /www/server/php/74 with its pool inside php-fpm.conf.

    The machine has one PHP version, so the other binaries are copies of it: each further master
    is a further prefix or package name, configuration, pid file and init script, not a further
    PHP release."""
    _debian_version(upper, php, MULTI_DEBIAN)
    multi, prefix = ASSETS / "multi", upper / "www/server/php/74"
    _write(upper / f"etc/php/{php.version}/fpm/pool.d/api.conf", (multi / "api.conf").read_text())
    for sub in ("sbin", "etc", "var/run", "var/log"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(php.binary, prefix / "sbin/php-fpm")
    _write(prefix / "etc/php-fpm.conf", (multi / "php-fpm.conf").read_text())
    init = (ASSETS / "source/php-fpm.init").read_text().replace("/usr/local/php", "/www/server/php/74")
    _write(upper / "etc/init.d/php-fpm-74", init.replace("Provides:          php-fpm", "Provides:          php-fpm-74"),
           0o755)


def install_boot_script(spec: LabSpec) -> Path:
    target = spec.path / "boot.sh"
    shutil.copyfile(ASSETS / "boot.sh", target)
    target.chmod(0o755)
    return target
