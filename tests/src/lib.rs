//! Shared helpers of the end-to-end and fault-injection suites.
//!
//! The suites themselves are the `[[test]]` targets beside this crate: each starts its own
//! nats-server through `levensloop-testing`, so they run in parallel without sharing state.
//! [`world`] runs the services as real processes for the saga suites.

pub mod world;

use levensloop_store::{
    Appended, Commit, EventData, EventStore, ExpectedVersion, StoreError, StreamName,
};
use std::collections::HashMap;
use uuid::Uuid;

/// Appends `per_stream` commits to each of `streams` streams of `category`, pipelined: every
/// stream's chain of appends runs concurrently with the others, each append waiting only for
/// its own stream's previous acknowledgement. Returns the acknowledged commits per stream, in
/// order.
pub async fn append_chains(
    store: &dyn EventStore,
    category: &str,
    streams: usize,
    per_stream: usize,
) -> Result<HashMap<StreamName, Vec<(Uuid, Appended)>>, StoreError> {
    let chains = (0..streams).map(|i| async move {
        let name = StreamName::new(category, format!("s{i}"))?;
        let mut expected = ExpectedVersion::NoStream;
        let mut acked = Vec::with_capacity(per_stream);
        for n in 0..per_stream {
            let id = Uuid::new_v4();
            let event = EventData::new("Durable", format!("{i}/{n}"));
            let appended = store
                .append(&name, expected, Commit::new(id, vec![event]))
                .await?;
            expected = ExpectedVersion::Exact(appended.version);
            acked.push((id, appended));
        }
        Ok::<_, StoreError>((name, acked))
    });
    futures::future::try_join_all(chains)
        .await
        .map(|v| v.into_iter().collect())
}
