"""Build the ``mailstorm-pyhost`` test image from local files (there is no registry here).

The image is a bare root filesystem holding only the shared libraries the host's Python needs (its
interpreter and every extension module under its prefix, found with ``ldd``), plus a minimal /etc. The
Python install itself and the mailstorm checkout are bind-mounted read-only at their host paths when a
container runs, so the container runs exactly the code under test (e.g. ``python -m harness.reference``)
without copying 1 GB of site-packages into an image. ``docker import`` of a tarball: no Dockerfile, no
base image, no network.

    python docker/build_pyhost_image.py      # prints the image tag; builds only when missing

The tag carries a hash of the library list and the Python path, so a changed host Python gets a new
image instead of a stale one.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import docker

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def python_paths() -> tuple[Path, Path]:
    return Path(os.path.realpath(sys.executable)), Path(sys.base_prefix).resolve()


def needed_libraries(executable: Path, prefix: Path) -> list[str]:
    """Absolute paths (as the loader names them) of every system library the interpreter and the
    extension modules under ``prefix`` link against, the loader itself included."""
    objects = [str(executable), *(str(p) for p in prefix.rglob("*.so*") if p.is_file())]
    libs: set[str] = set()
    for i in range(0, len(objects), 200):
        out = subprocess.run(["ldd", *objects[i : i + 200]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs.add(parts[2])
            elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
                libs.add(parts[0])
    return sorted(lib for lib in libs if not lib.startswith(str(prefix)))


def image_tag(executable: Path, libs: list[str]) -> str:
    digest = hashlib.sha256("\n".join([str(executable), *libs]).encode()).hexdigest()[:12]
    return f"mailstorm-pyhost:{digest}"


def rootfs_tar(libs: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("etc", "tmp", "root", "lib", "lib64", "usr", "usr/lib", "var", "var/tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d.endswith("tmp") else 0o755
            tar.addfile(info)
        for name, text in (
            ("etc/passwd", PASSWD),
            ("etc/group", GROUP),
            ("etc/nsswitch.conf", "hosts: files dns\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for lib in libs:
            # Stored as regular files at the path the loader asked for (symlinks resolved on the host).
            tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"), recursive=False)
    return buf.getvalue()


def build(client: docker.DockerClient | None = None) -> str:
    """Return the tag of the image, importing it first when it is missing."""
    client = client or docker.from_env()
    executable, prefix = python_paths()
    libs = needed_libraries(executable, prefix)
    tag = image_tag(executable, libs)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(rootfs_tar(libs), repository=repository, tag=version)
        client.images.get(tag)  # raises when the import did not produce it
    return tag


if __name__ == "__main__":
    print(build())
