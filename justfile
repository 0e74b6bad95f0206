# Levensloop: the commands a person types. Run them through `infra/just RECIPE` on a fresh
# machine: it installs the pinned tools (nats-server, just) into .tools/bin first.

set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() / ".tools/bin" + ":" + env_var("PATH")

# The local nats-server's port and data (kept under the project, in .data/).
nats_port := env_var_or_default("LEVENSLOOP_NATS_PORT", "14222")
nats_url := "nats://127.0.0.1:" + nats_port

# List the recipes.
default:
    @just --list

# Install the pinned tools into .tools/bin (nats-server 2.12, just).
tools:
    bash infra/install-tools.sh

# Start the local nats-server (standard profile, data in .data/nats) in the background.
nats-up: tools
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p .data
    if [ -f .data/nats.pid ] && kill -0 "$(cat .data/nats.pid)" 2>/dev/null; then
        echo "nats-server already running (pid $(cat .data/nats.pid)) on {{nats_url}}"
        exit 0
    fi
    sed "s|@PORT@|{{nats_port}}|; s|@DATA@|$PWD/.data/nats|" infra/nats/standard.conf > .data/nats.conf
    # Detached, with no hold on our output, so `just up | tail` and CI pipes can close.
    nohup nats-server -c .data/nats.conf -l .data/nats.log -P .data/nats.pid >/dev/null 2>&1 &
    for _ in $(seq 100); do
        grep -q "Server is ready" .data/nats.log 2>/dev/null && break
        sleep 0.1
    done
    grep -q "Server is ready" .data/nats.log || { echo "nats-server did not start; see .data/nats.log" >&2; exit 1; }
    echo "nats-server $(nats-server --version | awk '{print $2}') on {{nats_url}}, data in .data/nats"

# Stop the local nats-server.
nats-down:
    @if [ -f .data/nats.pid ]; then kill "$(cat .data/nats.pid)" 2>/dev/null || true; rm -f .data/nats.pid; echo "nats-server stopped"; fi

# The main job: start nats-server and run the demo against it.
up: nats-up demo

# Append and read back sample life events through the event store, on the local nats-server.
demo: nats-up
    cargo run --release --quiet -p levensloop-cli -- --nats-url {{nats_url}} demo

# Run every test (unit, contract, end-to-end, fault injection) against real nats-servers.
test: tools
    cargo nextest run --workspace --all-targets --no-fail-fast

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Event store vs raw JetStream append rate, standard and strict profile; prints one JSON line.
bench-store *ARGS: tools
    cargo run --release --quiet -p levensloop-bench -- store {{ARGS}}

# Remove the local data (.data/); stops nats-server first.
clean-data: nats-down
    rm -rf .data
