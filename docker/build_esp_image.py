"""Build the ``mailstorm-esp`` image from docker/Dockerfile where no registry is reachable (here).

Users build it as any image (``docker build -f docker/Dockerfile -t mailstorm-esp .``: FROM the official
python image, packages from PyPI). This script builds the same Dockerfile, line for line, giving it
locally what that build would download:

- its base, ``PYTHON_IMAGE``: the host's own Python as an image, ``mailstorm-python:<hash>``: the
  interpreter, its standard library and pip (unpacked from the wheel ensurepip bundles), the system
  libraries they link (found with ``ldd``, as docker/build_pyhost_image.py does) and a minimal /etc,
  made with ``docker import`` of a tarball, at the interpreter's own path and on PATH as ``python``;
- its packages: docker/esp-requirements.txt (and setuptools, the build backend) downloaded once by the
  host's pip, through the indexes it is configured with, into a wheelhouse served on loopback to the
  build (``PIP_NO_INDEX``, ``PIP_FIND_LINKS`` build arguments; the build's RUN steps use the host's
  network to reach it).

    python docker/build_esp_image.py      # prints the image tag; builds only when the sources changed

The tag is a hash of the base and of every file the Dockerfile copies, so a changed source gets a new
image; ``mailstorm-esp:latest`` names the newest build.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_pyhost_image import add_bytes, needed_libraries, skeleton

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = "docker/Dockerfile"
REQUIREMENTS = ROOT / "docker" / "esp-requirements.txt"
REPOSITORY = "mailstorm-esp"
BASE_REPOSITORY = "mailstorm-python"
# What the Dockerfile copies into the image (the tag hashes them).
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "mailstorm",
    "harness",
    "fake_esp",
    "scenarios",
    "reports",
)
WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailstorm" / "esp-wheels"
# Parts of the Python install an ESP never needs (the rest of site-packages is the host's, not ours).
# The system libraries manylinux wheels may link (PEP 600's list, as a Debian slim image has them), for the
# packages pip installs into the base later: pydantic-core needs libgcc_s, others libstdc++ or zlib.
MANYLINUX_LIBS = (
    "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1", "libm.so.6", "libdl.so.2", "librt.so.1",
    "libpthread.so.0", "libutil.so.1", "libresolv.so.2",
)  # fmt: skip
_SKIP = ("site-packages/", "test/", "idlelib/", "tkinter/", "turtledemo/", "ensurepip/_bundled/", "config-")


def _stdlib_files(prefix: Path, stdlib: Path) -> list[Path]:
    keep = []
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib).as_posix() + ("/" if path.is_dir() else "")
        # The standard library's compiled modules come too (not the optimised ones): a start without
        # them compiles the stdlib each time, seconds for a container.
        wanted = ".opt-" not in rel and "_tkinter" not in rel and not any(rel.startswith(s) for s in _SKIP)
        if path.is_file() and wanted:
            keep.append(path)
    return keep


def system_libraries(names: tuple[str, ...]) -> list[str]:
    """Where the loader finds each of ``names`` on this host (``ldconfig -p``), those it has."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, _, path = line.strip().partition(" => ")
        name = name.split(" (")[0]
        if name in names:
            found.setdefault(name, path)  # the first listed: the loader's own choice
    return sorted(found.values())


def base_rootfs() -> tuple[bytes, Path]:
    """The host's Python as a root filesystem tarball, and the interpreter's path in it."""
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    prefix = Path(sys.base_prefix).resolve()
    stdlib = Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["stdlib"])
    libpython = sorted((prefix / "lib").glob("libpython*.so*"))
    libs = sorted({*needed_libraries(exe, [stdlib / "lib-dynload"]), *system_libraries(MANYLINUX_LIBS)})
    site = stdlib / "site-packages"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        skeleton(tar, ("etc", "tmp", "root", "data", "usr/local/bin", "var/tmp"))
        for path in [exe, *libpython, *_stdlib_files(prefix, stdlib)]:
            tar.add(path, arcname=str(path).lstrip("/"), recursive=False)
        for lib in libs:
            tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"), recursive=False)
        # pip, as the official image has it: the wheel ensurepip bundles, unpacked into site-packages.
        (pip_wheel,) = (stdlib / "ensurepip" / "_bundled").glob("pip-*.whl")
        with zipfile.ZipFile(pip_wheel) as wheel:
            for name in wheel.namelist():
                if not name.endswith("/"):
                    add_bytes(tar, f"{str(site).lstrip('/')}/{name}", wheel.read(name), 0o644)
        for name in ("python", "python3"):
            info = tarfile.TarInfo(f"usr/local/bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, str(exe)
            tar.addfile(info)
    return buf.getvalue(), exe


def base_image(client: docker.DockerClient) -> str:
    """``mailstorm-python:<hash of the interpreter and its extension modules>``, imported when missing."""
    exe = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    dynload = Path(
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["platstdlib"]
    )
    h = hashlib.sha256(f"{exe}:{exe.stat().st_mtime_ns}".encode() + Path(__file__).read_bytes())
    for obj in sorted((dynload / "lib-dynload").glob("*.so")):
        h.update(f"{obj.name}:{obj.stat().st_size}".encode())
    tag = f"{BASE_REPOSITORY}:{h.hexdigest()[:12]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        rootfs, _ = base_rootfs()
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(rootfs, repository=repository, tag=version)
        client.images.get(tag)
    return tag


def wheelhouse() -> Path:
    """The fake ESP's packages (and setuptools, to build mailstorm) as wheels for this Python, downloaded
    once per requirements file and Python version."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    where = WHEELHOUSE / key
    if not (where / ".complete").exists():
        where.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(where), "-r", str(REQUIREMENTS)]
        subprocess.run([*cmd, "setuptools>=68"], check=True, timeout=600)
        (where / ".complete").touch()
    return where


def source_hash(base: str) -> str:
    h = hashlib.sha256(base.encode())
    for rel in (DOCKERFILE, "docker/esp-requirements.txt", ".dockerignore", *SOURCES):
        path = ROOT / rel
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" not in f.parts and f.suffix != ".pyc":
                h.update(f"{f.relative_to(ROOT)}\0".encode() + f.read_bytes())
    return h.hexdigest()[:12]


def build(client: docker.DockerClient | None = None) -> str:
    """Return the tag of the image, building it first when it is missing."""
    client = client or docker.from_env()
    base = base_image(client)
    tag = f"{REPOSITORY}:{source_hash(base)}"
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        image = _build(client, base, tag)
    image.tag(REPOSITORY, "latest")
    return tag


def _build(client: docker.DockerClient, base: str, tag: str) -> docker.models.images.Image:
    handler = partial(_QuietHandler, directory=str(wheelhouse()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        image, _logs = client.images.build(
            path=str(ROOT),
            dockerfile=DOCKERFILE,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="host",  # the RUN steps reach the wheelhouse on loopback
            buildargs={
                "PYTHON_IMAGE": base,
                "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": f"http://127.0.0.1:{server.server_address[1]}/",
            },
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
        raise SystemExit(f"docker build failed: {exc.msg}\n{log[-4000:]}") from None
    finally:
        server.shutdown()
        server.server_close()
    return image


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    print(build())
