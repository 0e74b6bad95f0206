//! A shared "time travel" offset for a demo or a test environment: how far the sagas' clock
//! runs ahead of the wall clock, in whole seconds, kept in the key-value bucket
//! [`CLOCK_BUCKET`] under [`OFFSET_KEY`].
//!
//! A saga waits for dates months away (a Boekstart package at six months, an inheritance
//! deadline at four). An orchestrator started with time travel enabled adds this offset to
//! the wall clock and follows every change, so `levensloop clock advance "6 months"` lets a
//! person watch those waits end, while retries and step timeouts keep running in real
//! time. The offset only ever moves forward: sagas never see time go back, and it survives
//! restarts of every process because it lives in the bucket. Production orchestrators do
//! not read it.

use crate::{BusError, unavailable};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;

pub const CLOCK_BUCKET: &str = "levensloop_clock";
pub const OFFSET_KEY: &str = "offset";
const MAX_ATTEMPTS: usize = 32;

/// The shared offset.
#[derive(Debug, Clone)]
pub struct ClockOffset {
    kv: kv::Store,
}

impl ClockOffset {
    /// Opens the bucket, creating it on first use.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, BusError> {
        let kv = crate::open_bucket(
            js,
            CLOCK_BUCKET,
            "Levensloop: how far the sagas' clock runs ahead (demo and test environments only)",
            16,
            replicas,
        )
        .await?;
        Ok(Self { kv })
    }

    /// The offset in seconds (0 when never set), with the entry's revision.
    async fn read(&self) -> Result<(i64, Option<u64>), BusError> {
        let entry = self
            .kv
            .entry(OFFSET_KEY)
            .await
            .map_err(|e| unavailable("read the clock offset")(Box::new(e)))?;
        match entry {
            None => Ok((0, None)),
            Some(entry) => Ok((parse(&entry.value)?, Some(entry.revision))),
        }
    }

    /// The offset in seconds.
    pub async fn get(&self) -> Result<i64, BusError> {
        Ok(self.read().await?.0)
    }

    /// Moves the offset forward by `seconds` (compare-and-swap, so concurrent advances
    /// add up) and returns the new offset.
    pub async fn advance(&self, seconds: i64) -> Result<i64, BusError> {
        if seconds < 0 {
            return Err(BusError::Malformed {
                subject: format!("{CLOCK_BUCKET}.{OFFSET_KEY}"),
                reason: "the sagas' clock never goes back".into(),
            });
        }
        for _ in 0..MAX_ATTEMPTS {
            let (current, revision) = self.read().await?;
            let next = current.saturating_add(seconds);
            let value = bytes::Bytes::from(next.to_string());
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(OFFSET_KEY, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(unavailable("advance the clock offset")(Box::new(e))),
                    }),
                None => self
                    .kv
                    .create(OFFSET_KEY, value)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(unavailable("advance the clock offset")(Box::new(e))),
                    }),
            };
            match written {
                Ok(_) => return Ok(next),
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        Err(BusError::Unavailable {
            context: "advance the clock offset".into(),
            source: format!("no update after {MAX_ATTEMPTS} compare-and-swap rounds").into(),
        })
    }

    /// Every offset from now on, starting with the current one. The stream ends when the
    /// connection to the bucket is lost for good; unreadable values are skipped with a
    /// warning.
    pub async fn watch(&self) -> Result<futures::stream::BoxStream<'static, i64>, BusError> {
        let watch = self
            .kv
            .watch_with_history(OFFSET_KEY)
            .await
            .map_err(|e| unavailable("watch the clock offset")(Box::new(e)))?;
        Ok(watch
            .filter_map(|entry| async move {
                let entry = entry.ok()?;
                match parse(&entry.value) {
                    Ok(offset) => Some(offset),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring an unreadable clock offset");
                        None
                    }
                }
            })
            .boxed())
    }
}

fn parse(value: &[u8]) -> Result<i64, BusError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .ok_or_else(|| BusError::Malformed {
            subject: format!("{CLOCK_BUCKET}.{OFFSET_KEY}"),
            reason: format!(
                "{:?} is not a non-negative number of seconds",
                String::from_utf8_lossy(value)
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use levensloop_testing::NatsServer;

    #[test]
    fn offsets_are_non_negative_seconds() {
        assert_eq!(parse(b"15552000").unwrap(), 15_552_000);
        assert!(parse(b"-1").is_err());
        assert!(parse(b"soon").is_err());
    }

    #[tokio::test]
    async fn advances_add_up_are_followed_and_never_go_back() {
        let server = NatsServer::start().unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        let shared = ClockOffset::open(&js, 1).await.unwrap();
        assert_eq!(shared.get().await.unwrap(), 0);
        let mut seen = shared.watch().await.unwrap();
        // Concurrent advances from two processes add up.
        let other = ClockOffset::open(&js, 1).await.unwrap();
        let (a, b) = tokio::join!(shared.advance(100), other.advance(20));
        a.unwrap();
        b.unwrap();
        assert_eq!(shared.get().await.unwrap(), 120);
        assert!(shared.advance(-1).await.is_err());
        let mut last = 0;
        while last < 120 {
            let next = seen.next().await.unwrap();
            assert!(next > last, "{next} after {last}");
            last = next;
        }
    }
}
