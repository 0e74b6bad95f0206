//! The NATS JetStream backend (nats-server 2.12 or newer).
//!
//! Layout: one JetStream stream (default `LEVENSLOOP_EVENTS`) captures
//! `<prefix>.<category>.<id>`; each event stream is one subject, each commit one message.
//!
//! - Optimistic concurrency: `Nats-Expected-Last-Subject-Sequence` (0 for "must not exist").
//!   The version of a stream is the JetStream sequence of its last commit, which is why
//!   versions are opaque.
//! - Commit dedupe: a commit carries its id. An append with an expected version that is
//!   retried after a lost acknowledgement conflicts with its own first write; the store sees
//!   its commit id at the stream's head and answers "duplicate" with the original version. An
//!   append without one (`Any`) sends the id as `Nats-Msg-Id`, and JetStream's duplicate
//!   window answers the retry. (The server checks the expected sequence before the dedupe
//!   window, so a message id on an append with an expectation would never be consulted.)
//! - Reads: one batched direct get (ADR-31) per 256 commits.
//! - Subscriptions: durable pull consumers filtered on `<prefix>.<category>.*`.

use crate::subscription::Settle;
use crate::{
    Appended, Commit, Delivery, EventStore, ExpectedVersion, ReadFrom, RecordedEvent, StoreError,
    StreamName, StreamSlice, Subscription, Version, codec, name::validate_category,
};
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{self, StorageType},
};
use async_nats::{HeaderMap, StatusCode};
use async_trait::async_trait;
use futures::StreamExt;
use std::time::{Duration, SystemTime};

/// How long one pull of a subscription waits on the server before a new one is sent.
pub const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// How often the server proves a pending pull is alive (a missed beat re-pulls).
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// How many commits one batched direct get asks for.
const READ_BATCH: usize = 256;

/// Where and how the JetStream backend keeps its events.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// The JetStream stream that holds every event stream.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<category>.<id>`.
    pub subject_prefix: String,
    /// 1 for a single node, 3 for the replicated profile.
    pub replicas: usize,
    /// How long a commit id is remembered for dedupe.
    pub duplicate_window: Duration,
    /// How long a subscription waits for an acknowledgement before delivering again.
    pub ack_wait: Duration,
    /// How many unacknowledged commits a subscription may hold.
    pub max_ack_pending: i64,
    /// How long an append waits for the server's acknowledgement.
    pub ack_timeout: Duration,
    /// How many appends may await their acknowledgement at once on this connection; more
    /// wait for a slot rather than fail.
    pub max_appends_in_flight: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream: "LEVENSLOOP_EVENTS".to_owned(),
            subject_prefix: "levensloop.events".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ack_timeout: Duration::from_secs(10),
            max_appends_in_flight: 8_192,
        }
    }
}

/// The JetStream event store. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct JetStreamStore {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    config: JetStreamConfig,
}

