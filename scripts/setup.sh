#!/usr/bin/env bash
# Installs mailstorm on a fresh machine into ./.venv.
#   scripts/setup.sh          the tool and what a demo run needs
#   scripts/setup.sh --test   also the system packages the tests use (Postfix, swaks with the Perl
#                             modules it needs for TLS and AUTH, docker.io, chromium, prometheus,
#                             prometheus-alertmanager, iproute2) and starts dockerd
#                             when it is not running
# Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if (( want_test )); then
    need=()
    command -v postfix >/dev/null || [[ -x /usr/sbin/postfix ]] || need+=(postfix)
    command -v swaks >/dev/null || need+=(swaks)
    # The pool target puts a real HAProxy in front of its members (tests/harness/test_pool.py).
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
    # swaks --tls needs Net::SSLeay and IO::Socket::SSL, --auth needs Authen::SASL (Debian: Recommends,
    # which --no-install-recommends leaves out).
    # Postfix's SASL client (relay_auth) needs libsasl2-modules for PLAIN and LOGIN.
    for pkg in libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl libsasl2-modules; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v chromium >/dev/null || need+=(chromium)
    # The alerts tests start a real Prometheus (promtool comes with it) and Alertmanager.
    command -v prometheus >/dev/null || need+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
    # The network-namespace tests (off-loopback security checks, a run across hosts) need iproute2's ip.
    command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || need+=(iproute2)
    if (( ${#need[@]} )); then
        echo "setup: apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        echo "postfix postfix/main_mailer_type select Local only" | as_root debconf-set-selections
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # The system Postfix is not used (tests start their own throwaway instances); keep port 25 free.
    as_root postfix stop >/dev/null 2>&1 || true
    # Nor are the system Prometheus and Alertmanager services (runs start their own on free ports).
    as_root systemctl stop prometheus prometheus-alertmanager >/dev/null 2>&1 || true
    if ! docker info >/dev/null 2>&1; then
        echo "setup: starting dockerd"
        as_root bash -c 'nohup dockerd >/var/log/mailstorm-dockerd.log 2>&1 &'
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
        docker info >/dev/null 2>&1 || echo "setup: dockerd did not start; docker tests will be skipped"
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if (( want_test )); then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi
echo "setup: done (.venv/bin/mailstorm)"
