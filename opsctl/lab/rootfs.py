"""Prepare a lab host's own file system layer (the overlay's upper dir) before it boots."""

from __future__ import annotations

import glob
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


def prepare(spec: LabSpec, host: LabHost, php: PhpInstall, controller_pubkey: str) -> None:
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
    context = {"host": host, "php": php, "upstream": UPSTREAM, "webs": spec.by_role("web"), "source": source,
               "multi": multi}
    _write(upper / "etc/opsctl-lab/init.sh", env.get_template("init.sh.j2").render(context), 0o755)
    _write(upper / "etc/opsctl-lab/services.sh", env.get_template("services.sh.j2").render(context), 0o755)
    _write(upper / "etc/opsctl-lab/sshd_config", (ASSETS / "sshd_config").read_text(), 0o600)
    _write(upper / "usr/sbin/policy-rc.d", (ASSETS / "policy-rc.d").read_text(), 0o755)
    if source:
        source_layout(upper, php)
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
        entry = pwd.getpwnam("www-data")
        os.chown(orders, entry.pw_uid, entry.pw_gid)
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
    for path in (php.binary, f"/etc/init.d/{php.service}", f"/etc/php/{php.version}/fpm/php-fpm.conf",
                 f"/etc/php/{php.version}/fpm/pool.d", f"/etc/logrotate.d/{php.service}",
                 f"/usr/lib/systemd/system/{php.service}.service", "/usr/sbin/nginx", "/etc/nginx",
                 "/etc/init.d/nginx", "/etc/logrotate.d/nginx", "/usr/lib/systemd/system/nginx.service"):
        _whiteout(upper, path)


def multi_layout(upper: Path, php: PhpInstall) -> None:
    """Two php-fpm masters and three pools: Debian's package with a second pool (api, on TCP),
    and a panel's second PHP under /www/server/php/74 with its pool inside php-fpm.conf.

    The machine has one PHP version, so the panel's binary is a copy of it: the second master
    is a second prefix, configuration, pid file and init script, not a second PHP release."""
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