impl JetStreamStore {
    /// Connects to `url` (one URL, or several separated by commas) and ensures the stream.
    pub async fn connect(url: &str, config: JetStreamConfig) -> Result<Self, StoreError> {
        let servers = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::unavailable(format!("invalid server URL {url:?}"), e))?;
        let client = async_nats::ConnectOptions::new()
            .name("levensloop-store")
            .connect(servers)
            .await
            .map_err(|e| StoreError::unavailable(format!("cannot connect to {url}"), e))?;
        Self::with_client(client, config).await
    }

    /// Uses an existing connection and creates the stream, or updates its configuration.
    pub async fn with_client(
        client: async_nats::Client,
        config: JetStreamConfig,
    ) -> Result<Self, StoreError> {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_appends_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let stream_config = stream::Config {
            name: config.stream.clone(),
            description: Some("Levensloop event store: one subject per event stream".to_owned()),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            ..stream::Config::default()
        };
        ensure_stream(&js, stream_config).await?;
        let stream = js.get_stream(&config.stream).await.map_err(|e| {
            StoreError::unavailable(format!("cannot open stream {}", config.stream), e)
        })?;
        Ok(Self {
            client,
            js,
            stream,
            config,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    fn subject(&self, stream: &StreamName) -> String {
        format!(
            "{}.{}.{}",
            self.config.subject_prefix,
            stream.category(),
            stream.id()
        )
    }

    fn stream_name_of(&self, subject: &str) -> Result<StreamName, StoreError> {
        let rest = subject
            .strip_prefix(&self.config.subject_prefix)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.split_once('.'));
        match rest {
            Some((category, id)) => StreamName::new(category, id),
            None => Err(StoreError::Corrupt {
                location: subject.to_owned(),
                reason: "subject outside the store's prefix".to_owned(),
            }),
        }
    }
}

/// How long start-up waits for a forming cluster to accept the stream.
const ENSURE_DEADLINE: Duration = Duration::from_secs(30);

/// Creates the stream or updates its configuration. A cluster that is still forming answers
/// "no suitable peers" or "cluster not available" for a moment after it elects a leader;
/// that is retried with backoff up to [`ENSURE_DEADLINE`], anything else fails at once.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), StoreError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    let deadline = tokio::time::Instant::now() + ENSURE_DEADLINE;
    let mut backoff = Duration::from_millis(25);
    loop {
        let err = match js.create_or_update_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let transient = match err.kind() {
            Kind::JetStream(e) => {
                e.error_code() == ErrorCode::CLUSTER_NO_PEERS
                    || e.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE
            }
            Kind::TimedOut | Kind::JetStreamUnavailable => true,
            _ => false,
        };
        if !transient || tokio::time::Instant::now() + backoff > deadline {
            return Err(StoreError::unavailable(
                format!("cannot ensure stream {}", config.name),
                err,
            ));
        }
        tracing::debug!(error = %err, "stream not ready yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// A conflict on the expected subject sequence. A single node answers error code 10071 with
/// the actual sequence; a clustered stream can also refuse an append up front (code 10164)
/// while another append to the same subject is still being replicated, which the client
/// library does not classify, hence the look at the message.
fn is_wrong_last_sequence(e: &jetstream::context::PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence
        || (e.kind() == PublishErrorKind::Other && e.to_string().contains("wrong last sequence"))
}

/// The server's conflict reads `wrong last sequence: 7` (followed by error codes); 7 is the
/// subject's actual last sequence, 0 when it has none.
fn actual_from_description(description: &str) -> Option<Version> {
    let (_, rest) = description.rsplit_once("sequence: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().ok().filter(|&n| n > 0).map(Version)
}

fn recorded_events(
    stream: &StreamName,
    version: Version,
    commit: Commit,
    recorded_at: SystemTime,
) -> Vec<RecordedEvent> {
    let commit_id = commit.id;
    commit
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| RecordedEvent {
            stream: stream.clone(),
            version,
            index: index as u32,
            commit_id,
            event_type: e.event_type,
            data: e.data,
            metadata: e.metadata,
            recorded_at,
        })
        .collect()
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.as_str().parse().ok())
}

#[async_trait]
impl EventStore for JetStreamStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        commit: Commit,
    ) -> Result<Appended, StoreError> {
        if commit.events.is_empty() {
            return Err(StoreError::EmptyCommit);
        }
        let payload = codec::encode(&commit);
        let size = payload.len();
        let build = || {
            let publish = PublishMessage::build().payload(payload.clone());
            match expected {
                // Without an expectation only the dedupe window can recognise a retry.
                ExpectedVersion::Any => publish.message_id(commit.id.to_string()),
                // With one, the server checks the expectation before its dedupe window, so a
                // message id would never be consulted (and costs the server a third of its
                // append rate): a retry conflicts with its own first write, recognised below.
                ExpectedVersion::NoStream => publish.expected_last_subject_sequence(0),
                ExpectedVersion::Exact(v) => publish.expected_last_subject_sequence(v.0),
            }
        };
        let subject = self.subject(stream);
        let mut backoff = Duration::from_millis(25);
        let mut attempt = 1;
        let result = loop {
            let pending = self
                .js
                .send_publish(subject.clone(), build())
                .await
                .map_err(|e| match e.kind() {
                    PublishErrorKind::MaxPayloadExceeded => StoreError::CommitTooLarge {
                        stream: stream.clone(),
                        size,
                        limit: self.client.server_info().max_payload,
                    },
                    _ => StoreError::unavailable(format!("append to {stream}"), e),
                })?;
            match pending.await {
                // No responder means no server took the message (a clustered stream between
                // leaders): nothing was written, so trying again is safe.
                Err(e)
                    if e.kind() == PublishErrorKind::StreamNotFound && attempt < RETRY_ATTEMPTS =>
                {
                    tracing::debug!(%stream, attempt, "no stream leader; retrying the append");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(ack) => Ok(Appended {
                version: Version(ack.sequence),
                duplicate: ack.duplicate,
            }),
            Err(e) if is_wrong_last_sequence(&e) => {
                let actual = actual_from_description(&e.to_string());
                // The server checks the expected sequence before the dedupe window, so a retry
                // of a commit that was stored (its acknowledgement lost) conflicts with itself.
                // When the stream's last commit is this very commit, it is a duplicate.
                if let Some(actual) = actual
                    && self.commit_id_at(actual).await? == Some(commit.id)
                {
                    return Ok(Appended {
                        version: actual,
                        duplicate: true,
                    });
                }
                Err(StoreError::VersionConflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                })
            }
            Err(e) => Err(StoreError::unavailable(
                format!("append to {stream}: no acknowledgement"),
                e,
            )),
        }
    }

    async fn read(&self, stream: &StreamName, from: ReadFrom) -> Result<StreamSlice, StoreError> {
        let subject = self.subject(stream);
        let mut next_seq = match from {
            ReadFrom::Start => 1,
            ReadFrom::After(v) => v.0 + 1,
        };
        let mut events = Vec::new();
        let mut version = None;
        loop {
            let batch = self.direct_get_retrying(&subject, next_seq).await?;
            let Some(batch) = batch else { break };
            let count = batch.messages.len();
            for (seq, recorded_at, payload) in batch.messages {
                let commit = codec::decode(&payload, &|| format!("{subject} sequence {seq}"))?;
                events.extend(recorded_events(stream, Version(seq), commit, recorded_at));
                version = Some(Version(seq));
                next_seq = seq + 1;
            }
            if batch.pending == 0 || count < READ_BATCH {
                break;
            }
        }
        match version {
            Some(version) => Ok(StreamSlice { version, events }),
            None => {
                // Nothing after `from`: tell an empty slice of an existing stream from a
                // stream that does not exist.
                match self.stream.direct_get_last_for_subject(&subject).await {
                    Ok(last) => Ok(StreamSlice {
                        version: Version(last.sequence),
                        events,
                    }),
                    Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => {
                        Err(StoreError::StreamNotFound {
                            stream: stream.clone(),
                        })
                    }
                    Err(e) => Err(StoreError::unavailable(format!("read {stream}"), e)),
                }
            }
        }
    }

    async fn version(&self, stream: &StreamName) -> Result<Option<Version>, StoreError> {
        match self
            .stream
            .direct_get_last_for_subject(self.subject(stream))
            .await
        {
            Ok(last) => Ok(Some(Version(last.sequence))),
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::unavailable(format!("version of {stream}"), e)),
        }
    }

    async fn subscribe(
        &self,
        category: &str,
        name: &str,
    ) -> Result<Box<dyn Subscription>, StoreError> {
        validate_category(category)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(StoreError::InvalidName {
                name: name.to_owned(),
                reason: "a subscription name holds only A-Z, a-z, 0-9, _ and -".to_owned(),
            });
        }
        let config = pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some(format!("Levensloop subscription to {category}")),
            filter_subject: format!("{}.{}.*", self.config.subject_prefix, category),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_ack_pending: self.config.max_ack_pending,
            ..pull::Config::default()
        };
        let consumer = self.open_consumer(name, config).await?;
        // Short pulls with frequent heartbeats: after nats-server restarts, a pull it has
        // forgotten is replaced within seconds (the defaults, 30 s and 15 s, left a follower
        // idle for up to a minute).
        let messages = consumer
            .stream()
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| StoreError::unavailable(format!("follow subscription {name}"), e))?;
        Ok(Box::new(JetStreamSubscription {
            store: self.clone(),
            messages,
        }))
    }

    async fn unsubscribe(&self, name: &str) -> Result<(), StoreError> {
        match self.stream.delete_consumer(name).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::ConsumerErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::unavailable(
                format!("delete subscription {name}"),
                e,
            )),
        }
    }
}

