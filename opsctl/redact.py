"""What counts as a secret, once for opsctl: variable names that hold one, and error text that
may quote one. Secrets never reach opsctl's output, caches or run artifacts."""

from __future__ import annotations

import re

# ansible_password, ansible_ssh_pass, ansible_become_pass, *_token, *_secret, *_api_key, ...
_SECRET_WORD = re.compile(r"passw(or)?d|passphrase|secret|token|credential|api_?key|_pass$|^pass$", re.I)
# ...but a variable that names where a secret is kept holds a path: ANSIBLE_VAULT_PASSWORD_FILE.
_A_PLACE = re.compile(r"_(file|path|dir|list)$", re.I)
_NAME = re.compile(r"[A-Za-z_][\w.-]*")
HIDDEN = "…"


def is_secret_name(name: str) -> bool:
    """True for a variable (inventory or environment) whose value is a secret."""
    return bool(_SECRET_WORD.search(name)) and not _A_PLACE.search(name)


def _shape(fragment: str, keep_first: bool) -> str:
    """Quoted inventory text as its shape: `w1 ansible_host=… ansible_password=…`."""
    words: list[str] = []
    for i, word in enumerate(fragment.split()):
        key, sep, _ = word.partition("=")
        if sep and _NAME.fullmatch(key):
            words.append(f"{key}={HIDDEN}")
        elif i == 0 and keep_first:
            words.append(word)
        elif not words or words[-1] != HIDDEN:
            words.append(HIDDEN)
    return " ".join(words)


# Where Ansible's inventory parsers quote the line they could not parse (ini.py's messages).
_QUOTED_LINE = re.compile(r"(host definition ')(.*)(': )")
_QUOTED_ENTRY = re.compile(r"(section entry: ')(.*?)(')")
_GOT = re.compile(r"(got: )(.+)$")


def hide_values(message: str) -> str:
    """A parser's error message without the inventory text it quotes (an INI line can hold a
    password); the host name and the variable names stay, so the line can still be found."""
    message = _QUOTED_LINE.sub(lambda m: m[1] + _shape(m[2], keep_first=True) + m[3], message)
    message = _QUOTED_ENTRY.sub(lambda m: m[1] + _shape(m[2], keep_first=False) + m[3], message)
    return _GOT.sub(lambda m: m[1] + _shape(m[2], keep_first=False), message)


def first_line(exc: BaseException) -> str:
    """An error from Ansible as one line for a person, without the inventory text it quotes."""
    return hide_values((str(exc).strip().splitlines() or [type(exc).__name__])[0])
