# Levensloop: the commands a person types. Run them through `infra/just RECIPE` on a fresh
# machine: it installs the pinned tools (nats-server, just) into .tools/bin first.

set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() / ".tools/bin" + ":" + env_var("PATH")

# The local nats-server's port and data (kept under the project, in .data/).
nats_port := env_var_or_default("LEVENSLOOP_NATS_PORT", "14222")
nats_url := "nats://127.0.0.1:" + nats_port
gateway_addr := env_var_or_default("LEVENSLOOP_GATEWAY_GRPC", "127.0.0.1:50051")
handlers_addr := env_var_or_default("LEVENSLOOP_HANDLERS_GRPC", "127.0.0.1:50052")
operations_addr := env_var_or_default("LEVENSLOOP_OPERATIONS_GRPC", "127.0.0.1:50053")
dashboard_addr := env_var_or_default("LEVENSLOOP_OPERATIONS_HTTP", "127.0.0.1:8080")

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

# The main job: start nats-server, the gateway, the handlers service, the orchestrator and the
# workers; publish a birth, a death, a move and a driving exam and watch their sagas run to
# completion; then act as a registry for a few seconds and show what the simulated target
# systems did, and where the operators' dashboard is.
up: nats-up build gateway-up handlers-up orchestrator-up workers-up integrator-up operations-up demo simulate effects sagas
    @echo
    @echo "The operators' dashboard: http://{{dashboard_addr}}"

# Build the release binaries once (the gateway, the `levensloop` command line).
build:
    cargo build --release --quiet -p levensloop-gateway -p levensloop-handlers -p levensloop-orchestrator -p levensloop-workers -p levensloop-operations -p levensloop-cli -p library-integrator

# Start the ingest gateway in the background (gRPC on 127.0.0.1:50051, NATS on the local
# server); its log is .data/gateway.log.
gateway-up: nats-up build
    @bash infra/service.sh start gateway "gateway: gRPC on" target/release/levensloop-gateway --nats-url {{nats_url}} --grpc-addr {{gateway_addr}}

# Start the handlers service in the background (HandlerService on 127.0.0.1:50052: integrators
# register handlers and serve their tasks; webhooks); its log is .data/handlers.log.
handlers-up: nats-up build
    @bash infra/service.sh start handlers "handlers: gRPC on" target/release/levensloop-handlers --nats-url {{nats_url}} --grpc-addr {{handlers_addr}}

# Run the example integrator (examples/library-integrator) in the foreground: it registers
# `gent.library.close-account` for deaths in Gent and closes library accounts as tasks come
# (e.g. `infra/just integrator --effects .data/library.jsonl`).
integrator *ARGS: handlers-up
    target/release/library-integrator --handlers-url http://{{handlers_addr}} {{ARGS}}

# Start the example integrator in the background: Gent's library closes the accounts of the
# deceased of Gent (the demo's death shows its step); effects in .data/library.jsonl, log in
# .data/library-integrator.log.
integrator-up: handlers-up
    @bash infra/service.sh start library-integrator "library-integrator: serving" target/release/library-integrator --handlers-url http://{{handlers_addr}} --effects .data/library.jsonl

# Start the orchestrator in the background; its log is .data/orchestrator.log. Locally it
# follows the shared clock offset (`--time-travel`), so the demo can let months-long waits end.
orchestrator-up: nats-up build
    @bash infra/service.sh start orchestrator "orchestrator: running" target/release/levensloop-orchestrator --nats-url {{nats_url}} --time-travel

# Start the built-in workers (simulated target systems, 20-50 ms each, and a clerk who answers
# the human work lists) in the background; their log is .data/workers.log.
workers-up: nats-up build
    @bash infra/service.sh start workers "workers: serving" target/release/levensloop-workers --nats-url {{nats_url}} --clerk

