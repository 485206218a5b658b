"""opsctl's exit codes are defined once (opsctl/errors.py): no other module names its own
EXIT_* constants or exits with a bare number, so the CLI and the flows cannot drift apart."""

from __future__ import annotations

import ast
from pathlib import Path

from opsctl import errors

PACKAGE = Path(errors.__file__).resolve().parent


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p != Path(errors.__file__).resolve()]


def _exit_constants(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id.startswith("EXIT_"):
                        names.append(name.id)
    return names


def _bare_exits(tree: ast.AST) -> list[int]:
    """Lines calling sys.exit with a literal number."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int)):
            found.append(node.lineno)
    return found


def test_exit_codes_are_defined_only_in_errors():
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        assert not _exit_constants(tree), f"{path.relative_to(PACKAGE)} defines {_exit_constants(tree)}"
        assert not _bare_exits(tree), f"{path.relative_to(PACKAGE)}: sys.exit(<number>) at lines {_bare_exits(tree)}"


def test_the_codes_are_the_documented_ones():
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_BAD_INPUT) == (0, 1, 2)
    assert errors.OpsctlError("x").exit_code == errors.EXIT_BAD_INPUT
