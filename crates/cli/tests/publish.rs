//! `levensloop publish` and `levensloop simulate` against a real gateway and nats-server,
//! over both doors.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_gateway::server::{GatewayConfig, RunningGateway, start};
use levensloop_testing::NatsServer;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::process::Command;

async fn gateway(server: &NatsServer) -> RunningGateway {
    start(GatewayConfig {
        nats_url: server.url(),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..GatewayConfig::default()
    })
    .await
    .unwrap()
}

/// Runs the binary; returns its stdout as JSON lines.
async fn levensloop(server: &NatsServer, gateway: &RunningGateway, args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_levensloop"))
        .arg("--nats-url")
        .arg(server.url())
        .args(args)
        .args([
            "--gateway-url",
            &format!("http://{}", gateway.grpc_addr),
            "-o",
            "json",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "levensloop {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_one_event_of_each_kind_over_each_door() {
    let server = NatsServer::start().unwrap();
    let gw = gateway(&server).await;
    for kind in ["birth", "death", "move", "driving-exam"] {
        for via in ["grpc", "nats"] {
            let out = levensloop(&server, &gw, &["publish", kind, "--via", via]).await;
            assert_eq!(out.len(), 1);
            assert_eq!(
                out[0]["outcome"], "ACCEPTED",
                "{kind} over {via}: {}",
                out[0]
            );
            assert!(!out[0]["saga_id"].as_str().unwrap().is_empty());
        }
    }
    // The same event (same seed, same id) again over the other door: a duplicate with the
    // same saga id.
    let args = ["publish", "birth", "--seed", "42", "--id", "cli-birth-42"];
    let first = levensloop(&server, &gw, &[&args[..], &["--via", "grpc"]].concat()).await;
    let again = levensloop(&server, &gw, &[&args[..], &["--via", "nats"]].concat()).await;
    assert_eq!(first[0]["outcome"], "ACCEPTED");
    assert_eq!(again[0]["outcome"], "DUPLICATE");
    assert_eq!(first[0]["saga_id"], again[0]["saga_id"]);
    // A wrong INSZ is refused with the precise reason.
    let bad = levensloop(&server, &gw, &["publish", "birth", "--insz", "26101512373"]).await;
    assert_eq!(bad[0]["outcome"], "REJECTED", "{}", bad[0]);
    assert_eq!(bad[0]["reason_code"], "INSZ_CHECK_DIGITS", "{}", bad[0]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_counts_every_answer_and_is_once_only_across_doors() {
    let server = NatsServer::start().unwrap();
    let gw = gateway(&server).await;
    let run = |via: &'static str| {
        let server = &server;
        let gw = &gw;
        async move {
            let args = [
                "simulate",
                "--via",
                via,
                "--rate",
                "0",
                "--count",
                "600",
                "--seed",
                "7",
                "--duplicates",
                "0.1",
                "--invalid",
                "0.1",
            ];
            levensloop(server, gw, &args).await.pop().unwrap()
        }
    };
    let first = run("grpc").await;
    let (accepted, duplicate, rejected) = (
        count(&first, "accepted"),
        count(&first, "duplicate"),
        count(&first, "rejected"),
    );
    assert_eq!(count(&first, "sent"), 600);
    assert_eq!(accepted + duplicate + rejected, 600, "{first}");
    // 10 % duplicates and 10 % broken events, give or take the dice.
    assert!((25..=100).contains(&duplicate), "{first}");
    assert!((25..=100).contains(&rejected), "{first}");
    assert!(
        first["rejected_by_reason"].as_object().unwrap().len() >= 3,
        "several kinds of defect: {first}"
    );

    // The same registry replaying the same events over NATS: nothing new is stored.
    let replay = run("nats").await;
    assert_eq!(count(&replay, "sent"), 600);
    assert_eq!(count(&replay, "accepted"), 0, "{replay}");
    assert_eq!(
        count(&replay, "duplicate"),
        accepted + duplicate,
        "{replay}"
    );
    assert_eq!(count(&replay, "rejected"), rejected, "{replay}");
    gw.shutdown().await;
}