# Start the operations service (read model in .data/operations.db, OperationsService on
# {{operations_addr}}, the web dashboard on http://{{dashboard_addr}}) in the background; its
# log is .data/operations.log.
operations-up: nats-up build
    @bash infra/service.sh start operations "operations: dashboard on" target/release/levensloop-operations --nats-url {{nats_url}} --grpc-addr {{operations_addr}} --http-addr {{dashboard_addr}} --database-url sqlite:.data/operations.db

# The operators' view: the latest sagas and the counts by status and type.
sagas:
    @target/release/levensloop --operations-url http://{{operations_addr}} sagas list --limit 10
    @echo
    @target/release/levensloop --operations-url http://{{operations_addr}} stats

# What the simulated target systems did: effects recorded per handler, once per idempotency key.
effects:
    @echo "effects recorded by the workers (per handler):"
    @RUST_LOG=warn target/release/levensloop-workers --nats-url {{nats_url}} ledger
    @echo "library accounts closed by the example integrator: $(cat .data/library.jsonl 2>/dev/null | wc -l)"

# Stop the services and nats-server.
down:
    @bash infra/service.sh stop operations
    @bash infra/service.sh stop library-integrator
    @bash infra/service.sh stop workers
    @bash infra/service.sh stop orchestrator
    @bash infra/service.sh stop handlers
    @bash infra/service.sh stop gateway
    @just nats-down

# Publish a birth (in Gent: watch it become a granted birth premium), a death, a move and a
# driving exam through the gateway, and print each saga's timeline until all have completed.
demo *ARGS: gateway-up orchestrator-up workers-up
    target/release/levensloop --nats-url {{nats_url}} demo --gateway-url http://{{gateway_addr}} {{ARGS}}

# Act as a registry: realistic life events through the gateway, with duplicates and defects
# (e.g. `infra/just simulate --via nats --count 10000 --rate 500`).
simulate *ARGS: gateway-up
    target/release/levensloop --nats-url {{nats_url}} simulate --gateway-url http://{{gateway_addr}} --count 500 --rate 250 --duplicates 0.1 --invalid 0.05 {{ARGS}}

# Publish one life event (birth, death, move, driving-exam) through the gateway.
publish KIND *ARGS: gateway-up
    target/release/levensloop --nats-url {{nats_url}} publish {{KIND}} --gateway-url http://{{gateway_addr}} {{ARGS}}

# Run every test (unit, contract, end-to-end, fault injection) against real nats-servers.
test: tools
    # The crash suites run the service binaries as real processes: build them first.
    cargo build --workspace --bins --quiet
    cargo nextest run --workspace --all-targets --no-fail-fast

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Event store vs raw JetStream append rate, standard and strict profile; prints one JSON line.
bench-store *ARGS: tools
    cargo run --release --quiet -p levensloop-bench -- store {{ARGS}}

# Life events per second through the gateway (gRPC stream and NATS) vs raw JetStream; prints
# one JSON line.
bench-ingest *ARGS: tools
    cargo run --release --quiet -p levensloop-bench -- ingest {{ARGS}}

# Sagas end to end: 20,000 life events through gateway → orchestrator → instant workers (real
# processes, one nats-server), then 10,000 at half the rate for latency; prints one JSON line.
bench *ARGS: tools
    cargo build --release --quiet -p levensloop-gateway -p levensloop-orchestrator -p levensloop-workers -p levensloop-bench
    target/release/levensloop-bench sagas {{ARGS}}

# Tasks through 4 integrators' gRPC workers (the handlers service's Work streams) against the
# built-in workers: tasks per second and latency per step; prints one JSON line.
bench-handlers *ARGS: tools
    cargo build --release --quiet -p levensloop-handlers -p levensloop-workers -p levensloop-bench
    target/release/levensloop-bench handlers {{ARGS}}

# Fuzz the gateway's decoders and validator harder than the test suite does (property-based,
# FUZZ_CASES per target, default 100,000; the test suite runs 2,000).
fuzz:
    FUZZ_CASES=${FUZZ_CASES:-100000} cargo test --release -p levensloop-gateway --lib never_panic

# Remove the local data (.data/); stops nats-server first.
clean-data: down
    rm -rf .data
