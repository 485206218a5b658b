#!/usr/bin/python
# -*- coding: utf-8 -*-
# managed by opsctl: part of the opsctl.fleet collection.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Why a module: a converged harden is mostly reading. One stat, slurp or find per file costs one
# Python start on the host each; this reads every file a role manages in one (docs/architecture.md,
# "Converged runs").

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: file_state
short_description: Read the state of many files, globs and dpkg diversions in one run
version_added: 0.2.0
description:
  - Reads, in one module run, what a role needs to decide whether it must write anything.
  - For each path in O(paths) it returns whether it exists, its type, SHA-1 checksum, owner,
    group, mode and the target of a symbolic link.
  - For each path in O(read) it also returns the content, base64 encoded.
  - Never changes anything; safe in check mode.
author:
  - opsctl maintainers (@opsctl)
options:
  paths:
    description:
      - Paths to stat. A symbolic link is reported as a link, with its resolved target, and the
        target is reported too, under its own path.
    type: list
    elements: path
    default: []
  read:
    description:
      - Paths whose content to return (base64, key C(content)). They are stat'ed too.
      - A file larger than O(max_bytes) fails the module.
    type: list
    elements: path
    default: []
  globs:
    description: Shell patterns to expand; each returns its sorted matches.
    type: list
    elements: str
    default: []
  read_globs:
    description:
      - Shell patterns whose matches are stat'ed like O(paths); a match that is a regular file (or
        a link to one) is also read like O(read). Each pattern's sorted matches are in RV(globs).
      - For files whose names are only known on the host, such as one per installed version.
    type: list
    elements: str
    default: []
  search:
    description:
      - Files and directories to search, like C(grep -rlIs). A directory is searched recursively
        (symbolic links found inside are not followed, as with C(grep -r)), a path that does not
        exist is skipped; a binary file (one with a NUL byte or not valid UTF-8, as C(grep -I) sees
        it in a UTF-8 locale) and an unreadable one never match.
      - Each regular file whose content matches one of O(search_patterns) is listed in RV(found)
        and returned in RV(files) with its content, as for O(read).
    type: list
    elements: path
    default: []
  search_patterns:
    description: Python regular expressions for O(search); a file matches if any matches somewhere.
    type: list
    elements: str
    default: []
  search_exclude:
    description: Shell patterns of file names (the last component) that O(search) skips, like C(grep --exclude).
    type: list
    elements: str
    default: []
  stat_globs:
    description:
      - Also stat every match of O(globs), as for O(paths), into RV(files).
      - For files whose names are only known from a glob (C(/etc/logrotate.d/php*-fpm)), in the same run.
    type: bool
    default: false
  backups_of:
    description:
      - Paths whose earlier Ansible backups (C(NAME.PID.YYYY-MM-DD@HH:MM:SS~)) to list, found
        in the same directory and, for a link, next to the file it points to.
      - An entry with shell pattern characters stands for every path it matches (C(/etc/php/*/fpm/php-fpm.conf)).
    type: list
    elements: path
    default: []
  diversions:
    description: Also return dpkg's local diversions (from C(/var/lib/dpkg/diversions)).
    type: bool
    default: false
  max_bytes:
    description: The largest file O(read) returns.
    type: int
    default: 4194304
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - A path that cannot be read because of permissions fails the module, naming the path.
'''

EXAMPLES = r'''
- name: Read the files this role writes
  opsctl.fleet.file_state:
    paths: [/etc/nginx/conf.d/opsctl-tuning.conf]
    read: [/etc/nginx/nginx.conf]
    globs: [/usr/sbin/php-fpm*]
    backups_of: [/etc/nginx/nginx.conf]
  register: state

- name: Read every php-fpm.conf and the cron files that mention php-fpm
  opsctl.fleet.file_state:
    read_globs: [/etc/php/*/fpm/php-fpm.conf]
    search: [/etc/crontab, /etc/cron.d]
    search_patterns: [fpm]
    search_exclude: ["*~", "*.dpkg-*"]
  register: state
'''

RETURN = r'''
files:
  description: Per path in O(paths) and O(read) (and every glob match with O(stat_globs)), its state.
  returned: always
  type: dict
  sample:
    /etc/nginx/nginx.conf:
      exists: true
      type: file
      checksum: 0f0e7a...
      owner: root
      group: root
      mode: "0644"
      lnk_source: ""
      content: dXNlciB3d3ctZGF0YTs=
globs:
  description: Per pattern in O(globs) and O(read_globs), its sorted matches.
  returned: always
  type: dict
  sample: {"/usr/sbin/php-fpm*": ["/usr/sbin/php-fpm8.2"]}
found:
  description: The files O(search) found, in the order of O(search), sorted within each directory.
  returned: always
  type: list
  elements: str
  sample: ["/etc/cron.d/php"]
backups:
  description: Per path in O(backups_of) (each match of a pattern), the earlier backups next to it, sorted.
  returned: always
  type: dict
  sample: {"/etc/nginx/nginx.conf": ["/etc/nginx/nginx.conf.123.2026-01-01@00:00:00~"]}
diversions:
  description: Diverted path to the path it was diverted to; empty unless O(diversions).
  returned: always
  type: dict
  sample: {"/etc/init.d/nginx": "/var/backups/opsctl/init.d/nginx"}
'''

import base64
import fnmatch
import glob
import grp
import hashlib
import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule

_BACKUP = r'\.[0-9]+\.[0-9]{4}-[0-9]{2}-[0-9]{2}@[0-9]{2}:[0-9]{2}:[0-9]{2}~$'
_TYPES = ((stat.S_ISLNK, 'link'), (stat.S_ISREG, 'file'), (stat.S_ISDIR, 'directory'))


def _name(table, ident):
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)


def _checksum(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(65536), b''):
            digest.update(block)
    return digest.hexdigest()


def _state(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {'exists': False, 'type': 'absent', 'checksum': '', 'owner': '', 'group': '',
                'mode': '', 'lnk_source': ''}
    kind = next((name for test, name in _TYPES if test(info.st_mode)), 'other')
    target = os.path.realpath(path) if kind == 'link' else ''
    real = target or path
    regular = os.path.isfile(real)
    return {'exists': True, 'type': kind, 'checksum': _checksum(real) if regular else '',
            'owner': _name(pwd.getpwuid, info.st_uid), 'group': _name(grp.getgrgid, info.st_gid),
            'mode': '%04o' % stat.S_IMODE(info.st_mode), 'lnk_source': target}


def _content(path, limit):
    # In blocks: one read() of megabytes fails with ENOMEM on /proc/sys files.
    blocks, size = [], 0
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(65536), b''):
            size += len(block)
            if size > limit:
                raise ValueError('%s is larger than %d bytes' % (path, limit))
            blocks.append(block)
    return base64.b64encode(b''.join(blocks)).decode('ascii')


def _backups_beside(path):
    folder, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + _BACKUP)
    try:
        entries = os.listdir(folder or '.')
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return set(os.path.join(folder, entry) for entry in entries if pattern.match(entry))


def _backups(path):
    # Next to the path and, for a link (sites-enabled/x), next to the file it points to.
    return sorted(_backups_beside(path) | _backups_beside(os.path.realpath(path)))


def _expand(paths):
    # A path with pattern characters stands for each path it names in an existing directory
    # (present or not: backups outlive their file), a plain one for itself.
    out = []
    for path in paths:
        folder, name = os.path.split(path)
        if not glob.has_magic(path):
            out.append(path)
        elif glob.has_magic(name):
            out.extend(sorted(glob.glob(path)))
        else:
            out.extend(os.path.join(match, name) for match in sorted(glob.glob(folder)))
    return out


def _diversions(path='/var/lib/dpkg/diversions'):
    # dpkg's database: three lines per diversion (from, to, package; ":" for a local one).
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return {}
    return {lines[i]: lines[i + 1] for i in range(0, len(lines) - 2, 3)}


def _walk(path):
    # grep -r: a path given is followed if it is a link; links met inside a directory are not.
    if not os.path.isdir(path):
        return [path] if os.path.isfile(path) else []
    out = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(full)
    return out


def _matches(path, patterns):
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError:
        return False  # grep -s: an unreadable file is no match
    if b'\0' in data:
        return False
    try:
        data.decode('utf-8')
    except UnicodeDecodeError:
        return False  # not text in a UTF-8 locale: binary to grep -I, and no role could decode it
    return any(pattern.search(data) for pattern in patterns)


def search(paths, patterns, exclude):
    compiled = [re.compile(pattern.encode('utf-8')) for pattern in patterns]
    found = []
    for path in paths:
        for name in _walk(path):
            if name in found or any(fnmatch.fnmatch(os.path.basename(name), pat) for pat in exclude):
                continue
            if _matches(name, compiled):
                found.append(name)
    return found


def read_all(params):
    globs = dict((pattern, sorted(glob.glob(pattern))) for pattern in params['globs'] + params['read_globs'])
    found = search(params['search'], params['search_patterns'], params['search_exclude'])
    matched = [path for pattern in params['read_globs'] for path in globs[pattern]]
    read = params['read'] + [path for path in matched if os.path.isfile(path)] + found
    files = {}
    for path in params['paths'] + matched + read:
        files[path] = _state(path)
        target = files[path]['lnk_source']
        if target and target not in files:
            files[target] = _state(target)  # what a write through the link changes
    for path in read:
        if files[path]['exists'] and 'content' not in files[path]:
            files[path]['content'] = _content(path, params['max_bytes'])
    for match in (m for p in params['globs'] for m in globs[p]) if params['stat_globs'] else ():
        files.setdefault(match, _state(match))
    return {
        'files': files,
        'globs': globs,
        'found': found,
        'backups': dict((path, _backups(path)) for path in _expand(params['backups_of'])),
        'diversions': _diversions() if params['diversions'] else {},
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type='list', elements='path', default=[]),
            read=dict(type='list', elements='path', default=[]),
            globs=dict(type='list', elements='str', default=[]),
            read_globs=dict(type='list', elements='str', default=[]),
            search=dict(type='list', elements='path', default=[]),
            search_patterns=dict(type='list', elements='str', default=[]),
            search_exclude=dict(type='list', elements='str', default=[]),
            stat_globs=dict(type='bool', default=False),
            backups_of=dict(type='list', elements='path', default=[]),
            diversions=dict(type='bool', default=False),
            max_bytes=dict(type='int', default=4194304),
        ),
        supports_check_mode=True,
    )
    try:
        result = read_all(module.params)
    except (OSError, ValueError, re.error) as error:
        module.fail_json(msg='file_state: %s' % error)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