impl JetStreamStore {
    /// Opens the durable consumer `name`, resuming in order.
    ///
    /// A consumer left with unacknowledged commits (its subscriber died) would hand them out
    /// again only after `ack_wait`, and after newer ones: a projection would see a stream's
    /// events out of order. So such a consumer is recreated to start right after its
    /// acknowledgement floor, which delivers everything unacknowledged again, in order.
    async fn open_consumer(
        &self,
        name: &str,
        mut config: pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, StoreError> {
        let unavailable = |e: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::unavailable(format!("open subscription {name}"), e)
        };
        match self.stream.consumer_info(name).await {
            Ok(info) if info.num_ack_pending > 0 => {
                config.deliver_policy = DeliverPolicy::ByStartSequence {
                    start_sequence: info.ack_floor.stream_sequence + 1,
                };
                self.stream
                    .delete_consumer(name)
                    .await
                    .map_err(|e| unavailable(e.into()))?;
                tracing::info!(
                    subscription = name,
                    from = info.ack_floor.stream_sequence + 1,
                    "resuming after the acknowledgement floor"
                );
            }
            _ => {}
        }
        self.stream
            .get_or_create_consumer(name, config)
            .await
            .map_err(|e| unavailable(e.into()))
    }

    /// The id of the commit stored at `version`, read from the commit itself.
    async fn commit_id_at(&self, version: Version) -> Result<Option<uuid::Uuid>, StoreError> {
        match self.stream.direct_get(version.0).await {
            Ok(message) => {
                let commit = codec::decode(&message.payload, &|| {
                    format!("{} sequence {version}", message.subject)
                })?;
                Ok(Some(commit.id))
            }
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::unavailable("read a commit's id", e)),
        }
    }
}

