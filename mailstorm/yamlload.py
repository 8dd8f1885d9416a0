"""YAML in, plain data out, with the line of every key and item kept for error messages.

A scenario file is validated by pydantic, whose errors carry a location like ``("chaos", 1, "at")``.
``load_yaml`` composes the YAML node tree (PyYAML's safe loader), builds the data from it and records the
start mark of every mapping key and sequence item under its path, so ``Document.where(loc)`` can say
"line 12". Duplicate keys, which YAML silently resolves to the last one, are refused here with their line:
a scenario that says ``duration`` twice is a mistake worth naming.

Booleans are YAML 1.2's: only ``true`` and ``false``. PyYAML follows YAML 1.1, which also reads ``yes``,
``no``, ``on`` and ``off`` as booleans and so turns a field named ``on`` (an outage's, a toxic's) into the
key ``True``. ``Loader`` is that safe loader with 1.2 booleans, for every YAML file mailstorm reads from
a user; pydantic still takes ``yes`` or ``on`` where a boolean is expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mailstorm.errors import ConfigError

Path_ = tuple[str | int, ...]
_BOOL = "tag:yaml.org,2002:bool"


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (``true``/``false`` only; see the module docstring)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 booleans."""
    return yaml.load(text, Loader=Loader)


@dataclass(frozen=True)
class Document:
    """A parsed YAML document: its data and the (1-based) line of every key and item, by path."""

    name: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def resolve(self, loc: Sequence[str | int]) -> tuple[Path_, int]:
        """Map a pydantic error location to the path that exists in the data and its line.

        Steps the data does not have are skipped: discriminated unions put their tag (``"latency"``) in
        the location, and a missing field names a key that is not there (its parent's line is the answer).
        """
        node: Any = self.data
        path: list[str | int] = []
        tag_skipped: Any = None  # the mapping whose union tag was skipped (a tag comes once per mapping)
        for step in loc:
            in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
            if isinstance(node, dict) and node is not tag_skipped and _is_tag(step, node):
                # The tag first: {type: reply, reply: ...} has a field named like its tag.
                tag_skipped = node
            elif (isinstance(node, dict) and step in node) or in_list:
                node = node[step]
                path.append(step)
            elif isinstance(node, dict) and isinstance(step, str):
                # A missing or unknown-in-union key: report it by name, on its parent's line.
                path.append(step)
                break
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in self.lines:
                return tuple(path), self.lines[tuple(path[:n])]
        return tuple(path), 1

    def error(self, exc: ValidationError, *, prefix: Path_ = ()) -> ConfigError:
        """One line naming file, line, field and problem for the first error of ``exc``."""
        errors = exc.errors(include_url=False)
        err = errors[0]
        loc = prefix + tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (err["ctx"]["discriminator"].strip("'"),)
        path, line = self.resolve(loc)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return ConfigError(f"{self.name}:{line}: {dotted(path) or 'file'}: {_message(err)}{more}")

    def error_at(self, loc: Sequence[str | int], message: str) -> ConfigError:
        """A ConfigError for ``message`` about the field at ``loc`` (for checks made after validation)."""
        path, line = self.resolve(loc)
        return ConfigError(f"{self.name}:{line}: {dotted(path) or 'file'}: {message}")


def dotted(path: Sequence[str | int]) -> str:
    """``("chaos", 1, "at")`` -> ``chaos[1].at``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def load_yaml(path: str | Path) -> Document:
    """Read and parse ``path``; ConfigError (one line, with the line number) on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a scenario file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_yaml(text, name=str(path))


def parse_yaml(text: str, *, name: str = "<string>") -> Document:
    try:
        loader = Loader(text)
    except yaml.reader.ReaderError as exc:  # the reader refuses control characters before any parsing
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{name}:{line}: not valid YAML: {exc.reason} (#x{exc.character:04x})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{name}:1: file: the file is empty (expected a mapping of scenario fields)")
        lines: dict[Path_, int] = {(): node.start_mark.line + 1}
        data = loader.construct_document(node)
        _record(loader, node, (), lines, name)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{name}:{line}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}:1: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # "[[[[..." thousands deep: the parser recurses once per level
        raise ConfigError(f"{name}:1: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return Document(name=name, data=data, lines=lines)


# A scenario has hundreds of keys and items; aliases of aliases can make a few lines into billions
# ("billion laughs"), which would hang validation and eat the machine's memory.
MAX_NODES = 100_000


def _record(loader: Loader, node: yaml.Node, path: Path_, lines: dict[Path_, int], name: str) -> None:
    if len(lines) > MAX_NODES:
        raise ConfigError(
            f"{name}:{node.start_mark.line + 1}: {dotted(path) or 'file'}: more than {MAX_NODES:,} keys and "
            "items once its aliases are expanded (an alias bomb?)"
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, list | dict):
                raise ConfigError(f"{name}:{line}: {dotted(path) or 'file'}: a key must be a plain value")
            if key in seen:
                where = dotted((*path, key))
                raise ConfigError(f"{name}:{line}: {where}: duplicate key (first given on line {seen[key]})")
            seen[key] = line
            lines[(*path, key)] = line
            _record(loader, value_node, (*path, key), lines, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _record(loader, item, (*path, i), lines, name)


def _is_tag(step: str | int, node: dict) -> bool:
    """True when ``step`` is a union tag pydantic put in the location (the value of ``type``/``kind``)."""
    return isinstance(step, str) and any(node.get(k) == step for k in ("type", "kind"))


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field missing"
    if kind == "union_tag_invalid":
        return f"unknown {err['ctx']['tag']!r}; one of {err['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return "required field missing"
    msg = err["msg"]
    # pydantic prefixes messages from our own validators; the field name already says where.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if "input" in err and _short(err["input"]) and repr(err["input"]) not in msg:
        msg += f" (got {err['input']!r})"
    return msg


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 40
