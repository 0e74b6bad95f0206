//! The `levensloop demo` against real processes (nats-server, the gateway, the orchestrator
//! with time travel, the workers with a clerk): the four sample sagas run to completion, the
//! birth premium is granted, the months-long waits end because the demo moves the sagas'
//! clock, and a second run with the same people is once-only.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_testing::{NatsServer, ServiceProcess, workspace_binary};
use std::net::TcpListener;
use std::process::Command;

fn levensloop(url: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_levensloop"))
        .arg("--nats-url")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "levensloop {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

struct System {
    server: NatsServer,
    gateway_url: String,
    _services: Vec<ServiceProcess>,
}

fn system() -> System {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let logs = server.dir().join("logs");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let grpc = format!("127.0.0.1:{port}");
    let gateway = ServiceProcess::start(
        "gateway",
        workspace_binary("levensloop-gateway").unwrap(),
        ["--nats-url", &url, "--grpc-addr", &grpc],
        "gateway: gRPC on",
        &logs,
    )
    .unwrap();
    let orchestrator = ServiceProcess::start(
        "orchestrator",
        workspace_binary("levensloop-orchestrator").unwrap(),
        ["--nats-url", &url, "--time-travel"],
        "orchestrator: running",
        &logs,
    )
    .unwrap();
    let workers = ServiceProcess::start(
        "workers",
        workspace_binary("levensloop-workers").unwrap(),
        [
            "--nats-url",
            &url,
            "--clerk",
            "--latency-ms",
            "1",
            "--jitter-ms",
            "2",
        ],
        "workers: serving",
        &logs,
    )
    .unwrap();
    System {
        server,
        gateway_url: format!("http://{grpc}"),
        _services: vec![gateway, orchestrator, workers],
    }
}

#[test]
fn the_demo_runs_four_sagas_to_completion_once() {
    let system = system();
    let url = system.server.url();
    let demo = |output: &str| {
        levensloop(
            &url,
            &[
                "demo",
                "--gateway-url",
                &system.gateway_url,
                "--seed",
                "7",
                "-o",
                output,
            ],
        )
    };

    let table = demo("table");
    assert_eq!(table.matches(": accepted → saga").count(), 4, "{table}");
    assert!(
        table.contains("the municipal birth premium: granted, case GEMEENTE-"),
        "{table}"
    );
    // The waits of months ended because the demo moved the sagas' clock.
    assert!(table.contains("moving their clock forward"), "{table}");
    assert!(table.contains("succeeded    boekstart-package"), "{table}");
    assert!(table.contains("succeeded    inheritance-check"), "{table}");
    assert_eq!(table.matches("— COMPLETED after").count(), 4, "{table}");

    // The same people again: every event is a duplicate of the same saga, nothing runs twice.
    let json = demo("json");
    let sagas: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sagas.len(), 4, "{json}");
    for saga in &sagas {
        assert_eq!(saga["status"], "COMPLETED", "{saga}");
        assert!(
            table.contains(saga["saga_id"].as_str().unwrap()),
            "a second run answered another saga: {saga}\n{table}"
        );
    }
    let ledger = Command::new(workspace_binary("levensloop-workers").unwrap())
        .args(["--nats-url", &url, "ledger"])
        .output()
        .unwrap();
    let effects: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    assert_eq!(effects["gemeente.geboortepremie"], 1, "{effects}");
    assert_eq!(effects["bibliotheek.boekstart"], 2, "{effects}");

    // The stored life event reads back as JSON.
    let birth = sagas.iter().find(|s| s["life_event"] == "birth").unwrap();
    let out = levensloop(
        &url,
        &[
            "store",
            "read",
            &format!("lifeevent-{}", birth["saga_id"].as_str().unwrap()),
            "-o",
            "json",
        ],
    );
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["event_type"], "levensloop.v1.LifeEvent");
    assert_eq!(
        event["data"]["birth"]["registeredAddress"]["municipalityNisCode"]
            .as_str()
            .or(event["data"]["birth"]["registered_address"]["municipality_nis_code"].as_str()),
        Some("44021"),
        "{event}"
    );
    assert_eq!(event["data"]["type"], "be.vlaanderen.levensloop.birth.v1");

    let missing = Command::new(env!("CARGO_BIN_EXE_levensloop"))
        .args(["--nats-url", &url, "store", "read", "lifeevent-nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}
