//! A rate limit per handler, shared by every process that calls that handler's target system.
//!
//! A government system that accepts 20 requests per second must never receive more, however
//! many workers, gRPC handlers or webhook connectors deliver its tasks and however large the
//! backlog they drain. Each of them asks a [`RateGate`] for a [`Slot`] before it calls the
//! target, and calls no earlier than the slot's time.
//!
//! **How.** A JetStream key-value bucket, [`RATES_BUCKET`], holds one key per handler: the
//! next free slot time (Unix nanoseconds, decimal). [`RateGate::reserve`] reads it, takes
//! `max(next free, now)` as its slot and writes back `slot + interval` with a
//! compare-and-swap on the key's revision; a revision conflict means another process reserved
//! in between, so it reads again. The interval is `(1 s + LATENESS_BUDGET) / R`: R slots per
//! 1.01 s rather than per second, so that calls made up to [`LATENESS_BUDGET`] after their
//! slots still never put R + 1 calls into one second. [`RateGate::acquire`] sleeps until the
//! slot and, if it woke later than that budget (a stalled process), gives the slot up and
//! reserves another. So across every process:
//!
//! - no two slots of a handler are closer than `interval`, and any one-second window holds at
//!   most `⌈R⌉` slots (exactly `R` for a whole number), bursts included;
//! - a caller that calls the target as soon as `acquire` returns calls within the budget of
//!   its slot, so the *calls* too stay at or under `⌈R⌉` in any second;
//! - a backlog drains at R per 1.01 s, about 1% under the limit.
//!
//! Within one process the reservations of a gate (and its clones) are serialised, so they do
//! not fight each other over the revision; across processes each competing reservation costs
//! one more round. A reservation costs one JetStream round trip (two after a conflict): meant
//! for target systems' rates (tens to hundreds per second), not for thousands.
//!
//! **Caveats.**
//! - Slot times are wall-clock times of the machine that reserves them. Processes on machines
//!   whose clocks differ by `Δ` see each other's slots shifted by `Δ`: up to `⌈R·Δ⌉` calls
//!   more in a second can reach the target. With NTP (`Δ` of a few milliseconds, inside the
//!   lateness budget) that is nothing; without clock synchronisation the limit is only as good
//!   as the clocks. A clock stepped backwards on one machine makes it wait longer, not less.
//! - The gate sees the reservation, not the call: a caller that holds its permission and
//!   calls later than the budget (it was preempted between `acquire` returning and the call)
//!   can bunch with the next slot. [`Slot::late_by`] says how late a caller is.
//! - A slot reserved and not used (the caller died, found nothing to do, or woke too late)
//!   is capacity lost, never extra capacity.
//! - Every gate of one handler must use the same rate; the key stores the next free time,
//!   and each reservation adds its own gate's interval.
//! - When NATS is unavailable, [`RateGate::reserve`] fails and the caller must not call the
//!   target: the gate fails closed.

use crate::{Bus, BusError, check_handler, unavailable};
use async_nats::jetstream::{self, kv};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The key-value bucket of next free slot times, one key per handler.
pub const RATES_BUCKET: &str = "levensloop_rates";

/// How late after its slot a caller may still call; also the slack added to every second of
/// the schedule, so that this much lateness never adds a call to a second.
pub const LATENESS_BUDGET: Duration = Duration::from_millis(10);

/// Compare-and-swap rounds before a reservation gives up (only reachable when something
/// rewrites the key continuously).
const MAX_ATTEMPTS: u32 = 10_000;

/// The next free slot of one handler as this process last wrote it: saves the read before
/// the next compare-and-swap when no other process reserved in between.
#[derive(Debug, Clone, Copy)]
struct Known {
    revision: u64,
    next_free_ns: u64,
}

/// A shared rate limit for one handler. Cheap to clone; clones share the local
/// serialisation.
#[derive(Debug, Clone)]
pub struct RateGate {
    kv: kv::Store,
    handler: String,
    rate_per_second: f64,
    interval_ns: u64,
    known: Arc<Mutex<Option<Known>>>,
}

/// A reserved moment at which the holder may call the target once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The earliest time of the call.
    pub at: SystemTime,
    /// Compare-and-swap rounds it took (1 without contention).
    pub attempts: u32,
}

impl Slot {
    /// How long from now until the slot (zero when it has come).
    pub fn remaining(&self) -> Duration {
        self.at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// How long ago the slot came (zero before it).
    pub fn late_by(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.at)
            .unwrap_or(Duration::ZERO)
    }

    /// Sleeps until the slot.
    pub async fn wait(&self) {
        let remaining = self.remaining();
        if !remaining.is_zero() {
            tokio::time::sleep(remaining).await;
        }
    }
}

/// The spacing of slots for a rate: `(1 s + LATENESS_BUDGET) / R`, rounded up to the
/// nanosecond so that rounding never lets one slot more into a second. `None` for a rate that
/// is not a positive number.
pub fn slot_interval(rate_per_second: f64) -> Option<Duration> {
    if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
        return None;
    }
    let second = 1e9 + LATENESS_BUDGET.as_nanos() as f64;
    let ns = (second / rate_per_second).ceil();
    // A rate below one per ~584 years saturates; such a gate hands out one slot, ever.
    let ns = if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    };
    Some(Duration::from_nanos(ns.max(1)))
}

fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Opens the rates bucket, creating it on first use.
pub async fn rates_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, BusError> {
    crate::open_bucket(
        js,
        RATES_BUCKET,
        "Levensloop: next free call slot per handler (rate limits)",
        1,
        replicas,
    )
    .await
}

impl RateGate {
    /// A gate for `handler` at `rate_per_second` on an open rates bucket.
    pub fn new(kv: kv::Store, handler: &str, rate_per_second: f64) -> Result<Self, BusError> {
        check_handler(handler)?;
        let interval = slot_interval(rate_per_second).ok_or(BusError::InvalidHandler {
            name: handler.to_owned(),
            reason: "the rate limit must be a positive number of requests per second",
        })?;
        Ok(Self {
            kv,
            handler: handler.to_owned(),
            rate_per_second,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            known: Arc::new(Mutex::new(None)),
        })
    }

    pub fn handler(&self) -> &str {
        &self.handler
    }

    pub fn rate_per_second(&self) -> f64 {
        self.rate_per_second
    }

    /// The spacing of this gate's slots.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// Reserves the next free slot without waiting for it (a caller holding a task may want to
    /// keep it alive while it waits). Fails closed when NATS is unavailable.
    pub async fn reserve(&self) -> Result<Slot, BusError> {
        let mut known = self.known.lock().await;
        for attempt in 1..=MAX_ATTEMPTS {
            let (revision, next_free_ns) = match *known {
                Some(k) => (Some(k.revision), k.next_free_ns),
                None => self.read().await?,
            };
            let slot_ns = next_free_ns.max(to_ns(SystemTime::now()));
            let next_ns = slot_ns.saturating_add(self.interval_ns);
            let value = bytes::Bytes::from(next_ns.to_string());
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(&self.handler, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(unavailable(format!("rate gate {}", self.handler))(
                            Box::new(e),
                        )),
                    }),
                None => self
                    .kv
                    .create(&self.handler, value)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(unavailable(format!("rate gate {}", self.handler))(
                            Box::new(e),
                        )),
                    }),
            };
            match written {
                Ok(revision) => {
                    *known = Some(Known {
                        revision,
                        next_free_ns: next_ns,
                    });
                    return Ok(Slot {
                        at: from_ns(slot_ns),
                        attempts: attempt,
                    });
                }
                // Someone else reserved in between: read again.
                Err(None) => *known = None,
                Err(Some(e)) => {
                    *known = None;
                    return Err(e);
                }
            }
        }
        Err(BusError::Unavailable {
            context: format!("rate gate {}", self.handler),
            source: format!("no reservation after {MAX_ATTEMPTS} compare-and-swap rounds").into(),
        })
    }

    /// Reserves the next free slot and sleeps until it; call the target as soon as it
    /// returns. A slot overslept by more than [`LATENESS_BUDGET`] (the process was stalled) is
    /// given up for a new one, so the call is never late enough to crowd the next slots.
    pub async fn acquire(&self) -> Result<Slot, BusError> {
        loop {
            let slot = self.reserve().await?;
            slot.wait().await;
            if slot.late_by() <= LATENESS_BUDGET {
                return Ok(slot);
            }
            tracing::debug!(handler = %self.handler, late_by = ?slot.late_by(), "slot overslept, reserving another");
        }
    }

    /// The key's revision (`None`: absent, create it) and next free time.
    async fn read(&self) -> Result<(Option<u64>, u64), BusError> {
        let entry = self
            .kv
            .entry(&self.handler)
            .await
            .map_err(|e| unavailable(format!("rate gate {}", self.handler))(Box::new(e)))?;
        Ok(match entry {
            None => (None, 0),
            Some(entry) if entry.operation != kv::Operation::Put => (Some(entry.revision), 0),
            Some(entry) => {
                let next = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if next.is_none() {
                    // Overwritten by hand with something else: start again from now.
                    tracing::warn!(handler = %self.handler, "unreadable rate gate entry, reset");
                }
                (Some(entry.revision), next.unwrap_or(0))
            }
        })
    }
}

impl Bus {
    /// How many replicas the bus's streams and buckets have.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The shared rate limit of `handler` at `rate_per_second`.
    pub async fn rate_gate(
        &self,
        handler: &str,
        rate_per_second: f64,
    ) -> Result<RateGate, BusError> {
        let kv = rates_bucket(self.jetstream(), self.replicas).await?;
        RateGate::new(kv, handler, rate_per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_up_so_a_second_never_holds_an_extra_slot() {
        assert_eq!(slot_interval(20.0), Some(Duration::from_micros(50_500)));
        assert_eq!(slot_interval(3.0), Some(Duration::from_nanos(336_666_667)));
        assert_eq!(slot_interval(0.5), Some(Duration::from_millis(2_020)));
        let i = slot_interval(7.0).unwrap().as_nanos();
        assert!(
            i * 7 >= 1_010_000_000,
            "7 slots span a second and the lateness budget"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(slot_interval(bad), None, "{bad}");
        }
    }

    #[test]
    fn slot_times_round_trip_through_nanoseconds() {
        let t = SystemTime::now();
        assert_eq!(to_ns(from_ns(to_ns(t))), to_ns(t));
    }
}
