//! The shared rate gate against a real nats-server: gates on separate connections, each with
//! concurrent callers, never hand out more than R slots in any one-second window.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_bus::rate::rates_bucket;
use levensloop_bus::{Bus, RateGate, Slot};
use levensloop_testing::NatsServer;
use std::time::{Duration, SystemTime};

/// The most timestamps in any half-open one-second window `[t, t + 1s)`.
fn max_per_second(times: &mut [SystemTime]) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]).unwrap() >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gates_in_several_processes_never_exceed_the_rate() {
    const RATE: usize = 40;
    const GATES: usize = 4; // one connection each: as many processes
    const CALLERS: usize = 3; // concurrent callers per gate
    const SLOTS: usize = 8; // per caller
    let server = NatsServer::start().unwrap();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..GATES {
        let bus = Bus::connect(&server.url(), 1).await.unwrap();
        let gate = bus
            .rate_gate("gemeente.geboortepremie", RATE as f64)
            .await
            .unwrap();
        for _ in 0..CALLERS {
            let gate: RateGate = gate.clone();
            callers.spawn(async move {
                let mut out = Vec::new();
                for _ in 0..SLOTS {
                    let slot: Slot = gate.acquire().await.unwrap();
                    // When the caller would call the target.
                    out.push((slot, SystemTime::now()));
                }
                out
            });
        }
    }
    let mut slots = Vec::new();
    let mut calls = Vec::new();
    let mut max_attempts = 0;
    let mut lateness = Duration::ZERO;
    while let Some(out) = callers.join_next().await {
        for (slot, called) in out.unwrap() {
            assert!(called >= slot.at, "no call before its slot");
            max_attempts = max_attempts.max(slot.attempts);
            lateness = lateness.max(called.duration_since(slot.at).unwrap());
            slots.push(slot.at);
            calls.push(called);
        }
    }
    let total = GATES * CALLERS * SLOTS;
    assert_eq!(slots.len(), total);
    slots.sort();
    // The promise: slots at least 1/R apart, hence at most R in any second.
    for pair in slots.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]).unwrap() >= Duration::from_micros(25_250),
            "slots closer than 1/R: {pair:?}"
        );
    }
    assert!(max_per_second(&mut slots.clone()) <= RATE);
    // And the calls, made as soon as `acquire` returned, within the lateness budget.
    assert!(max_per_second(&mut calls.clone()) <= RATE);
    // The burst drained at the rate, not faster.
    let span = slots[total - 1].duration_since(slots[0]).unwrap();
    assert!(span >= Duration::from_micros(25_250 * (total as u64 - 1)));

    eprintln!(
        "rate gate: {total} slots at {RATE}/s over {span:?}; most slots in a second: {}; \
         most calls in a second: {}; worst call lateness {:?}; most CAS rounds for one slot: \
         {max_attempts}",
        max_per_second(&mut slots),
        max_per_second(&mut calls),
        lateness,
    );
}

#[tokio::test]
async fn an_idle_gate_grants_at_once_and_a_second_gate_continues_the_schedule() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let a = bus.rate_gate("diftar.close-account", 5.0).await.unwrap();
    let first = a.reserve().await.unwrap();
    assert!(
        first.remaining() < Duration::from_millis(100),
        "idle: no wait"
    );
    // A gate opened later, on another connection, sees the first one's reservation.
    let other = Bus::connect(&server.url(), 1).await.unwrap();
    let b = other.rate_gate("diftar.close-account", 5.0).await.unwrap();
    let second = b.reserve().await.unwrap();
    assert!(second.at.duration_since(first.at).unwrap() >= Duration::from_millis(202));
    // Another handler has its own schedule.
    let c = bus.rate_gate("diftar.refund-balance", 5.0).await.unwrap();
    assert!(c.reserve().await.unwrap().remaining() < Duration::from_millis(100));
    // A bad rate is refused.
    assert!(bus.rate_gate("diftar.close-account", 0.0).await.is_err());
}

#[tokio::test]
async fn the_gate_fails_closed_when_nats_is_down() {
    let mut server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    // A short request timeout, so the refusal comes quickly.
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_millis(500));
    let kv = rates_bucket(&js, 1).await.unwrap();
    let gate = RateGate::new(kv, "fpd.pension-stop", 50.0).unwrap();
    gate.reserve().await.unwrap();
    server.kill().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), gate.reserve())
        .await
        .expect("an answer, not a hang");
    assert!(err.is_err(), "no slot without the shared schedule");
    // And after the server is back, the schedule continues from the stored next free slot.
    server.restart().unwrap();
    let slot = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(slot) = gate.reserve().await {
                break slot;
            }
            // Retry backoff while the client reconnects.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(slot.attempts >= 1);
}
