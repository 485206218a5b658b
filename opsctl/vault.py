"""Ansible Vault secrets, taken the way the Ansible CLI takes them and handed on to the
ansible-playbook that opsctl starts.

--vault-id (repeatable, LABEL@FILE, LABEL@prompt), --vault-password-file and --ask-vault-pass
join what ansible.cfg and the environment configure (vault_identity_list,
vault_password_file, ANSIBLE_VAULT_IDENTITY_LIST, ANSIBLE_VAULT_PASSWORD_FILE); ansible-core's
own CLI code reads the files, runs the scripts and prompts. ansible-playbook gets the same
options (paths made absolute) and reads the same configuration; a password typed at a prompt is
answered to its prompt through ansible-runner, so it is never written to a file.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from opsctl.errors import OpsctlError
from opsctl.paths import inventory_files
from opsctl.redact import first_line

_PROMPTS = ("prompt", "prompt_ask_vault_pass")
HOW = "--vault-password-file FILE, --vault-id LABEL@FILE or --ask-vault-pass"
_HEADER = b"$ANSIBLE_VAULT"


@dataclass(frozen=True)
class VaultOptions:
    ids: tuple[str, ...] = ()              # --vault-id, as given
    password_files: tuple[str, ...] = ()   # --vault-password-file, as given
    ask: bool = False                      # --ask-vault-pass
    # Filled by resolve(): (vault id, secret) pairs, and (prompt text, secret) for the secrets
    # typed at a prompt. Plain data: it crosses into the forked inventory parser.
    secrets: tuple[tuple[str, bytes], ...] | None = field(default=None, repr=False)
    answers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    @property
    def given(self) -> bool:
        return bool(self.ids or self.password_files or self.ask)


def _split(vault_id: str) -> tuple[str | None, str]:
    """LABEL@SOURCE -> (LABEL, SOURCE); SOURCE alone -> (None, SOURCE), as ansible.cli does."""
    from ansible.cli import CLI

    return CLI.split_vault_id(vault_id)


def _absolute(source: str) -> str:
    return source if source in _PROMPTS else os.path.abspath(os.path.expanduser(source))


def _needs_prompt(vault_ids: list[str], ask: bool) -> bool:
    return ask or any(_split(v)[1] in _PROMPTS for v in vault_ids)


def resolve(opts: VaultOptions) -> VaultOptions:
    """OPTS with every configured vault secret read (files, scripts, prompts), once."""
    if opts.secrets is not None:
        return opts
    from ansible import constants as C

    configured = list(C.DEFAULT_VAULT_IDENTITY_LIST or [])
    if not (opts.given or configured or C.DEFAULT_VAULT_PASSWORD_FILE):
        return replace(opts, secrets=())
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import PromptVaultSecret

    ids = configured + [_joined(*_split(v)) for v in opts.ids]
    if _needs_prompt(ids, opts.ask) and not sys.stdin.isatty():
        raise OpsctlError("a vault password prompt needs a terminal (--ask-vault-pass, or a vault id "
                          "LABEL@prompt): give --vault-password-file FILE or --vault-id LABEL@FILE instead")
    warnings = io.StringIO()
    try:
        # Ansible warns about each unreadable file before it raises; the one-line error says it.
        with contextlib.redirect_stderr(warnings):
            found = CLI.setup_vault_secrets(DataLoader(), vault_ids=ids,
                                            vault_password_files=[_absolute(f) for f in opts.password_files],
                                            ask_vault_pass=opts.ask, auto_prompt=False,
                                            initialize_context=False)
    except AnsibleError as exc:
        raise OpsctlError(f"vault: {first_line(exc)}") from None
    answers = tuple((fmt % {"vault_id": secret.vault_id}, secret.bytes) for _, secret in found
                    if isinstance(secret, PromptVaultSecret) for fmt in secret.prompt_formats)
    return replace(opts, secrets=tuple((vault_id, secret.bytes) for vault_id, secret in found), answers=answers)


def _joined(label: str | None, source: str) -> str:
    return f"{label}@{_absolute(source)}" if label else _absolute(source)


def install(loader, opts: VaultOptions) -> list:
    """Give Ansible's DataLoader (whole vaulted files) and its vault context (inline !vault
    values, decrypted when read) the resolved secrets; returns them as Ansible's pairs."""
    from ansible.parsing.vault import VaultSecret, VaultSecretsContext

    secrets = [(vault_id, VaultSecret(value)) for vault_id, value in resolve(opts).secrets or ()]
    loader.set_vault_secrets(secrets)
    context = VaultSecretsContext.current(optional=True)
    if context is None:
        VaultSecretsContext.initialize(VaultSecretsContext(secrets))
    else:   # Ansible's context is set once per process; a second load (tests) brings its own
        context.secrets = secrets
    return secrets


def undecryptable(source: Path, secrets: list) -> Path | None:
    """The first vault-encrypted file of an inventory that SECRETS (Ansible's pairs) cannot open."""
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import VaultLib

    for path in inventory_files(source):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if data.startswith(_HEADER):
            try:
                VaultLib(secrets).decrypt(data)
            except AnsibleError:
                return path
    return None


def playbook_cmdline(opts: VaultOptions) -> list[str]:
    """The command-line vault options for ansible-playbook (which reads ansible.cfg itself)."""
    args = [f"--vault-id={shlex.quote(_joined(*_split(v)))}" for v in opts.ids]
    args += [f"--vault-password-file={shlex.quote(_absolute(f))}" for f in opts.password_files]
    return args + (["--ask-vault-pass"] if opts.ask else [])


def playbook_answers(opts: VaultOptions) -> dict[str, str]:
    """ansible-runner's prompt -> answer map for the passwords typed at opsctl's prompts."""
    return {re.escape(prompt.strip()) + r"\s*?$": secret.decode(errors="replace")
            for prompt, secret in opts.answers}
