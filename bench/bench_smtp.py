"""SMTP throughput: the fake ESP against a bare aiosmtpd sink and Postfix's smtp-sink, same client, same run.

    python bench/bench_smtp.py                 # full run, prints a Markdown table
    python bench/bench_smtp.py --smoke         # small counts, for CI: checks it all runs
    python bench/bench_smtp.py --write-docs    # also writes the table into docs/benchmarks.md

The client is Postfix's smtp-source (C), so the client is not the bottleneck: ``-d`` keeps each of
``--sessions`` parallel connections open for many messages, each ~2 KB (``-l``). Each server runs in its
own process(es); every target is measured ``--repeat`` times, interleaved, and the best run is kept (the
machine may be shared: the best run is the least disturbed one; the median is printed too).

Targets: the fake ESP (ledger on, no fault active, one process), a bare aiosmtpd sink (same event loop
policy: uvloop when importable; a handler that answers 250 to everything), Postfix's smtp-sink, and the
fake ESP with ``--processes 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstorm.fake_esp.launch import EspProcess  # noqa: E402
from mailstorm.ports import free_port, wait_for_port  # noqa: E402

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## SMTP: fake ESP vs sinks"


# -- the bare aiosmtpd sink (run in its own process: `bench_smtp.py --serve-sink PORT`) --------------------
class _SinkHandler:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def serve_sink(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(_SinkHandler(), hostname="sink.test", loop=loop), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


# -- targets -------------------------------------------------------------------------------------------------
class Target:
    name = ""

    def start(self) -> int: ...

    def stop(self) -> None: ...

    def pid(self) -> int | None: ...

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's process and its children."""
        pid = self.pid()
        if pid is None:
            return 0.0
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total


class FakeEsp(Target):
    def __init__(self, processes: int, workdir: Path) -> None:
        self.name = (
            "fake ESP" + (f" --processes {processes}" if processes > 1 else "") + " (ledger on, no fault)"
        )
        self.esp = EspProcess(
            workdir / f"ledger-{processes}", processes=processes, log_path=workdir / "esp.log"
        )

    def start(self) -> int:
        self.esp.start()
        return self.esp.smtp_port

    def stop(self) -> None:
        self.esp.stop()

    def pid(self) -> int | None:
        return self.esp.pid


class ChildTarget(Target):
    def __init__(self, name: str, argv_for_port) -> None:
        self.name = name
        self.argv_for_port = argv_for_port
        self.proc: subprocess.Popen | None = None

    def start(self) -> int:
        port = free_port()
        # Own session, as EspProcess starts the fake ESP: with the kernel's autogroup scheduling each
        # session is one group with one fair share of the CPUs, so every server competes alike.
        self.proc = subprocess.Popen(
            self.argv_for_port(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", port, 15, what=self.name, alive=lambda: self.proc.poll() is None)
        return port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def aiosmtpd_sink() -> ChildTarget:
    return ChildTarget(
        "bare aiosmtpd sink", lambda port: [sys.executable, __file__, "--serve-sink", str(port)]
    )


def postfix_sink() -> ChildTarget:
    # smtp-sink [options] host:port backlog; -u: drop root privileges to this user.
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    return ChildTarget("Postfix smtp-sink", lambda port: [SMTP_SINK, *user, f"127.0.0.1:{port}", "1024"])


# -- measuring ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    rate: float  # messages per second
    server_cpu_ms: float  # server CPU per 1,000 messages
    client_cpu_ms: float  # smtp-source CPU per 1,000 messages


def run_source(port: int, messages: int, sessions: int, size: int) -> tuple[float, float]:
    """Send ``messages`` with smtp-source; returns (messages per second, client CPU seconds)."""
    cmd = [
        SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-M", "bench.test", "-f", "sender@bench.test", "-t", "rcpt@bench.test", f"127.0.0.1:{port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(
            f"smtp-source failed against port {port}: {out.stderr.strip() or out.stdout.strip()}"
        )
    return messages / took, client_cpu


def measure(
    targets: list[Target], messages: int, sessions: int, size: int, repeat: int
) -> dict[str, list[float]]:
    results: dict[str, list[Run]] = {t.name: [] for t in targets}
    for _ in range(repeat):
        for t in targets:  # interleaved: a disturbance of the shared machine hits every target alike
            port = t.start()
            try:
                run_source(port, min(messages, 200), sessions, size)  # warm-up
                cpu0 = t.cpu_seconds()
                rate, client_cpu = run_source(port, messages, sessions, size)
                server_cpu = t.cpu_seconds() - cpu0
                results[t.name].append(Run(rate, server_cpu * 1e6 / messages, client_cpu * 1e6 / messages))
            finally:
                t.stop()
    return results


def table(results: dict[str, list[Run]], base: str, one: str, two: str) -> list[str]:
    best = {name: max(r.rate for r in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(r.server_cpu_ms for r in runs) for name, runs in results.items()}
    rows = [
        "| target | msg/s (best) | msg/s (median) | vs bare aiosmtpd | server CPU ms / 1k msgs "
        "| client CPU ms / 1k msgs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        rows.append(
            f"| {name} | {best[name]:,.0f} | {statistics.median(r.rate for r in runs):,.0f} "
            f"| {best[name] / best[base]:.2f}x | {cpu[name]:,.0f} "
            f"| {statistics.median(r.client_cpu_ms for r in runs):,.0f} |"
        )
    rows.append("")
    rows.append(
        f"- fake ESP, one process / bare aiosmtpd: **{best[one] / best[base]:.2f}x** msg/s (goal >= 0.9x);"
    )
    rows.append(f"  CPU per message: fake ESP / bare aiosmtpd = {cpu[one] / cpu[base]:.2f}")
    rows.append(f"- fake ESP, 2 processes / 1 process: **{best[two] / best[one]:.2f}x** msg/s (goal >= 1.5x)")
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    py = platform.python_version()
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {py}, load avg {load}"


def write_docs(lines: list[str]) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = "\n".join([SECTION, "", *lines]) + "\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + block + ("\n" + rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small counts: check that everything runs")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--sessions", type=int, default=16, help="parallel smtp-source connections")
    p.add_argument("--size", type=int, default=2048, help="message payload bytes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    p.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_sink is not None:
        serve_sink(args.serve_sink)
        return 0
    if not Path(SMTP_SOURCE).exists():
        raise SystemExit("smtp-source not found: apt-get install postfix")
    if args.smoke:
        args.messages, args.repeat = 500, 1
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
        work = Path(tmp)
        one, two = FakeEsp(1, work), FakeEsp(2, work)
        base = aiosmtpd_sink()
        targets: list[Target] = [one, base, postfix_sink(), two]
        started = datetime.datetime.now(datetime.UTC)
        results = measure(targets, args.messages, args.sessions, args.size, args.repeat)
    lines = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Client: smtp-source -d -s {args.sessions} -m {args.messages} -l {args.size} "
        f"({args.sessions} connections, {args.messages // args.sessions} messages each, "
        f"best of {args.repeat}).",
        "",
        *table(results, base.name, one.name, two.name),
        "",
        "On a busy machine msg/s measures each server's share of the CPUs as much as its cost: the "
        "server CPU column (user + system time of the server's processes, per 1,000 messages) is the "
        "comparison that does not depend on the load. Two processes can only beat one when a second "
        "core is free for them: each server runs in its own session, and with the kernel's autogroup "
        "scheduling a session (however many processes) gets one group's share of a busy machine.",
    ]
    print("\n".join(lines))
    if args.write_docs and not args.smoke:
        write_docs(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
