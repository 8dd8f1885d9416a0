"""``mailstorm worker``: join a running load as a remote Locust worker, over Locust's own protocol.

The master (started by a run whose ``load.remote_workers`` > 0, listening on ``load.master_bind`` and
``load.master_port``) forwards the whole load spec with the spawn message, so the worker needs only the
master's address. Its ledger goes two ways: a local spool file (``--spool``, durable if the master goes
away) and batches shipped to the master as Locust custom messages, which the master appends to
``load-<index>.jsonl`` in the run's ledger directory. Locust runs in a child process: this command (part
of the ``mailstorm`` dispatcher) never imports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from mailstorm import PYTHON_M
from mailstorm.errors import UserError
from mailstorm.netguard import check_address
from mailstorm.scenarios.launch import (
    ALLOW_REMOTE_ENV,
    LEDGER_DIR_ENV,
    LOCUSTFILE,
    PROJECT_ROOT,
    SPOOL_DIR_ENV,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="join a running load as a remote Locust worker",
        description="Join a running mailstorm load (its Locust master); the master sends the load spec.",
    )
    p.add_argument("--master", required=True, metavar="HOST", help="address of the load's Locust master")
    p.add_argument("--master-port", type=int, default=5557, metavar="PORT", help="its port (default 5557)")
    p.add_argument(
        "--spool", default="mailstorm-spool", metavar="DIR", help="local copy of this worker's ledger"
    )
    p.add_argument(
        "--allow-remote", action="store_true", help="allow a master (and targets) off this machine"
    )
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    if not 1 <= args.master_port <= 65535:
        raise UserError(f"--master-port {args.master_port} is not a TCP port (1-65535)")
    check_address(args.master, allow_remote=args.allow_remote, what="--master")
    env = {k: v for k, v in os.environ.items() if k != LEDGER_DIR_ENV}  # ship mode, not a shared dir
    env[SPOOL_DIR_ENV] = os.path.abspath(args.spool)
    env[ALLOW_REMOTE_ENV] = "1" if args.allow_remote else "0"  # the targets the master sends are checked too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        *PYTHON_M,
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        args.master,
        "--master-port",
        str(args.master_port),
    ]
    return subprocess.call(cmd, env=env)
