"""Run mailstorm with plugin folders added to its plugin packages, as if their files were in the checkout.

    python -m tests.plugins FOLDER ARGS...          the ``mailstorm`` command with ARGS
    python -m tests.plugins FOLDER -c CODE          Python code

FOLDER holds one subfolder per plugin package it adds to (any of them may be missing):

    faults/    -> mailstorm.fake_esp.faults        (a fault module)
    esps/      -> mailstorm.fake_esp.esps          (an ESP home: <name>/__init__.py, api.py, ...)
    targets/   -> mailstorm.harness.targets        (a target module)
    toxics/    -> mailstorm.harness.chaosproxy.toxics

Each subfolder is appended to its package's ``__path__`` before anything reads a registry, which is
what a file dropped into the package's folder amounts to: the registries find plugins by listing
``__path__`` (mailstorm.registry). The tests that add a plugin at test time use this in every process
they start (so the checkout is never written to).
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

PACKAGES = {
    "faults": "mailstorm.fake_esp.faults",
    "esps": "mailstorm.fake_esp.esps",
    "targets": "mailstorm.harness.targets",
    "toxics": "mailstorm.harness.chaosproxy.toxics",
}


def add_plugins(folder: Path) -> None:
    for sub, package in PACKAGES.items():
        if (folder / sub).is_dir():
            importlib.import_module(package).__path__.append(str(folder / sub))


def command(folder: Path, *args: str) -> list[str]:
    """The argv that runs ``args`` (mailstorm arguments, or ``-c CODE``) with ``folder``'s plugins."""
    return [sys.executable, "-m", "tests.plugins", str(folder), *args]


def main(argv: list[str]) -> None:
    folder, *args = argv
    add_plugins(Path(folder))
    if args[:1] == ["-c"]:
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<plugins -c>", "exec"), {"__name__": "__main__"})
        return
    sys.argv = ["mailstorm", *args]
    runpy.run_module("mailstorm", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
