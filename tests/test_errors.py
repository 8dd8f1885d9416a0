"""The error tree: every exception class of the package is in mailstorm/errors.py, the tree drawn in its
docstring is the real hierarchy with each class's real exit code, and the CLI exits with the class's code."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import signal
from pathlib import Path

import mailstorm.errors as errors
from mailstorm.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mailstorm", "harness", "fake_esp", "scenarios", "reports")  # the folders of the one import root
BUILTIN_EXCEPTIONS = {
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
}


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def exception_classes_by_file() -> dict[str, set[str]]:
    """Every class in the package's sources deriving (directly or through another of them) from an
    exception, read from the source (importing everything would import Locust, which patches sockets)."""
    classes: list[tuple[str, str, list[str]]] = []
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    rel = str(path.relative_to(ROOT))
                    classes.append((rel, node.name, [_base_name(b) for b in node.bases]))
    known = set(BUILTIN_EXCEPTIONS)
    found: dict[str, set[str]] = {}
    changed = True
    while changed:  # a class deriving from one of ours is one of ours too, wherever it is declared
        changed = False
        for rel, name, bases in classes:
            if name not in found.get(rel, set()) and known.intersection(bases):
                found.setdefault(rel, set()).add(name)
                known.add(name)
                changed = True
    return found


def test_every_exception_class_is_declared_in_errors_py():
    """No module but mailstorm/errors.py declares an exception class."""
    found = exception_classes_by_file()
    assert set(found) == {"mailstorm/errors.py"}, found


def drawn_tree() -> dict[str, tuple[str, str]]:
    """The docstring's drawing: class -> (parent, exit code as drawn)."""
    tree: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^(\s*)(?:[│ ]*[├└]── )?(\w+)(?:\s*\.*\s*(\d+(?:/\d+)?))?", line)
        if not m or not line.startswith("    ") or not m.group(2)[0].isupper():
            continue
        col = line.index(m.group(2))
        while stack and stack[-1][0] >= col:
            stack.pop()
        if stack:
            tree[m.group(2)] = (stack[-1][1], m.group(3) or "")
        stack.append((col, m.group(2)))
    return tree


def test_the_drawn_tree_is_the_hierarchy_with_its_exit_codes():
    """Each class in errors.py appears in the drawing under its real base, with its real exit code."""
    declared = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }
    tree = drawn_tree()
    assert set(tree) - {"MailstormError", "Interrupted"} == set(declared) - {"MailstormError", "Interrupted"}
    for name, cls in declared.items():
        parent, code = tree[name]
        assert cls.__bases__[0].__name__ == parent, name
        if name == "Interrupted":
            codes = [errors.Interrupted(s).exit_code for s in (signal.SIGINT, signal.SIGTERM)]
            assert code == "/".join(map(str, codes)) == "130/143"
        else:
            assert code == str(cls.exit_code), name


def test_target_died_fails_the_run_as_its_docstring_says():
    """TargetDied is a finding about the SUT: the run's failing verdict code (1), not a harness failure."""
    assert errors.TargetDied.exit_code == errors.EXIT_SLO_BREACHED == 1
    assert not issubclass(errors.TargetDied, errors.HarnessError)
    assert issubclass(errors.PartDied, errors.HarnessError) and errors.PartDied.exit_code == 3
    assert issubclass(errors.FieldError, ValueError) and errors.FieldError.exit_code == 2


def test_the_cli_exits_with_the_code_of_the_class(tmp_path, capsys):
    """A UserError from a subcommand (a scenario file that does not exist) exits 2, in one line."""
    assert main(["validate", str(tmp_path / "nope.yaml")]) == errors.UserError.exit_code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nope.yaml" in err
