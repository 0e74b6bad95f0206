//! The `levensloop` binary against a real nats-server: the demo, run twice, shows once-only
//! appends and a durable subscription that resumes where the previous process stopped.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_testing::NatsServer;
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

#[test]
fn the_demo_is_once_only_and_resumes_its_subscription() {
    let server = NatsServer::start().unwrap();
    let url = server.url();

    let first = levensloop(&url, &["demo"]);
    assert_eq!(first.matches("accepted, version").count(), 4, "{first}");
    assert_eq!(
        first.matches("levensloop.v1.LifeEvent").count(),
        4,
        "{first}"
    );
    assert!(first.contains("birth of Lars Peeters in 44021"), "{first}");
    assert!(first.contains("4 new commit(s)"), "{first}");

    // A second process: the same events are recognised, and the subscription's
    // acknowledgements from the first process held, so nothing is delivered again.
    let second = levensloop(&url, &["demo"]);
    assert_eq!(
        second.matches("duplicate (already stored)").count(),
        4,
        "{second}"
    );
    assert!(!second.contains("accepted"), "{second}");
    assert!(second.contains("0 new commit(s)"), "{second}");
}

#[test]
fn store_read_prints_life_events_as_json() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let json = levensloop(&url, &["demo", "-o", "json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let saga = first["saga_id"].as_str().unwrap();
    assert_eq!(first["event_id"], "demo-birth-1");

    let out = levensloop(
        &url,
        &["store", "read", &format!("lifeevent-{saga}"), "-o", "json"],
    );
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["event_type"], "levensloop.v1.LifeEvent");
    assert_eq!(event["data"]["birth"]["child"]["insz"], "26011400164");
    assert_eq!(event["data"]["type"], "be.vlaanderen.levensloop.birth.v1");

    let missing = Command::new(env!("CARGO_BIN_EXE_levensloop"))
        .args(["--nats-url", &url, "store", "read", "lifeevent-nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}
