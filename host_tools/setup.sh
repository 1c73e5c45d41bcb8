#!/usr/bin/env bash
# One-command set-up for a fresh machine (called by `make setup`; idempotent).
# - .venv with the project and its dev references (pip install -e .[dev]);
# - Debian packages the tests and tools use: mosquitto (MQTT broker), rabbitmq-server (the
#   second broker engine, `--engine rabbitmq`; optional: its tests skip without it), socat (REPL pty
#   bridge), tshark (Wireshark's GBCS dissector, the independent oracle), nodejs + npm,
#   gcc-multilib (the one-off 32-bit frozen-code measurement, bench/heap32/frozen32.py);
# - .node/: the 32-bit webassembly MicroPython from npm, for the heap gauge (docs/memory.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing the project into .venv (pip install -e .[dev])"
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'

need=()
optional=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v text2pcap >/dev/null 2>&1 || need+=(wireshark-common)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# rabbitmq-server (3.10 on Debian 12, with Erlang: ~14 s to install here) is run by
# `ppmid broker` as its own process; the system service it brings is never used
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || optional+=(rabbitmq-server)
compgen -G '/usr/lib/gcc/x86_64-linux-gnu/*/32/crtbegin.o' >/dev/null || [ "$(uname -m)" != x86_64 ] || need+=(gcc-multilib)
if [ ${#optional[@]} -gt 0 ] && ! { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }; then
    echo "setup: optional Debian packages not installed: ${optional[*]} (sudo apt-get install ${optional[*]})" >&2
    optional=()
fi
need+=("${optional[@]}")
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "setup: missing Debian packages: ${need[*]}" >&2
        echo "setup: install them with: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
# the heap gauge's 32-bit MicroPython (bench/heap32): pinned, project-local, no node_modules in git
WASM_PKG=@micropython/micropython-webassembly-pyscript
WASM_VERSION=1.27.0
if [ "$(node -p "try{require('./.node/node_modules/$WASM_PKG/package.json').version}catch(e){''}")" != "$WASM_VERSION" ]; then
    echo "setup: npm install --prefix .node $WASM_PKG@$WASM_VERSION"
    npm install --silent --no-audit --no-fund --prefix .node "$WASM_PKG@$WASM_VERSION"
fi
.venv/bin/micropython -c "import sys; print('setup: micropython', sys.implementation.version)"
# the HTML reports' plots (pyproject dependency; checked here because a report is drawn only at the end of a run)
.venv/bin/python -c "import matplotlib; print('setup: matplotlib', matplotlib.__version__)"
echo "setup: done"
