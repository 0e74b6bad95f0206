//! The `levensloop-workers` binary as a real process: killed with SIGKILL after its effect
//! and before its answer, the task is redelivered and answered from the ledger (one effect);
//! stopped with SIGTERM mid-task, it finishes the task, answers and exits cleanly.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use levensloop_bus::Bus;
use levensloop_sagas::Catalog;
use levensloop_testing::NatsServer;
use levensloop_workers::{Ledger, WorkerEvent, Workers, WorkersConfig};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use uuid::Uuid;

struct Process {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

/// Starts the binary and waits until it serves.
async fn spawn(url: &str, args: &[&str]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_levensloop-workers"))
        .args(["--nats-url", url])
        .args(args)
        .env("RUST_LOG", "levensloop_workers=debug")
        // A port of its own: tests run side by side.
        .env("LEVENSLOOP_WORKER_METRICS", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut process = Process {
        stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
        stderr: BufReader::new(child.stderr.take().unwrap()).lines(),
        child,
    };
    let line = process.stdout_line_containing("workers: serving").await;
    assert!(line.contains("serving 1 handlers"), "{line}");
    process
}

impl Process {
    async fn stdout_line_containing(&mut self, needle: &str) -> String {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let line = self.stdout.next_line().await.unwrap().expect("stdout open");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} on stdout"))
    }

    /// Waits for a log line (the binary logs to stderr).
    async fn log_line_containing(&mut self, needle: &str) -> String {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let line = self.stderr.next_line().await.unwrap().expect("stderr open");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the log"))
    }
}

#[tokio::test]
async fn a_worker_process_killed_after_its_effect_leaves_one_effect() {
    let server = NatsServer::start().unwrap();
    let h = "test.kill";
    let mut doomed = spawn(
        &server.url(),
        &[
            "--handlers",
            h,
            "--handler-config",
            "test.kill:stall_ms=60000",
            "--ack-wait-ms",
            "800",
            "--instance",
            "doomed",
        ],
    )
    .await;
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let t = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&t).await.unwrap();
    doomed.log_line_containing("effect recorded").await;
    doomed.child.kill().await.unwrap(); // SIGKILL

    let survivor = Workers::start(
        bus.clone(),
        &Catalog::builtin().unwrap(),
        WorkersConfig {
            ack_wait: Duration::from_millis(800),
            ..config(&[h], "survivor")
        },
    )
    .await
    .unwrap();
    let mut events = survivor.events();
    let replayed = wait_for(&mut events, |e| match e {
        WorkerEvent::Answered {
            task_id, replayed, ..
        } if *task_id == t.task_id => Some(*replayed),
        _ => None,
    })
    .await;
    assert!(replayed, "answered from the ledger");
    let results_consumer = bus.results_consumer().await.unwrap();
    let result = results(&results_consumer, 1).await.remove(0);
    assert_eq!(result.task_id, t.task_id);
    let effects = survivor.ledger().effects(h).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].worker, "doomed");
    survivor.shutdown().await;
}

#[tokio::test]
async fn sigterm_finishes_the_task_in_progress_and_exits_cleanly() {
    let server = NatsServer::start().unwrap();
    let h = "test.term";
    let mut worker = spawn(
        &server.url(),
        &["--handlers", h, "--latency-ms", "500", "--jitter-ms", "0"],
    )
    .await;
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let t = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&t).await.unwrap();
    worker.log_line_containing("calling the target").await;
    let pid = worker.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let line = worker.stdout_line_containing("workers: stopped").await;
    assert!(line.contains("completed 1"), "{line}");
    let exit = tokio::time::timeout(TIMEOUT, worker.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    let results_consumer = bus.results_consumer().await.unwrap();
    let result = results(&results_consumer, 1).await.remove(0);
    assert_eq!(result.task_id, t.task_id);
    assert!(completed(&result).is_some());
    let ledger = Ledger::open(bus.client().clone(), 1).await.unwrap();
    assert_eq!(ledger.count(h).await.unwrap(), 1);
}

#[tokio::test]
async fn the_ledger_subcommand_prints_counts() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let workers = Workers::start(
        bus.clone(),
        &Catalog::builtin().unwrap(),
        config(&["test.print"], "w"),
    )
    .await
    .unwrap();
    let results_consumer = bus.results_consumer().await.unwrap();
    let saga = Uuid::new_v4();
    bus.publish_task(&task("test.print", saga, "step", 1, false))
        .await
        .unwrap();
    results(&results_consumer, 1).await;
    workers.shutdown().await;

    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_levensloop-workers"))
            .args(["--nats-url", &server.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let counts: serde_json::Value =
        serde_json::from_str(run(vec!["ledger".into()]).trim()).unwrap();
    assert_eq!(counts, serde_json::json!({"test.print": 1}));
    let effects = run(vec!["ledger".into(), "--saga".into(), saga.to_string()]);
    let effect: serde_json::Value = serde_json::from_str(effects.trim()).unwrap();
    assert_eq!(effect["handler"], "test.print");
    assert_eq!(effect["saga_id"], saga.to_string());
}
