"""mailstorm.registry: the one convention every extension point registers by.

Names are refused twice (naming both places); plugins are found by listing a package's ``__path__``, so
a module dropped into the folder (or a folder appended to ``__path__``) is found with no other edit, and
nothing is imported until the registry is first read; every real registry still holds all its plugins
whichever plugin module a process imports first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from mailstorm.registry import Registry, literal_of

ROOT = Path(__file__).resolve().parents[1]


class _Spec(BaseModel):
    type: Literal["alpha"]


class _Alpha:
    spec_model = _Spec


class _Other:
    spec_model = _Spec


def test_a_name_registered_twice_is_refused_naming_both_places():
    reg: Registry[type] = Registry("widget", name_of=lambda cls: literal_of(cls.spec_model, "type"))
    reg.register(_Alpha)
    assert reg.register(_Alpha) is _Alpha  # the same class again (a module imported twice) is no clash
    with pytest.raises(ValueError, match=r"widget 'alpha' registered twice: by .*_Alpha and by .*_Other"):
        reg.register(_Other)
    assert reg["alpha"] is _Alpha


def test_unknown_names_and_the_order_of_names():
    """names() is sorted whatever the registration order; unknown() is the one-line complaint."""
    reg: Registry[int] = Registry("colour")
    for name, value in (("red", 1), ("blue", 2), ("green", 3)):
        reg.add(name, value)
    assert reg.names() == ("blue", "green", "red") and list(reg) == ["blue", "green", "red"]
    assert reg.items() == [("blue", 2), ("green", 3), ("red", 1)] and "red" in reg and len(reg) == 3
    assert reg.unknown("pink") == "unknown colour 'pink'; known: blue, green, red"
    assert reg.get("pink") is None
    with pytest.raises(TypeError, match="use add"):
        reg.register(4)


def test_literal_of_wants_a_one_value_literal():
    class Loose(BaseModel):
        type: str

    assert literal_of(_Spec, "type") == "alpha"
    with pytest.raises(TypeError, match="Literal of one string"):
        literal_of(Loose, "type")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A throwaway plugin package on sys.path whose plugins add themselves to ``<pkg>.base.REG``."""
    name = f"regtest_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "base.py").write_text(
        textwrap.dedent(
            f"""
            from mailstorm.registry import Registry, homes, modules
            IMPORTED = []
            REG = Registry("thing", discover=modules({name!r}))
            HOMES = Registry("home api", discover=homes({name + ".homes"!r}, "api"))
            """
        )
    )
    plugin = "import {pkg}.base as b\nb.IMPORTED.append(__name__)\nb.{reg}.add({key!r}, __name__)\n"
    (root / "beta.py").write_text(plugin.format(pkg=name, reg="REG", key="beta"))
    (root / "alpha.py").write_text(plugin.format(pkg=name, reg="REG", key="alpha"))
    (root / "_private.py").write_text("raise AssertionError('a _private module is not a plugin')\n")
    for home, has_api in (("one", True), ("two", False)):
        (root / "homes" / home).mkdir(parents=True)
        (root / "homes" / home / "__init__.py").write_text("")
        if has_api:
            (root / "homes" / home / "api.py").write_text(plugin.format(pkg=name, reg="HOMES", key=home))
    (root / "homes" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, root
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_modules_are_found_in_the_folder_only_when_first_read(package, tmp_path):
    """Nothing is imported before the registry is read; then every module but base and _private is,
    including one in a second folder appended to the package's __path__."""
    import importlib

    name, _ = package
    base = importlib.import_module(f"{name}.base")
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "gamma.py").write_text(f"import {name}.base as b\nb.REG.add('gamma', __name__)\n")
    importlib.import_module(name).__path__.append(str(extra))
    assert base.IMPORTED == []
    assert base.REG.names() == ("alpha", "beta", "gamma")
    assert base.REG["gamma"] == f"{name}.gamma"


def test_homes_are_the_subpackages_with_that_module(package):
    import importlib

    name, _ = package
    base = importlib.import_module(f"{name}.base")
    assert base.HOMES.names() == ("one",) and base.HOMES["one"] == f"{name}.homes.one.api"


def test_a_registration_after_the_first_read_is_refused():
    """What was built from the registry (a union, a help text) would silently miss a late plugin."""
    reg: Registry[int] = Registry("gadget")
    reg.add("a", 1)
    assert reg.names() == ("a",)
    with pytest.raises(ValueError, match=r"gadget 'b' .* registered after the registry was read"):
        reg.add("b", 2)


def test_a_read_while_the_plugins_are_imported_is_refused():
    """A plugin whose import reads its own registry would see it half-filled: refused, loudly."""
    reg: Registry[int] = Registry("doohickey", discover=lambda: reg.names())
    with pytest.raises(
        RuntimeError, match="doohickey registry was read while its plugins were being imported"
    ):
        reg.names()


def test_a_discovery_that_fails_is_tried_again_on_the_next_read():
    calls = []

    def discover() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("a plugin failed to import")

    reg: Registry[int] = Registry("flaky", discover=discover)
    with pytest.raises(ImportError):
        reg.names()
    assert reg.names() == () and len(calls) == 2


FIRST_IMPORTS = [
    (
        "mailstorm.fake_esp.faults.throttle",
        "from mailstorm.fake_esp.spec import FAULT_TYPES as names",
        "mailstorm.fake_esp.faults.base:FAULTS",
    ),
    (
        "mailstorm.harness.chaosproxy.toxics.latency",
        "from mailstorm.harness.chaosproxy.spec import ToxicSpec; import typing;"
        " names = [m.model_fields['type'].default for m in typing.get_args(typing.get_args(ToxicSpec)[0])]",
        "mailstorm.harness.chaosproxy.base:TOXICS",
    ),
    (
        "mailstorm.harness.targets.docker",
        "from mailstorm.harness.scenario import TARGET_KINDS as names",
        "mailstorm.harness.targets.base:TARGETS",
    ),
    (
        "mailstorm.fake_esp.esps.ses.webhook",
        "from mailstorm.fake_esp.webhooks.spec import FormatName; import typing;"
        " names = typing.get_args(FormatName)",
        "mailstorm.fake_esp.webhooks.formats:WEBHOOK_FORMATS",
    ),
    (
        "mailstorm.fake_esp.esps.sendgrid.api",
        "import mailstorm.fake_esp.http.server; names = None",
        "mailstorm.fake_esp.http.api:ESP_APIS",
    ),
]


@pytest.mark.parametrize(("first", "derive", "registry"), FIRST_IMPORTS, ids=lambda v: v.split(".")[-1][:20])
def test_whichever_plugin_a_process_imports_first_every_plugin_is_registered(first, derive, registry):
    """The rule that makes discovery safe: importing a plugin module first (before anything read its
    registry) still leaves the unions built from the registry complete."""
    module, _, attr = registry.partition(":")
    code = textwrap.dedent(
        f"""
        import importlib
        import {first}
        {derive}
        reg = getattr(importlib.import_module({module!r}), {attr!r})
        expected = sorted(reg.names())
        assert len(expected) >= 5, expected
        assert names is None or sorted(names) == expected, (names, expected)
        assert {first!r}.split(".")[-2 if {first!r}.endswith((".api", ".webhook")) else -1] in expected
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