/// Attempts of a read or append that finds no responder: in a cluster, the stream has no
/// leader and no direct-get responders for a few seconds after a node is lost. The backoff
/// doubles from 25 ms up to 1 s, so this rides out about 10 s.
const RETRY_ATTEMPTS: u32 = 16;

impl JetStreamStore {
    async fn direct_get_retrying(
        &self,
        subject: &str,
        seq: u64,
    ) -> Result<Option<DirectBatch>, StoreError> {
        let mut backoff = Duration::from_millis(25);
        let mut attempt = 1;
        loop {
            match self.direct_get_batch(subject, seq).await {
                Err(StoreError::Unavailable { reason, .. })
                    if reason.ends_with(NO_RESPONDERS) && attempt < RETRY_ATTEMPTS =>
                {
                    tracing::debug!(subject, attempt, "no direct-get responder; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

const NO_RESPONDERS: &str = "no responders";

struct DirectBatch {
    messages: Vec<(u64, SystemTime, bytes::Bytes)>,
    /// Messages for the subject after the batch, as the server counted them.
    pending: u64,
}

impl JetStreamStore {
    /// One batched direct get: up to [`READ_BATCH`] messages of `subject` from `seq` on, in a
    /// single round trip. `None` when there are none.
    async fn direct_get_batch(
        &self,
        subject: &str,
        seq: u64,
    ) -> Result<Option<DirectBatch>, StoreError> {
        let unavailable = |e: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::unavailable(format!("read {subject}"), e)
        };
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(e.into()))?;
        let request = format!(r#"{{"seq":{seq},"next_by_subj":"{subject}","batch":{READ_BATCH}}}"#);
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.config.stream),
                inbox,
                request.into(),
            )
            .await
            .map_err(|e| unavailable(e.into()))?;
        let mut messages = Vec::new();
        let eob = StatusCode::from_u16(204).map_err(|e| unavailable(e.into()))?;
        loop {
            let reply = tokio::time::timeout(self.config.ack_timeout, replies.next())
                .await
                .map_err(|e| unavailable(e.into()))?;
            let Some(reply) = reply else {
                return Err(StoreError::Unavailable {
                    reason: format!("read {subject}: connection closed"),
                    source: None,
                });
            };
            match reply.status {
                Some(StatusCode::NOT_FOUND) => {
                    return Ok(None);
                }
                Some(code) if code == eob => {
                    let pending = reply
                        .headers
                        .as_ref()
                        .and_then(|h| header_u64(h, "Nats-Num-Pending"))
                        .unwrap_or(0);
                    if messages.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(DirectBatch { messages, pending }));
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(StoreError::Unavailable {
                        reason: format!("read {subject}: {NO_RESPONDERS}"),
                        source: None,
                    });
                }
                Some(code) => {
                    return Err(StoreError::Unavailable {
                        reason: format!(
                            "read {subject}: status {code} {}",
                            reply.description.unwrap_or_default()
                        ),
                        source: None,
                    });
                }
                None => {
                    let headers = reply.headers.unwrap_or_default();
                    let seq = header_u64(&headers, "Nats-Sequence").ok_or_else(|| {
                        StoreError::Corrupt {
                            location: subject.to_owned(),
                            reason: "direct get reply without Nats-Sequence".to_owned(),
                        }
                    })?;
                    let recorded_at = headers
                        .get("Nats-Time-Stamp")
                        .and_then(|t| {
                            time::OffsetDateTime::parse(
                                t.as_str(),
                                &time::format_description::well_known::Rfc3339,
                            )
                            .ok()
                        })
                        .map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
                    messages.push((seq, recorded_at, reply.payload));
                }
            }
        }
    }
}

struct JetStreamSubscription {
    store: JetStreamStore,
    messages: pull::Stream,
}

#[async_trait]
impl Subscription for JetStreamSubscription {
    async fn next(&mut self) -> Result<Delivery, StoreError> {
        loop {
            let message = match self.messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // Heartbeat losses and reconnects surface here; the stream recovers by
                    // itself, so only report what it cannot recover from.
                    tracing::warn!(error = %e, "subscription hiccup");
                    continue;
                }
                None => {
                    return Err(StoreError::Unavailable {
                        reason: "subscription closed".to_owned(),
                        source: None,
                    });
                }
            };
            let info = message
                .info()
                .map_err(|e| StoreError::unavailable("delivery without metadata", e))?;
            let (seq, pending, delivery_count, published) = (
                info.stream_sequence,
                info.pending,
                info.delivered as u64,
                info.published,
            );
            let stream = self.store.stream_name_of(message.subject.as_str())?;
            let commit = codec::decode(&message.payload, &|| format!("{stream} sequence {seq}"))?;
            let events = recorded_events(&stream, Version(seq), commit, published.into());
            return Ok(Delivery {
                stream,
                version: Version(seq),
                events,
                pending,
                delivery_count,
                settle: Box::new(JetStreamSettle { message }),
            });
        }
    }
}

struct JetStreamSettle {
    message: jetstream::Message,
}

#[async_trait]
impl Settle for JetStreamSettle {
    async fn ack(&self) -> Result<(), StoreError> {
        // Confirmed by the server: a fire-and-forget ack can be lost when the process exits
        // right after it (or the connection drops), and the commit would come again.
        self.message
            .double_ack()
            .await
            .map_err(|e| StoreError::unavailable("acknowledge", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_actual_sequence_from_a_conflict() {
        assert_eq!(
            actual_from_description("wrong last sequence: 7"),
            Some(Version(7))
        );
        assert_eq!(actual_from_description("wrong last sequence: 0"), None);
        assert_eq!(
            actual_from_description(
                "wrong last sequence: wrong last sequence: 12 (code 400, error code 10071)"
            ),
            Some(Version(12))
        );
        assert_eq!(actual_from_description("garbage"), None);
    }
}
