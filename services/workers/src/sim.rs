//! How a simulated target system behaves: its latency and how often it fails.
//!
//! [`Behaviour`] is the global setting; a [`HandlerSpec`] (the CLI's
//! `--handler-config gemeente.geboortepremie:permanent=0.5,latency_ms=200`) overrides parts of
//! it, and the handler's limits, for one handler.

use levensloop_bus::check_handler;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a target system answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// The least time a call takes.
    pub latency: Duration,
    /// Up to this much more, uniformly.
    pub jitter: Duration,
    /// The share of calls answered with a retryable failure, 0 to 1.
    pub transient_rate: f64,
    /// The share of calls answered with a permanent failure, 0 to 1 (checked first: with
    /// both at 1, every call fails permanently).
    pub permanent_rate: f64,
    /// Fault injection: after the effect is recorded, wait this long before answering (a
    /// target that acted but answers slowly; with a short ack wait the task is delivered
    /// again meanwhile).
    pub stall_after_effect: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            transient_rate: 0.0,
            permanent_rate: 0.0,
            stall_after_effect: Duration::ZERO,
        }
    }
}

/// What a call does, drawn from a [`Behaviour`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    Succeed,
    Transient,
    Permanent,
}

impl Behaviour {
    /// Instant and never failing: for benchmarks.
    pub fn instant() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The outcome for a uniform `u` in `[0, 1)`.
    pub fn draw(&self, u: f64) -> Draw {
        if u < self.permanent_rate {
            Draw::Permanent
        } else if u < self.permanent_rate + self.transient_rate {
            Draw::Transient
        } else {
            Draw::Succeed
        }
    }

    /// The latency for a uniform `u` in `[0, 1)`.
    pub fn latency(&self, u: f64) -> Duration {
        self.latency + self.jitter.mul_f64(u.clamp(0.0, 1.0))
    }

    /// Refuses rates outside `[0, 1]`.
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("transient", self.transient_rate),
            ("permanent", self.permanent_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} failure rate {rate} is not between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// One handler's departures from the global behaviour and from the catalog's limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerOverrides {
    pub latency: Option<Duration>,
    pub jitter: Option<Duration>,
    pub transient_rate: Option<f64>,
    pub permanent_rate: Option<f64>,
    pub stall_after_effect: Option<Duration>,
    /// Calls per second across every process; `Some(0.0)` switches the rate limit off.
    pub rate_per_second: Option<f64>,
    /// Tasks in flight across every worker (the queue's `max_ack_pending`).
    pub max_in_flight: Option<u32>,
    /// Tasks this process works on at once.
    pub concurrency: Option<usize>,
}

impl HandlerOverrides {
    /// The global behaviour with these overrides applied.
    pub fn apply(&self, global: Behaviour) -> Behaviour {
        Behaviour {
            latency: self.latency.unwrap_or(global.latency),
            jitter: self.jitter.unwrap_or(global.jitter),
            transient_rate: self.transient_rate.unwrap_or(global.transient_rate),
            permanent_rate: self.permanent_rate.unwrap_or(global.permanent_rate),
            stall_after_effect: self.stall_after_effect.unwrap_or(global.stall_after_effect),
        }
    }

    /// Folds a later spec for the same handler over this one.
    pub fn merge(&mut self, later: &HandlerOverrides) {
        macro_rules! take {
            ($($field:ident),*) => { $( if later.$field.is_some() { self.$field = later.$field; } )* };
        }
        take!(
            latency,
            jitter,
            transient_rate,
            permanent_rate,
            stall_after_effect,
            rate_per_second,
            max_in_flight,
            concurrency
        );
    }
}

/// `handler:key=value,key=value`, e.g. `gemeente.geboortepremie:permanent=0.5,latency_ms=200`.
///
/// Keys: `latency_ms`, `jitter_ms`, `transient`, `permanent` (0 to 1), `stall_ms`, `rate`
/// (calls per second; `0` or `off`: no rate limit), `in_flight`, `concurrency`.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    pub handler: String,
    pub overrides: HandlerOverrides,
}

