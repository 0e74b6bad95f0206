//! The orchestrator's clock: the engine is given "now" as an input, and this decides what
//! "now" is.
//!
//! - [`Clock::system`]: the wall clock (production).
//! - [`Clock::scaled`]: time running `scale` times faster than the wall clock from the moment
//!   it is created, for demos where a six-month wait should pass in seconds. Every date a
//!   saga stores is on this clock, so use it only on a store of its own.
//! - [`Clock::manual`]: time that moves only when a test calls [`Clock::advance`].
//! - [`Clock::offset`]: the wall clock plus an offset that only moves forward (time travel
//!   for a demo or a test environment: waits of months end when the offset jumps, while
//!   retries and timeouts keep real time). The orchestrator binary follows the shared
//!   offset of `levensloop_bus::ClockOffset` when started with `--time-travel`.
//!
//! Timers sleep until [`Clock::real_wait`] has passed or the clock says it has changed.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug)]
enum Kind {
    System,
    Scaled {
        real_start: Instant,
        start: DateTime<Utc>,
        scale: f64,
    },
    Manual(Mutex<DateTime<Utc>>),
    Offset(Mutex<chrono::Duration>),
}

#[derive(Debug, Clone)]
pub struct Clock {
    kind: Arc<Kind>,
    changed: watch::Sender<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    fn with(kind: Kind) -> Self {
        Self {
            kind: Arc::new(kind),
            changed: watch::Sender::new(0),
        }
    }

    pub fn system() -> Self {
        Self::with(Kind::System)
    }

    /// Time `scale` times faster than the wall clock, starting now.
    pub fn scaled(scale: f64) -> Self {
        Self::with(Kind::Scaled {
            real_start: Instant::now(),
            start: Utc::now(),
            scale: scale.max(1.0),
        })
    }

    pub fn manual(start: DateTime<Utc>) -> Self {
        Self::with(Kind::Manual(Mutex::new(start)))
    }

    /// The wall clock plus `offset` (see [`Clock::set_offset`]).
    pub fn offset(offset: chrono::Duration) -> Self {
        Self::with(Kind::Offset(Mutex::new(
            offset.max(chrono::Duration::zero()),
        )))
    }

    /// Moves an offset clock's offset forward to `offset` and wakes every timer; an offset
    /// behind the current one is ignored (time never goes back), as are other clocks.
    /// Returns whether the clock moved.
    pub fn set_offset(&self, offset: chrono::Duration) -> bool {
        let Kind::Offset(current) = &*self.kind else {
            return false;
        };
        let moved = match current.lock() {
            Ok(mut current) if offset > *current => {
                *current = offset;
                true
            }
            _ => false,
        };
        if moved {
            self.changed.send_modify(|n| *n += 1);
        }
        moved
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &*self.kind {
            Kind::System => Utc::now(),
            Kind::Scaled {
                real_start,
                start,
                scale,
            } => {
                let virtual_elapsed = real_start.elapsed().as_secs_f64() * scale;
                *start + chrono::Duration::milliseconds((virtual_elapsed * 1000.0) as i64)
            }
            Kind::Manual(now) => now.lock().map(|t| *t).unwrap_or_else(|p| *p.into_inner()),
            Kind::Offset(offset) => {
                Utc::now()
                    + offset
                        .lock()
                        .map(|o| *o)
                        .unwrap_or_else(|p| *p.into_inner())
            }
        }
    }

    /// How long to sleep on the wall clock until `until` on this clock; `None` for a manual
    /// clock (wait for [`Clock::advance`]).
    pub fn real_wait(&self, until: DateTime<Utc>) -> Option<Duration> {
        let ahead = (until - self.now()).to_std().unwrap_or(Duration::ZERO);
        match &*self.kind {
            Kind::System | Kind::Offset(_) => Some(ahead),
            Kind::Scaled { scale, .. } => Some(ahead.div_f64(*scale)),
            Kind::Manual(_) => None,
        }
    }

    /// Moves a manual or an offset clock forward (other clocks ignore it) and wakes every
    /// timer.
    pub fn advance(&self, by: chrono::Duration) {
        let by = by.max(chrono::Duration::zero());
        let moved = match &*self.kind {
            Kind::Manual(now) => now.lock().map(|mut now| *now += by).is_ok(),
            Kind::Offset(offset) => offset.lock().map(|mut offset| *offset += by).is_ok(),
            _ => false,
        };
        if moved {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Changes when a manual clock moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Utc::now();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        let changes = clock.subscribe();
        clock.advance(chrono::Duration::days(180));
        assert_eq!(clock.now(), start + chrono::Duration::days(180));
        assert!(changes.has_changed().unwrap());
        assert_eq!(clock.real_wait(start), None);
    }

    #[test]
    fn an_offset_clock_only_moves_forward() {
        let clock = Clock::offset(chrono::Duration::days(10));
        let ahead = clock.now() - Utc::now();
        assert!(ahead >= chrono::Duration::days(10) - chrono::Duration::seconds(1));
        let changes = clock.subscribe();
        assert!(!clock.set_offset(chrono::Duration::days(5)));
        assert!(!changes.has_changed().unwrap());
        assert!(clock.set_offset(chrono::Duration::days(200)));
        assert!(changes.has_changed().unwrap());
        assert!(clock.now() - Utc::now() > chrono::Duration::days(199));
        // Retries and timeouts keep real time.
        let in_a_second = clock.now() + chrono::Duration::seconds(1);
        let wait = clock.real_wait(in_a_second).unwrap();
        assert!(wait > Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn a_scaled_clock_shortens_waits() {
        let clock = Clock::scaled(86_400.0);
        let in_a_day = clock.now() + chrono::Duration::days(1);
        let wait = clock.real_wait(in_a_day).unwrap();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }
}
