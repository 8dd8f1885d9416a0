"""The fake ESP's container image (docker/Dockerfile, docs/container.md).

Default suite: the image's command line (its ENTRYPOINT, read from the Dockerfile) serves SMTP, the HTTP
APIs and the control API with the host's Python, and refuses a bad flag in one line with exit 2; the
packages the image installs are the ones pyproject.toml pins. Against a real dockerd (marked long: the
first build takes a minute or two): the image built from the Dockerfile by docker/build_esp_image.py
(no registry) serves all three through published ports with its ledger on a volume, a bad flag exits 2,
and the testcontainers example of docs/container.md passes as written.
"""

from __future__ import annotations

import json
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailstorm.errors import EXIT_BAD_INPUT
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PAGE = ROOT / "docs" / "container.md"
MESSAGE = "Subject: hi\r\nX-Mailstorm-Id: {id}\r\n\r\nhello\r\n"


def entrypoint() -> list[str]:
    (line,) = [x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENTRYPOINT ")]
    return json.loads(line.removeprefix("ENTRYPOINT "))


def get_json(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> dict:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def send_smtp(host: str, port: int, mid: str) -> None:
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.net"], MESSAGE.format(id=mid))


def send_postmark(base: str, mid: str) -> dict:
    body = {"From": "a@example.com", "To": "b@example.net", "Subject": "hi", "TextBody": "hello"}
    body["Headers"] = [{"Name": "X-Mailstorm-Id", "Value": mid}]
    headers = {"Content-Type": "application/json", "X-Postmark-Server-Token": "test-token"}
    return get_json(f"{base}/email", data=json.dumps(body).encode(), headers=headers)


def test_the_image_installs_what_pyproject_pins():
    """docker/esp-requirements.txt is the fake ESP's share of pyproject.toml's dependencies, word for word."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    lines = [
        x for x in (ROOT / "docker" / "esp-requirements.txt").read_text().splitlines() if x and x[0] != "#"
    ]
    assert lines and all(f'"{line}"' in pyproject for line in lines)


def test_the_images_command_serves_smtp_http_apis_and_control_and_refuses_a_bad_flag(tmp_path):
    """The ENTRYPOINT's argv as the container runs it (ports and bind moved to free loopback ones, as a
    later argument does): SMTP, the Postmark API and the control API answer, the ledger is where it
    says; a bad flag is one line and exit 2."""
    smtp, control, http = free_port(), free_port(), free_port()
    argv = [sys.executable if a == "python" else a for a in entrypoint()]
    assert argv[1:3] == ["-m", "mailstorm.fake_esp"] and "--no-token" in argv and "/data/ledger" in argv
    here = ["--bind", "127.0.0.1", "--smtp-port", str(smtp), "--control-port", str(control)]
    here += ["--http-port", str(http), "--ledger", str(tmp_path / "ledger"), "--profile", "postmark"]
    with (
        (tmp_path / "esp.log").open("w") as log,
        subprocess.Popen([*argv, *here], cwd=tmp_path, stderr=log) as proc,
    ):
        try:
            wait_for_port("127.0.0.1", control, 30, what="fake ESP", alive=lambda: proc.poll() is None)
            assert get_json(f"http://127.0.0.1:{control}/health")["ready"]
            send_smtp("127.0.0.1", smtp, "m-smtp")
            assert send_postmark(f"http://127.0.0.1:{http}", "m-http")["ErrorCode"] == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    ids = {r["id"] for r in LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])}
    assert ids == {"m-smtp", "m-http"}
    bad = subprocess.run([*argv, "--rate", "fast"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == EXIT_BAD_INPUT
    assert len(bad.stderr.strip().splitlines()) == 1 and "--rate" in bad.stderr


# -- the image, against a real dockerd ---------------------------------------------------------------------


def _docker():
    from mailstorm.errors import UserError
    from mailstorm.harness.targets.docker import docker_client

    try:
        return docker_client()
    except UserError:
        return None


@pytest.fixture(scope="module")
def image() -> str:
    if _docker() is None:
        pytest.skip("no dockerd")
    out = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "build_esp_image.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


@pytest.mark.long
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_docker_run_serves_smtp_http_apis_and_control_with_its_ledger_on_a_volume(image, tmp_path):
    """docker run -p 2525 -p 8025 -p 8080 -v DIR:/data IMAGE --profile postmark (published to loopback)."""
    client = _docker()
    ports = {f"{p}/tcp": ("127.0.0.1", None) for p in (2525, 8025, 8080)}
    box = client.containers.run(
        image, ["--profile", "postmark"], detach=True, ports=ports, volumes={str(tmp_path): {"bind": "/data"}}
    )
    try:
        box.reload()
        published = {int(k.split("/")[0]): int(v[0]["HostPort"]) for k, v in box.ports.items()}
        _wait_ready(f"http://127.0.0.1:{published[8025]}/health")
        send_smtp("127.0.0.1", published[2525], "c-smtp")
        assert send_postmark(f"http://127.0.0.1:{published[8080]}", "c-http")["ErrorCode"] == 0
        assert get_json(f"http://127.0.0.1:{published[8025]}/counters")["accepted"] == 2
    finally:
        box.stop(timeout=10)
        logs = box.logs().decode()
        box.remove()
    ids = {r["id"] for r in LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])}
    assert ids == {"c-smtp", "c-http"}, logs


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    """Ask the health URL until it answers: docker's port proxy accepts before the server inside
    listens, so an open port says nothing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if get_json(url)["ready"]:
                return
        except OSError:
            time.sleep(0.2)  # the poll's period; the condition is the answer above
    raise AssertionError(f"{url} never answered within {timeout_s:g} s")


@pytest.mark.long
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_a_bad_flag_to_the_container_prints_one_line_and_exits_2(image):
    done = subprocess.run(["docker", "run", "--rm", image, "--rate", "fast"], capture_output=True, text=True)
    assert done.returncode == EXIT_BAD_INPUT
    (line,) = done.stderr.strip().splitlines()
    assert "--rate" in line and "fast" in line


@pytest.mark.long
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_the_testcontainers_example_in_the_docs_passes(image, tmp_path, monkeypatch):
    """The page's example, as written, against the image built here (it names mailstorm-esp: :latest)."""
    from testcontainers.core.config import testcontainers_config

    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)  # Ryuk's image is on Docker Hub
    (code,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    namespace: dict = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    namespace["test_the_mailer_sees_ses_throttling"](tmp_path)