/// Why a handler spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid handler config {spec:?}: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for HandlerSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| SpecError {
            spec: s.to_owned(),
            reason,
        };
        let (handler, settings) = s
            .split_once(':')
            .ok_or_else(|| bad("expected `handler:key=value,…`".into()))?;
        let handler = handler.trim();
        check_handler(handler).map_err(|e| bad(e.to_string()))?;
        let mut o = HandlerOverrides::default();
        for setting in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| bad(format!("`{setting}` is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            let number = |what: &str| -> Result<f64, SpecError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{what}: `{value}` is not a non-negative number")))
            };
            let millis = |what: &str| number(what).map(|v| Duration::from_secs_f64(v / 1000.0));
            let share = |what: &str| {
                number(what).and_then(|v| {
                    if v <= 1.0 {
                        Ok(v)
                    } else {
                        Err(bad(format!("{what}: {v} is not between 0 and 1")))
                    }
                })
            };
            let count =
                |what: &str| {
                    value.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                        bad(format!("{what}: `{value}` is not a positive whole number"))
                    })
                };
            match key {
                "latency_ms" => o.latency = Some(millis(key)?),
                "jitter_ms" => o.jitter = Some(millis(key)?),
                "stall_ms" => o.stall_after_effect = Some(millis(key)?),
                "transient" => o.transient_rate = Some(share(key)?),
                "permanent" => o.permanent_rate = Some(share(key)?),
                "rate" if value == "off" => o.rate_per_second = Some(0.0),
                "rate" => o.rate_per_second = Some(number(key)?),
                "in_flight" => o.max_in_flight = Some(count(key)?),
                "concurrency" => o.concurrency = Some(count(key)? as usize),
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}` (latency_ms, jitter_ms, transient, permanent, \
                         stall_ms, rate, in_flight, concurrency)"
                    )));
                }
            }
        }
        Ok(Self {
            handler: handler.to_owned(),
            overrides: o,
        })
    }
}

impl fmt::Display for HandlerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.overrides;
        let mut parts = Vec::new();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if let Some(v) = o.latency {
            parts.push(format!("latency_ms={}", ms(v)));
        }
        if let Some(v) = o.jitter {
            parts.push(format!("jitter_ms={}", ms(v)));
        }
        if let Some(v) = o.transient_rate {
            parts.push(format!("transient={v}"));
        }
        if let Some(v) = o.permanent_rate {
            parts.push(format!("permanent={v}"));
        }
        if let Some(v) = o.stall_after_effect {
            parts.push(format!("stall_ms={}", ms(v)));
        }
        if let Some(v) = o.rate_per_second {
            parts.push(format!("rate={v}"));
        }
        if let Some(v) = o.max_in_flight {
            parts.push(format!("in_flight={v}"));
        }
        if let Some(v) = o.concurrency {
            parts.push(format!("concurrency={v}"));
        }
        write!(f, "{}:{}", self.handler, parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_overrides_what_it_names() {
        let spec: HandlerSpec = "gemeente.geboortepremie:permanent=0.5,latency_ms=200"
            .parse()
            .unwrap();
        assert_eq!(spec.handler, "gemeente.geboortepremie");
        let b = spec.overrides.apply(Behaviour::default());
        assert_eq!(b.permanent_rate, 0.5);
        assert_eq!(b.latency, Duration::from_millis(200));
        assert_eq!(b.jitter, Behaviour::default().jitter);
        assert_eq!(spec.to_string().parse::<HandlerSpec>().unwrap(), spec);

        let spec: HandlerSpec = "diftar.close-account: rate=off, in_flight=3, concurrency=2"
            .parse()
            .unwrap();
        assert_eq!(spec.overrides.rate_per_second, Some(0.0));
        assert_eq!(spec.overrides.max_in_flight, Some(3));
        assert_eq!(spec.overrides.concurrency, Some(2));
        assert_eq!(spec.to_string().parse::<HandlerSpec>().unwrap(), spec);
    }

    #[test]
    fn bad_specs_say_why() {
        for bad in [
            "no-colon",
            "Bad.Handler:latency_ms=1",
            "a.b:latency_ms",
            "a.b:latency_ms=-1",
            "a.b:permanent=1.5",
            "a.b:in_flight=0",
            "a.b:colour=blue",
        ] {
            let err = bad.parse::<HandlerSpec>().unwrap_err();
            assert!(!err.reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn draws_follow_the_rates() {
        let b = Behaviour {
            transient_rate: 0.25,
            permanent_rate: 0.5,
            ..Behaviour::default()
        };
        assert_eq!(b.draw(0.0), Draw::Permanent);
        assert_eq!(b.draw(0.49), Draw::Permanent);
        assert_eq!(b.draw(0.5), Draw::Transient);
        assert_eq!(b.draw(0.74), Draw::Transient);
        assert_eq!(b.draw(0.75), Draw::Succeed);
        let always = |t, p| Behaviour {
            transient_rate: t,
            permanent_rate: p,
            ..Behaviour::default()
        };
        for u in [0.0, 0.3, 0.999_999] {
            assert_eq!(always(1.0, 0.0).draw(u), Draw::Transient);
            assert_eq!(always(0.0, 1.0).draw(u), Draw::Permanent);
            assert_eq!(always(1.0, 1.0).draw(u), Draw::Permanent);
            assert_eq!(always(0.0, 0.0).draw(u), Draw::Succeed);
        }
        assert_eq!(b.latency(0.5), Duration::from_millis(35));
        assert!(always(1.5, 0.0).check().is_err());
    }
}
