"""The one registry convention: a name -> entry map per kind of plugin, filled by the plugins themselves.

Faults, SUT targets, chaos-proxy toxics, ESP HTTP APIs, webhook formats and ESP profiles are all plugins
of one shape (Toxiproxy's ``Register`` is the model): a plugin is one module holding its settings (a
frozen pydantic spec model whose discriminator literal is its name), its behaviour, and its registration
(``@register`` on the class). Nothing lists the plugins: each registry finds its own, once, the first
time it is read:

    modules(package)          imports every module of a package (pkgutil over the package's
                              ``__path__``): adding a file to the folder adds the plugin
    homes(package, module)    imports ``<package>.<home>.<module>`` for every subpackage (home) that has
                              one: one home per ESP, e.g. ``fake_esp/esps/sendgrid/api.py``

Rules. A name registered twice is refused (ValueError naming both places): two plugins never shadow each
other silently. ``names()`` (and iteration) is sorted, whatever order the modules were imported in. A
module that builds something from a registry when it is imported (the pydantic union over every fault)
must not be imported by the plugins themselves: a plugin imports only its kind's ``base`` module, which
defines the registry and reads nothing from it. Both ways of breaking that rule fail loudly instead of
leaving a union without the plugin: a read while the plugins are being imported is a RuntimeError, and
a registration after the registry was read is a ValueError naming the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_NEW, _DISCOVERING, _READ = "not read yet", "discovering", "read"


class Registry(Generic[T]):
    """Every plugin of one ``kind`` ("fault", "target kind"...), by name.

    ``name_of(entry)`` says the name an entry registers under (usually its spec model's literal; None:
    entries are only ``add``-ed under a name); ``discover()`` finds the plugins (importing their modules,
    which register themselves).
    """

    def __init__(
        self,
        kind: str,
        *,
        name_of: Callable[[T], str] | None = None,
        discover: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.name_of = name_of
        self._discover = discover
        self._entries: dict[str, T] = {}
        self._where: dict[str, str] = {}
        self._state = _NEW

    # -- writing (plugins, at import) ------------------------------------------------------------
    def register(self, entry: T) -> T:
        """Class decorator: add ``entry`` under ``name_of(entry)`` and return it unchanged."""
        if self.name_of is None:
            raise TypeError(f"the {self.kind} registry names its entries itself: use add(name, entry)")
        return self.add(self.name_of(entry), entry)

    def add(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name already taken by another entry raises ValueError."""
        old = self._entries.get(name)
        if old is entry:
            return entry
        where = _where(entry)
        if old is not None:
            raise ValueError(f"{self.kind} {name!r} registered twice: by {self._where[name]} and by {where}")
        if self._state == _READ:
            raise ValueError(
                f"{self.kind} {name!r} ({where}) registered after the registry was read, so what was built "
                f"from it misses it: a plugin must import only its kind's base module"
            )
        self._entries[name] = entry
        self._where[name] = where
        return entry

    # -- reading (discovers the plugins first) -----------------------------------------------------
    def _ready(self) -> dict[str, T]:
        if self._state == _DISCOVERING:
            raise RuntimeError(
                f"the {self.kind} registry was read while its plugins were being imported: a plugin "
                f"imported a module that builds on the registry (it must import only its kind's base module)"
            )
        if self._state == _NEW:
            self._state = _DISCOVERING
            try:
                if self._discover is not None:
                    self._discover()
            except BaseException:
                self._state = _NEW  # a plugin that failed to import: discovery is tried again next read
                raise
            self._state = _READ
        return self._entries

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._ready()))

    def __getitem__(self, name: str) -> T:
        return self._ready()[name]

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._ready().get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._ready()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._ready())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def values(self) -> list[T]:
        return [self._entries[name] for name in self.names()]

    def unknown(self, name: object) -> str:
        """The one-line complaint about a name nobody registered."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"

    def __repr__(self) -> str:
        state = ", ".join(sorted(self._entries)) if self._state == _READ else self._state
        return f"Registry({self.kind!r}: {state})"


def _where(entry: Any) -> str:
    module = getattr(entry, "__module__", None)
    return f"{module}.{getattr(entry, '__qualname__', '')}" if module else repr(entry)


# -- discovery ------------------------------------------------------------------------------------


def modules(package: str, *, skip: tuple[str, ...] = ("base",)) -> Callable[[], None]:
    """Discovery that imports every module of ``package`` except ``skip`` and ``_private`` ones."""

    def discover() -> None:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name not in skip and not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")

    return discover


def home_names(package: str) -> list[str]:
    """The subpackages (homes) of ``package``, over every folder of its ``__path__``."""
    pkg = importlib.import_module(package)
    return [info.name for info in pkgutil.iter_modules(pkg.__path__) if info.ispkg]


def homes(package: str, module: str) -> Callable[[], None]:
    """Discovery that imports ``<package>.<home>.<module>`` for every home that has that module."""

    def discover() -> None:
        for home in home_names(package):
            name = f"{package}.{home}.{module}"
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)

    return discover


def literal_of(model: Any, field: str) -> str:
    """The one value of a pydantic spec model's ``Literal`` field (its discriminator): the plugin's name."""
    args = typing.get_args(model.model_fields[field].annotation)
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{model.__name__}.{field} must be a Literal of one string (the plugin's name)")
    return args[0]
