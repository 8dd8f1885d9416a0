"""The ``docker`` target: a container as the SUT (docker SDK), an existing one by name or one started
from an image with a published port, environment and volumes; actions kill, pause, unpause/resume,
stop, start, restart, and network disconnect/connect; with ``state_path`` (a file or directory in the
container holding the SUT's state) also the backup actions ``snapshot``, ``restore`` (``params: {name}``)
and ``wipe`` (mailstorm.harness.targets.docker_state).

Reaching the ESP. The fake ESP listens on host loopback, which a container on a bridge network cannot
reach; the target puts a plain TCP forwarder (a ``ChaosProxy`` without toxics) on the network's gateway
address, so ``{esp_host}:{esp_port}`` in the command/env is the ESP as seen from inside. That listener
is on the docker bridge, reachable only from this host and its containers. With ``network: host`` the
container shares the host's loopback and the ESP is used directly.

Placeholders in ``command``, ``env`` and ``volumes``: ``{port}`` (the container-side SUT port),
``{esp_host}``, ``{esp_port}``, ``{esp_http}``, ``{esp_ca}``, ``{ledger_dir}``, ``{ledger_source}``,
``{run_dir}``, ``{seed}``, and ``{python}``, ``{python_prefix}``, ``{python_env}``, ``{mailstorm_root}``
(mailstorm's interpreter, its installation, its venv and checkout: bind-mounted into the
``mailstorm-pyhost`` image, they run mailstorm's own reference pipeline in a container; see
docker/build_pyhost_image.py).

Readiness: the published port alone proves nothing (docker-proxy accepts before the SUT listens), so
an SMTP SUT is ready when it sends its 220 greeting, an HTTP one when ``ready_url`` answers 2xx.

Nothing left behind: containers this target starts carry the label ``mailstorm.instance=<run dir>``;
``stop()`` removes every container with its label (also ones a crashed earlier attempt left), after
saving the container's output to ``<run>/logs/<log_name>.log``. A container named in the spec is not
ours: ``stop()`` only undoes what the run did to it (unpause, reconnect, start).
"""

from __future__ import annotations

import atexit
import ipaddress
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.leftovers import CONTAINER_LABEL, dockerd_down
from mailstorm.harness.snapshots import BACKUP_ACTIONS, RESTORE, SNAPSHOT, snapshot_name
from mailstorm.harness.targets import docker_state
from mailstorm.harness.targets.base import Address, Endpoint, TargetContext, register
from mailstorm.harness.targets.process import http_ok, ready_url_address, substitute, wait_ready
from mailstorm.ports import free_port

ACTIONS = frozenset(
    {"kill", "pause", "unpause", "resume", "stop", "start", "restart", "disconnect", "connect"}
)
LABEL = CONTAINER_LABEL  # mailstorm.instance=<run dir>: how the watchdog and `mailstorm cleanup` find ours
PUBLISH_HOST = "127.0.0.1"  # where the container's port is published for the load


class DockerSpec(BaseModel):
    """A container as the SUT: ``container`` (an existing one, by name) or ``image`` (started here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["docker"] = "docker"
    container: str | None = Field(None, min_length=1, description="an existing container, by name")
    image: str | None = Field(None, min_length=1, description="start a container from this image")
    command: tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    volumes: dict[str, str] = Field(
        default_factory=dict, description="host path -> container path, ':ro' suffix for read-only"
    )
    working_dir: str | None = None
    port: int = Field(25, ge=0, le=65535, description="container-side port the load submits to")
    host_port: int = Field(0, ge=0, le=65535, description="published on 127.0.0.1; 0 = a free port")
    network: str = Field("bridge", min_length=1, description="bridge, host, or a user-defined network")
    protocol: Literal["smtp", "http"] = "smtp"
    path: str = Field("/", pattern=r"^/")
    ready_url: str | None = Field(None, description="http: ready when this URL answers 2xx")
    ready_timeout_s: float = Field(60.0, gt=0)
    stop_timeout_s: int = Field(10, ge=0, description="docker stop/restart grace before SIGKILL")
    log_name: str = Field("sut", pattern=r"^[A-Za-z0-9_.-]+$")
    state_path: str | None = Field(
        None,
        pattern=r"^[/{]",
        description="the SUT's state in the container (a file or directory; placeholders as in volumes): "
        "what snapshot, restore and wipe copy and delete",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DockerSpec:
        if (self.container is None) == (self.image is None):
            raise ValueError("give exactly one of container (an existing one) or image (start one)")
        if self.container is not None and (self.command or self.env or self.volumes):
            raise ValueError("command, env and volumes apply to a container started from an image")
        if self.network == "host" and self.port == 0:
            raise ValueError("network host: port must be the port the SUT listens on")
        return self


def docker_client():
    """A docker SDK client talking to a live dockerd; UserError naming the problem otherwise."""
    import docker  # imported here: only this target needs it

    why = dockerd_down()
    if why is not None:
        raise UserError(f"target docker: cannot reach dockerd ({why}); start it (dockerd &)")
    client = None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()  # its pooled unix socket, or it leaks (a ResourceWarning at some later GC)
        raise UserError(f"target docker: cannot reach dockerd ({exc}); start it (dockerd &)") from None
    return client


def smtp_greets(host: str, port: int) -> bool:
    """True when an SMTP server at host:port sends its 220 greeting (not merely accepts the connection)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.settimeout(1.0)
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


