"""Build the ``mailstorm-pyhost`` test image from local files (there is no registry here).

The image is a bare root filesystem holding only the shared libraries the host's Python needs (its
interpreter and every extension module under its prefix, found with ``ldd``), plus a minimal /etc. The
Python install itself and the mailstorm checkout are bind-mounted read-only at their host paths when a
container runs, so the container runs exactly the code under test (e.g. ``python -m
mailstorm.harness.reference``)
without copying 1 GB of site-packages into an image. ``docker import`` of a tarball: no Dockerfile, no
base image, no network.

    python docker/build_pyhost_image.py      # prints the image tag; builds only when missing

The tag carries a hash of the Python path and its extension modules, so a changed host Python gets a
new image instead of a stale one; ``mailstorm-pyhost:latest`` names the newest build (scenario files use it).
When the interpreter lives in /usr (a distribution Python), the container's /usr is the host's, mounted.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import docker

REPOSITORY = "mailstorm-pyhost"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def python_dirs() -> tuple[Path, list[Path]]:
    """The interpreter and the directories holding its extension modules (stdlib and site-packages)."""
    paths = sysconfig.get_paths()
    dirs = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return Path(os.path.realpath(sys.executable)), sorted(d for d in dirs if d.is_dir())


def needed_libraries(executable: Path, dirs: list[Path]) -> list[str]:
    """Absolute paths (as the loader names them) of every system library the interpreter and its
    extension modules link against, the loader itself included; libraries inside the Python install
    are left out (bind-mounted with it)."""
    objects = [str(executable), *(str(p) for d in dirs for p in d.rglob("*.so*") if p.is_file())]
    libs: set[str] = set()
    for i in range(0, len(objects), 200):
        out = subprocess.run(["ldd", *objects[i : i + 200]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs.add(parts[2])
            elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
                libs.add(parts[0])
    # Libraries inside the Python install or the active venv come with their bind mounts; a venv's
    # wheels name theirs with ".." (site-packages/PIL/../pillow.libs), so compare normalised paths.
    insides = {str(Path(p).resolve()) for p in (sys.base_prefix, sys.prefix)}
    libs = {os.path.normpath(lib) for lib in libs}
    return sorted(lib for lib in libs if not any(i != "/usr" and lib.startswith(i + "/") for i in insides))


def image_tag(executable: Path, dirs: list[Path]) -> str:
    """A tag naming this interpreter and the exact extension modules it has (path, size, mtime), so a
    changed host Python gets a new image; cheap (stat only), so checking for the image costs no ldd."""
    h = hashlib.sha256(str(executable).encode())
    for obj in sorted(p for d in dirs for p in d.rglob("*.so*") if p.is_file()):
        st = obj.stat()
        h.update(f"{obj}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{REPOSITORY}:{h.hexdigest()[:12]}"


def skeleton(tar: tarfile.TarFile, dirs: tuple[str, ...]) -> None:
    """The directories of a root filesystem (``*tmp`` world-writable) and a minimal /etc."""
    for d in dirs:
        info = tarfile.TarInfo(d)
        info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d.endswith("tmp") else 0o755
        tar.addfile(info)
    for name, text in (
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/nsswitch.conf", "hosts: files dns\n"),
    ):
        add_bytes(tar, name, text.encode(), 0o644)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def rootfs_tar(libs: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        skeleton(tar, ("etc", "tmp", "root", "lib", "lib64", "usr", "usr/lib", "var", "var/tmp"))
        for lib in libs:
            # Stored as regular files at the path the loader asked for (symlinks resolved on the host).
            tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"), recursive=False)
    return buf.getvalue()


def build(client: docker.DockerClient | None = None) -> str:
    """Return the tag of the image, importing it first when it is missing."""
    client = client or docker.from_env()
    executable, dirs = python_dirs()
    tag = image_tag(executable, dirs)
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        repository, _, version = tag.partition(":")
        rootfs = rootfs_tar(needed_libraries(executable, dirs))
        client.api.import_image_from_data(rootfs, repository=repository, tag=version)
        image = client.images.get(tag)  # raises when the import did not produce it
    image.tag(REPOSITORY, "latest")  # what scenario files name (docker-restart.yaml)
    return tag


if __name__ == "__main__":
    print(build())
