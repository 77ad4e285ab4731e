#!/usr/bin/env bash
# Installs what building and testing tern needs on Debian/Ubuntu, skipping
# whatever is already present. Sourced by scripts/run.sh and scripts/test.sh.
#   setup.sh build   - system packages for the build (C toolchain, clang for RocksDB bindings,
#                      Node.js and npm for the web UI)
#   setup.sh test    - the above, plus the test clients (OpenTelemetry Python
#                      SDK, Prometheus as a remote_write sender and PromQL reference)
#                      and Chromium for the browser tests of the web UI
#   setup.sh bench   - the build packages, plus Prometheus and VictoriaMetrics
#                      for the benchmark's compare mode
set -euo pipefail

what="${1:-build}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in build-essential pkg-config clang libclang-dev; do
  installed "$p" || missing+=("$p")
done
# The cargo build compiles the web UI (build.rs runs npm).
command -v npm >/dev/null || missing+=(nodejs npm)
if [ "$what" = test ]; then
  # python3 and pip may come from elsewhere (pyenv); only ask apt when absent.
  command -v python3 >/dev/null || missing+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  command -v prometheus >/dev/null || missing+=(prometheus)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
fi
if [ "$what" = bench ]; then
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "installing system packages: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: not a Debian/Ubuntu system; make sure these are installed: ${missing[*]}" >&2
  fi
fi

if [ "$what" = test ]; then
  req="$here/tests/python/requirements.txt"
  if ! python3 - "$req" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    if md.version(name) != version:
        sys.exit(1)
PY
  then
    echo "installing python test clients from $req" >&2
    python3 -m pip install --quiet --disable-pip-version-check -r "$req" 2>&1 \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r "$req"
  fi
fi