@register
class DockerTarget:
    """Runs or adopts a container; ``act`` breaks it; ``stop`` removes what this target started."""

    spec_model = DockerSpec

    def __init__(self, spec: DockerSpec) -> None:
        self.spec = spec
        self._client = None
        self._container = None
        self._owned = False
        self._forwarders: list[ChaosProxy] = []
        self._instance = ""
        self._endpoint: Endpoint | None = None
        self._log: Path | None = None
        self._atexit = False
        self._state_path: str | None = None

    # -- Target ---------------------------------------------------------------------------------------
    def addresses(self) -> list[Address]:
        """The SUT's port is published on loopback (or, with network host, is on it)."""
        return [Address(PUBLISH_HOST), *ready_url_address(self.spec.ready_url, PUBLISH_HOST)]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        self._client = docker_client()
        self._instance = str(Path(ctx.run_dir).resolve())
        self._log = Path(ctx.run_dir) / "logs" / f"{self.spec.log_name}.log"
        if not self._atexit:
            atexit.register(self.stop)  # an interrupted runner still leaves no container behind
            self._atexit = True
        if self.spec.container is not None:
            self._adopt()
            if self.spec.state_path is not None:
                here = {"run_dir": self._instance, "ledger_dir": str(Path(ctx.ledger_dir).resolve())}
                self._state_path = substitute(self.spec.state_path, here)
        else:
            self._run(ctx)
        self._wait_ready()
        assert self._endpoint is not None
        return [self._endpoint]

    def stop(self) -> None:
        """Remove the containers this target started (and forwarders); restore an adopted one."""
        if self._client is None:
            return
        if self._owned or self.spec.image is not None:
            self._save_logs()
            for c in self._client.containers.list(all=True, filters={"label": f"{LABEL}={self._instance}"}):
                c.remove(force=True)
            self._container = None
        elif self._container is not None:
            self._restore_adopted()
        for fwd in self._forwarders:
            fwd.stop()
        self._forwarders.clear()

    # -- Alive ----------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """Running or paused (a paused container is stalled, not dead)."""
        return self._status() in ("running", "paused")

    # -- Actionable -----------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        return ACTIONS | BACKUP_ACTIONS if self.spec.state_path is not None else ACTIONS

    def act(self, action: str, **params: Any) -> str:
        known = self.actions()
        if action not in known:
            raise UserError(f"docker target: unknown action {action!r}; known: {', '.join(sorted(known))}")
        if action in BACKUP_ACTIONS:
            return self._backup(action, params)
        if params:
            raise UserError(f"docker target: action {action!r} takes no params, got {sorted(params)}")
        c = self._require()
        name = c.name
        if action == "kill":
            c.kill()
            return f"killed {name} (SIGKILL)"
        if action == "pause":
            c.pause()
            return f"paused {name}"
        if action in ("unpause", "resume"):
            c.unpause()
            return f"unpaused {name}"
        if action == "stop":
            c.stop(timeout=self.spec.stop_timeout_s)
            return f"stopped {name}"
        if action == "start":
            if self._status() == "running":
                return f"{name} already running"
            c.start()
            self._wait_ready()
            return f"started {name}"
        if action == "restart":
            if self._status() == "paused":
                c.unpause()
            c.restart(timeout=self.spec.stop_timeout_s)
            self._wait_ready()
            return f"restarted {name}"
        network = self._network()
        if action == "disconnect":
            network.disconnect(c)
            return f"disconnected {name} from {network.name}"
        network.connect(c)
        return f"connected {name} to {network.name}"

    def _backup(self, action: str, params: dict[str, Any]) -> str:
        allowed = {"name"} if action in (SNAPSHOT, RESTORE) else set()
        if set(params) - allowed:
            takes = "only 'name'" if allowed else "no params"
            raise UserError(f"docker target: action {action!r} takes {takes}, got {sorted(params)}")
        c, path, run_dir = self._require(), self._state_path, Path(self._instance)
        assert path is not None  # set at start() whenever spec.state_path is
        if action == SNAPSHOT:
            return docker_state.snapshot(c, path, run_dir, snapshot_name("docker", action, params))
        if action == RESTORE:
            return docker_state.restore(c, path, run_dir, snapshot_name("docker", action, params))
        return docker_state.wipe(c, path)

    # -- internals ------------------------------------------------------------------------------------
    def _run(self, ctx: TargetContext) -> None:
        spec = self.spec
        host_mode = spec.network == "host"
        port = spec.port
        esp_host, esp_port = ctx.esp_smtp
        esp_http = ctx.esp_http or ""
        if not host_mode:
            esp_host, esp_port, esp_http = self._forward_esp(ctx)
        values = {
            "port": str(port),
            "esp_host": esp_host,
            "esp_port": str(esp_port),
            "esp_http": esp_http,
            "esp_ca": str(ctx.esp_security.ca) if ctx.esp_security.ca is not None else "",  # mount it in
            # Absolute: the SUT may run in another cwd (spec.cwd) or a container (bind mounts need it).
            "ledger_dir": str(Path(ctx.ledger_dir).resolve()),
            "ledger_source": ctx.ledger_source or "sut",
            "run_dir": str(Path(ctx.run_dir).resolve()),
            "seed": str(ctx.seed),
        }
        volumes: dict[str, dict[str, str]] = {}
        for host_path, target in spec.volumes.items():
            bind, _, mode = substitute(target, values).partition(":")
            volumes[substitute(host_path, values)] = {"bind": bind, "mode": mode or "rw"}
        kwargs: dict[str, Any] = {
            "detach": True,
            "labels": {LABEL: self._instance},
            "environment": {k: substitute(v, values) for k, v in spec.env.items()},
            "volumes": volumes,
            "working_dir": spec.working_dir and substitute(spec.working_dir, values),
        }
        if host_mode:
            kwargs["network_mode"] = "host"
            host_port = port
        else:
            host_port = spec.host_port or free_port()
            kwargs["network"] = spec.network
            kwargs["ports"] = {f"{port}/tcp": (PUBLISH_HOST, host_port)}
        command = [substitute(part, values) for part in spec.command] if spec.command else None
        if spec.state_path is not None:
            self._state_path = substitute(spec.state_path, values)
        self.stop_leftovers()
        self._owned = True
        try:
            self._container = self._client.containers.run(spec.image, command, **kwargs)
        except Exception as exc:  # ImageNotFound, APIError: name the image and docker's reason
            raise UserError(f"target docker: cannot run image {spec.image!r}: {_explain(exc)}") from None
        self._set_endpoint(PUBLISH_HOST, host_port)

    def stop_leftovers(self) -> None:
        """Remove containers of this run's instance left by an earlier, interrupted attempt."""
        for c in self._client.containers.list(all=True, filters={"label": f"{LABEL}={self._instance}"}):
            c.remove(force=True)

    def _adopt(self) -> None:
        import docker

        try:
            self._container = self._client.containers.get(self.spec.container)
        except docker.errors.NotFound:
            raise UserError(f"target docker: no container named {self.spec.container!r}") from None
        name = self.spec.container
        if (status := self._status()) != "running":
            raise UserError(f"target docker: container {name!r} is {status}, not running")
        if self.spec.network == "host":
            self._set_endpoint(PUBLISH_HOST, self.spec.port)
            return
        ports = (self._container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{self.spec.port}/tcp") or []
        if not ports:
            raise UserError(
                f"target docker: container {name!r} publishes no host port for {self.spec.port}/tcp"
            )
        self._set_endpoint(PUBLISH_HOST, int(ports[0]["HostPort"]))

    def _restore_adopted(self) -> None:
        c = self._container
        try:
            status = self._status()
            if status == "paused":
                c.unpause()
            elif status in ("exited", "created"):
                c.start()
            if self.spec.network != "host" and self.spec.network not in self._networks_of(c):
                self._network().connect(c)
        except Exception:
            pass  # best effort: the container is the user's; the run's outcome is already recorded

    def _forward_esp(self, ctx: TargetContext) -> tuple[str, int, str]:
        """Forwarders on the network's gateway to the ESP's SMTP (and HTTP) listeners."""
        gateway = self._gateway()
        # The docker bridge gateway: reachable only from this host and its containers, not a remote address.
        smtp = ChaosProxy(ctx.esp_smtp, listen=(gateway, 0), seed=ctx.seed, allow_remote=True).start()
        self._forwarders.append(smtp)
        esp_http = ""
        if ctx.esp_http:
            from urllib.parse import urlsplit

            parts = urlsplit(ctx.esp_http)
            default = 443 if parts.scheme == "https" else 80
            http = ChaosProxy(
                (parts.hostname, parts.port or default), listen=(gateway, 0), seed=ctx.seed, allow_remote=True
            ).start()
            self._forwarders.append(http)
            # A TCP forwarder: https passes through as it is (the certificate names 127.0.0.1 and
            # localhost, not the gateway: a container that checks hostnames needs the ESP's --tls-cert).
            esp_http = f"{parts.scheme}://{gateway}:{http.port}{parts.path}"
        return gateway, smtp.port, esp_http

    def _gateway(self) -> str:
        ipam = self._network().attrs.get("IPAM", {}).get("Config") or []
        for conf in ipam:
            if conf.get("Gateway"):
                return conf["Gateway"]
            if conf.get("Subnet") and ":" not in conf["Subnet"]:
                return str(next(ipaddress.ip_network(conf["Subnet"]).hosts()))  # docker's default gateway
        raise HarnessError(f"target docker: network {self.spec.network!r} has no IPv4 gateway")

    def _network(self):
        import docker

        if self.spec.network == "host":
            raise UserError("target docker: a container on the host network cannot be disconnected/connected")
        try:
            return self._client.networks.get(self.spec.network)
        except docker.errors.NotFound:
            raise UserError(f"target docker: no docker network named {self.spec.network!r}") from None

    @staticmethod
    def _networks_of(container) -> set[str]:
        container.reload()
        return set((container.attrs["NetworkSettings"].get("Networks") or {}).keys())

    def _set_endpoint(self, host: str, port: int) -> None:
        if self.spec.protocol == "http":
            self._endpoint = Endpoint("http", host, port, url=f"http://{host}:{port}{self.spec.path}")
        else:
            self._endpoint = Endpoint("smtp", host, port)

    def _wait_ready(self) -> None:
        ep = self._endpoint
        assert ep is not None
        if self.spec.protocol == "http":
            url = self.spec.ready_url or ep.url or ""
            check = lambda: http_ok(url)  # noqa: E731
        else:
            check = lambda: smtp_greets(ep.host, ep.port)  # noqa: E731
        name = self.spec.container or self.spec.image
        wait_ready(check, timeout=self.spec.ready_timeout_s, alive=self.alive, what=f"container {name!r}")

    def _status(self) -> str:
        if self._container is None:
            return "absent"
        try:
            self._container.reload()
        except Exception:
            return "absent"
        return self._container.status

    def _require(self):
        if self._container is None or self._status() == "absent":
            raise HarnessError("docker target: no container (start() first, or it was removed)")
        return self._container

    def _save_logs(self) -> None:
        if self._container is None or self._log is None:
            return
        try:
            data = self._container.logs(stdout=True, stderr=True)
        except Exception:
            return
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as fh:
            fh.write(data)


def _explain(exc: Exception) -> str:
    return getattr(exc, "explanation", None) or str(exc)
