//! The gateway against a real nats-server: both doors, the bad-input corpus, the rejected
//! stream, once-only under concurrency, person invariants, and a gateway that is down.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use levensloop_gateway::corpus::{self, Input};
use levensloop_gateway::grpc::violations_of;
use levensloop_gateway::nats::{INGEST_STREAM, REPLY_TO_HEADER};
use levensloop_gateway::rejected::{
    HEADER_FIELD, HEADER_ORIGIN, HEADER_REASON_CODE, REJECTED_STREAM,
};
use levensloop_gateway::rejection::Reason;
use levensloop_gateway::server::{GatewayConfig, RunningGateway, start};
use levensloop_proto::v1::ingest_service_client::IngestServiceClient;
use levensloop_proto::v1::{self, PublishOutcome, PublishRequest, PublishResponse};
use levensloop_proto::{saga_id, v1::life_event::Payload};
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore, ReadFrom, StreamName};
use levensloop_testing::NatsServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// A verdict that has not come within this time is a failure, not a hang.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

struct Harness {
    server: NatsServer,
    gateway: Option<RunningGateway>,
    client: async_nats::Client,
    js: jetstream::Context,
}

fn config(url: String) -> GatewayConfig {
    GatewayConfig {
        nats_url: url,
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        fixed_now: Some(corpus::fixed_now()),
        nats_concurrency: 64,
        ..GatewayConfig::default()
    }
}

impl Harness {
    async fn start() -> Self {
        let server = NatsServer::start().unwrap();
        let gateway = start(config(server.url())).await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client.clone());
        Self {
            server,
            gateway: Some(gateway),
            client,
            js,
        }
    }

    fn grpc_addr(&self) -> SocketAddr {
        self.gateway.as_ref().expect("gateway running").grpc_addr
    }

    async fn grpc(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(format!("http://{}", self.grpc_addr()))
            .await
            .unwrap()
    }

    async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }

    async fn restart_gateway(&mut self) {
        self.stop_gateway().await;
        self.gateway = Some(start(config(self.server.url())).await.unwrap());
    }

    /// Publishes to the ingest stream (JetStream-acknowledged: captured), asking for the
    /// verdict on a fresh inbox; returns the inbox subscription.
    async fn nats_publish(
        &self,
        subject: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> async_nats::Subscriber {
        let inbox = self.client.new_inbox();
        let verdicts = self.client.subscribe(inbox.clone()).await.unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name.as_str(), value.as_str());
        }
        map.insert(REPLY_TO_HEADER, inbox.as_str());
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), map, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.stream, INGEST_STREAM, "captured by the ingest stream");
        verdicts
    }

    async fn nats_send(
        &self,
        subject: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> PublishResponse {
        let mut verdicts = self.nats_publish(subject, headers, body).await;
        verdict(&mut verdicts).await
    }

    async fn nats_send_event(&self, event: &v1::LifeEvent) -> PublishResponse {
        let Input::Nats {
            subject,
            headers,
            body,
        } = corpus::encode_binary_protobuf(event)
        else {
            unreachable!("a binary encoding is a NATS message")
        };
        self.nats_send(&subject, &headers, body).await
    }

    async fn grpc_send(&self, input: Input) -> Result<PublishResponse, tonic::Status> {
        let event = match input {
            Input::Event(event) => v1::publish_request::Event::LifeEvent(event),
            Input::Raw { content_type, data } => {
                v1::publish_request::Event::Raw(v1::RawCloudEvent { content_type, data })
            }
            Input::Nats { .. } => unreachable!("not a gRPC input"),
        };
        self.grpc()
            .await
            .publish(PublishRequest {
                event: Some(event),
                sequence: 0,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn store(&self) -> JetStreamStore {
        JetStreamStore::connect(&self.server.url(), JetStreamConfig::default())
            .await
            .unwrap()
    }

    /// Every message on the rejected stream: (subject, headers, body).
    async fn rejected(&self) -> Vec<(String, HeaderMap, Vec<u8>)> {
        let stream = self.js.get_stream(REJECTED_STREAM).await.unwrap();
        let count = stream.get_info().await.unwrap().state.messages;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < count {
            let m = tokio::time::timeout(VERDICT_TIMEOUT, messages.next())
                .await
                .expect("rejected stream readable")
                .unwrap()
                .unwrap();
            out.push((
                m.subject.to_string(),
                m.headers.clone().unwrap_or_default(),
                m.payload.to_vec(),
            ));
        }
        out
    }
}

async fn verdict(verdicts: &mut async_nats::Subscriber) -> PublishResponse {
    let message = tokio::time::timeout(VERDICT_TIMEOUT, verdicts.next())
        .await
        .expect("a verdict within the timeout")
        .expect("verdict subscription open");
    serde_json::from_slice(&message.payload).unwrap()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// The first violation of a refusal on each door, as (field, reason code).
fn first_violation(response: &PublishResponse, what: &str) -> (String, String) {
    assert_eq!(
        response.outcome(),
        PublishOutcome::Rejected,
        "{what}: {response:?}"
    );
    let v = response.violations.first().expect("a violation");
    assert_eq!(response.reason_code, v.reason);
    (v.field.clone(), v.reason.clone())
}

fn status_violation(status: &tonic::Status, what: &str) -> (String, String) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let v = violations_of(status);
    let first = v.first().expect("BadRequest field violations");
    (first.field.clone(), first.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_corpus_is_refused_precisely_over_both_doors_and_kept() {
    let h = Harness::start().await;
    let cases = corpus::bad_inputs();
    assert!(cases.len() >= 40, "corpus of at least 40 cases");
    let mut nats_refusals = 0usize;
    let mut expected_rejected: Vec<(String, Vec<u8>)> = Vec::new();
    for case in &cases {
        let want_reason = case.reason.code().to_owned();
        let check = |door: &str, (field, reason): (String, String)| {
            assert_eq!(reason, want_reason, "{} over {door}", case.name);
            if !case.field.is_empty() {
                assert_eq!(field, case.field, "{} over {door}", case.name);
            }
        };
        match &case.input {
            Input::Nats {
                subject,
                headers,
                body,
            } => {
                let response = h.nats_send(subject, headers, body.clone()).await;
                check("nats", first_violation(&response, case.name));
                nats_refusals += 1;
                expected_rejected.push((want_reason.clone(), body.clone()));
            }
            Input::Raw { .. } => {
                let status = h.grpc_send(case.input.clone()).await.expect_err(case.name);
                check("grpc", status_violation(&status, case.name));
            }
            Input::Event(event) => {
                let status = h.grpc_send(case.input.clone()).await.expect_err(case.name);
                check("grpc", status_violation(&status, case.name));
                // A defect in the payload, sent as a registry would publish it on NATS: same
                // rule, same reason. (Envelope defects such as negative nanos in `time` cannot
                // be carried by CloudEvents headers, so they are gRPC-only cases.)
                let in_payload = [
                    "birth.",
                    "death.",
                    "change_of_address.",
                    "driving_exam_passed.",
                ]
                .iter()
                .any(|p| case.field.starts_with(p));
                if !in_payload {
                    continue;
                }
                let response = h.nats_send_event(event).await;
                let (_, reason) = first_violation(&response, case.name);
                assert_eq!(reason, want_reason, "{} over nats", case.name);
                nats_refusals += 1;
                expected_rejected.push((want_reason.clone(), corpus::payload_protobuf(event)));
            }
        }
    }

    // Every NATS refusal is on the rejected stream, body unchanged, reason in headers; gRPC
    // refusals are there too, marked as such.
    let rejected = h.rejected().await;
    let from_nats: Vec<_> = rejected
        .iter()
        .filter(|(_, headers, _)| header(headers, HEADER_ORIGIN) != "grpc")
        .collect();
    assert_eq!(from_nats.len(), nats_refusals);
    for ((_, headers, body), (reason, original)) in from_nats.iter().zip(&expected_rejected) {
        assert_eq!(&header(headers, HEADER_REASON_CODE), reason);
        assert_eq!(body, original, "the original message is kept unchanged");
        assert!(header(headers, HEADER_ORIGIN).starts_with("levensloop.ingest"));
    }
    let from_grpc = rejected.len() - from_nats.len();
    assert_eq!(
        from_grpc,
        cases
            .iter()
            .filter(|c| !matches!(c.input, Input::Nats { .. }))
            .count()
    );
    assert!(
        rejected
            .iter()
            .all(|(_, headers, _)| !header(headers, HEADER_FIELD).is_empty()
                || !header(headers, HEADER_REASON_CODE).is_empty())
    );

    // Nothing crashed: a valid event still goes through both doors.
    let ok = h.nats_send_event(&corpus::valid_birth()).await;
    assert_eq!(ok.outcome(), PublishOutcome::Accepted);
    let again = h
        .grpc_send(Input::Event(corpus::valid_birth()))
        .await
        .unwrap();
    assert_eq!(again.outcome(), PublishOutcome::Duplicate);
    assert_eq!(again.saga_id, ok.saga_id);
}

/// The person whose invariants an event touches (deaths and moves), if any.
fn person_of(event: &v1::LifeEvent) -> Option<String> {
    match event.payload.as_ref()? {
        Payload::Death(d) => d.deceased.as_ref().map(|p| p.insz.clone()),
        Payload::ChangeOfAddress(m) => m.person.as_ref().map(|p| p.insz.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn good_inputs_are_accepted_once_with_one_saga_id_over_both_doors() {
    // Inputs carrying the same event (content aside from its encoding) form a group: the
    // first is accepted, the rest are duplicates with the same saga id. Groups that reuse an
    // id with other content, or touch the same person, go to separate rounds, each against a
    // fresh server, so one good input never makes another a conflict.
    let mut groups: Vec<(v1::LifeEvent, Vec<corpus::GoodCase>)> = Vec::new();
    for good in corpus::good_inputs() {
        let mut event = corpus::decode(&good.input, &Default::default())
            .unwrap_or_else(|r| panic!("{}: {r}", good.name));
        event.datacontenttype.clear();
        match groups.iter_mut().find(|(e, _)| *e == event) {
            Some((_, cases)) => cases.push(good),
            None => groups.push((event, vec![good])),
        }
    }
    let mut rounds: Vec<Vec<(v1::LifeEvent, Vec<corpus::GoodCase>)>> = Vec::new();
    for group in groups {
        let clash = |other: &(v1::LifeEvent, Vec<corpus::GoodCase>)| {
            (other.0.source == group.0.source && other.0.id == group.0.id)
                || (person_of(&group.0).is_some() && person_of(&other.0) == person_of(&group.0))
        };
        match rounds.iter_mut().find(|r| !r.iter().any(clash)) {
            Some(round) => round.push(group),
            None => rounds.push(vec![group]),
        }
    }
    assert!(rounds.len() < 10, "rounds: {}", rounds.len());
    let mut inputs = 0;
    for round in rounds {
        let h = Harness::start().await;
        let store = h.store().await;
        for (event, cases) in round {
            let expected = saga_id(&event.source, &event.id).to_string();
            for (n, good) in cases.iter().enumerate() {
                inputs += 1;
                let response = match &good.input {
                    Input::Nats {
                        subject,
                        headers,
                        body,
                    } => h.nats_send(subject, headers, body.clone()).await,
                    other => h
                        .grpc_send(other.clone())
                        .await
                        .unwrap_or_else(|s| panic!("{} refused: {s:?}", good.name)),
                };
                let what = &good.name;
                assert_eq!(response.saga_id, expected, "{what}: {response:?}");
                assert_eq!(response.event_id, event.id, "{what}");
                let outcome = if n == 0 {
                    PublishOutcome::Accepted
                } else {
                    PublishOutcome::Duplicate
                };
                assert_eq!(response.outcome(), outcome, "{what}: {response:?}");
                assert_eq!(response.duplicate, n > 0, "{what}");
            }
            let slice = store
                .read(
                    &StreamName::new("lifeevent", &expected).unwrap(),
                    ReadFrom::Start,
                )
                .await
                .unwrap();
            assert_eq!(
                slice.events.len(),
                1,
                "one stored life event per (source, id)"
            );
            let stored =
                <v1::LifeEvent as prost::Message>::decode(slice.events[0].data.as_ref()).unwrap();
            assert_eq!(stored, event, "stored as sent, whatever the encoding");
        }
    }
    assert_eq!(inputs, corpus::good_inputs().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_duplicates_and_person_invariants_are_refused_with_the_conflicting_fact() {
    let h = Harness::start().await;

    // Conflicting duplicate, over each door: the first event stands, the conflict is recorded.
    let birth = corpus::valid_birth();
    let first = h.grpc_send(Input::Event(birth.clone())).await.unwrap();
    assert_eq!(first.outcome(), PublishOutcome::Accepted);
    let mut changed = birth.clone();
    if let Some(Payload::Birth(b)) = &mut changed.payload {
        b.time_of_birth = "05:00".to_owned();
    }
    let status = h
        .grpc_send(Input::Event(changed.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        status_violation(&status, ""),
        (
            "id".to_owned(),
            Reason::ConflictingDuplicate.code().to_owned()
        )
    );
    let over_nats = h.nats_send_event(&changed).await;
    assert_eq!(
        first_violation(&over_nats, ""),
        (
            "id".to_owned(),
            Reason::ConflictingDuplicate.code().to_owned()
        )
    );
    let store = h.store().await;
    let stored = store
        .read(
            &StreamName::new("lifeevent", &first.saga_id).unwrap(),
            ReadFrom::Start,
        )
        .await
        .unwrap();
    assert_eq!(stored.events.len(), 1, "the first event stands");
    let kept = <v1::LifeEvent as prost::Message>::decode(stored.events[0].data.as_ref()).unwrap();
    let mut expected = birth.clone();
    expected.datacontenttype.clear();
    assert_eq!(kept, expected);
    let reasons: Vec<String> = h
        .rejected()
        .await
        .iter()
        .map(|(_, headers, _)| header(headers, HEADER_REASON_CODE))
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == Reason::ConflictingDuplicate.code())
            .count(),
        2,
        "both conflicts recorded"
    );

    // A death; the same death again is a duplicate; another death of that person is refused.
    let death = corpus::valid_death();
    let died = h.nats_send_event(&death).await;
    assert_eq!(died.outcome(), PublishOutcome::Accepted, "{died:?}");
    assert!(died.starts_saga);
    let same = h.grpc_send(Input::Event(death.clone())).await.unwrap();
    assert_eq!(same.outcome(), PublishOutcome::Duplicate);
    assert_eq!(same.saga_id, died.saga_id);
    let mut second = death.clone();
    second.id = "second-death-declaration".to_owned();
    let status = h.grpc_send(Input::Event(second.clone())).await.unwrap_err();
    let (field, reason) = status_violation(&status, "");
    assert_eq!(reason, Reason::PersonDeceased.code());
    assert_eq!(field, "death.deceased.insz");
    assert!(
        status.message().contains(&died.saga_id),
        "names the conflicting fact: {}",
        status.message()
    );
    let over_nats = h.nats_send_event(&second).await;
    assert_eq!(
        first_violation(&over_nats, "").1,
        Reason::PersonDeceased.code()
    );

    // The deceased cannot move afterwards.
    let Some(Payload::Death(d)) = &death.payload else {
        unreachable!()
    };
    let deceased = d.deceased.clone().unwrap();
    let mut moved = corpus::valid_change_of_address();
    moved.id = "move-after-death".to_owned();
    if let Some(Payload::ChangeOfAddress(m)) = &mut moved.payload {
        m.person = Some(deceased.clone());
    }
    moved.subject = deceased.insz.clone();
    let status = h.grpc_send(Input::Event(moved)).await.unwrap_err();
    let (field, reason) = status_violation(&status, "");
    assert_eq!(reason, Reason::PersonDeceased.code());
    assert_eq!(field, "change_of_address.person.insz");

    // A move to the address the person already has: accepted, no saga.
    let mv = corpus::valid_change_of_address();
    let first_move = h.grpc_send(Input::Event(mv.clone())).await.unwrap();
    assert_eq!(first_move.outcome(), PublishOutcome::Accepted);
    assert!(first_move.starts_saga);
    let mut again = mv.clone();
    again.id = format!("{}-again", mv.id);
    let noop = h.nats_send_event(&again).await;
    assert_eq!(noop.outcome(), PublishOutcome::Accepted, "{noop:?}");
    assert!(
        !noop.starts_saga,
        "a move to the same address starts no saga"
    );
    assert!(noop.note.contains("already lives"), "{}", noop.note);

    // An administrative re-addressing is stored but starts no saga.
    let mut renamed = corpus::valid_change_of_address();
    renamed.id = "street-renamed-2025".to_owned();
    if let Some(Payload::ChangeOfAddress(m)) = &mut renamed.payload {
        m.reason = v1::ChangeOfAddressReason::StreetRenamed as i32;
        if let Some(a) = &mut m.new_address {
            a.thoroughfare = "Nieuwe Straatnaam".to_owned();
        }
    }
    let admin = h.grpc_send(Input::Event(renamed)).await.unwrap();
    assert_eq!(admin.outcome(), PublishOutcome::Accepted);
    assert!(!admin.starts_saga);
    assert!(admin.note.contains("not a move"), "{}", admin.note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_publishers_over_both_doors_store_each_event_once() {
    const EVENTS: u32 = 1_000;
    const PUBLISHERS: usize = 8;
    let h = Harness::start().await;
    let events: Vec<v1::LifeEvent> = (0..EVENTS).map(corpus::numbered_birth).collect();

    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let events = events.clone();
        if p % 2 == 0 {
            // gRPC: one bulk stream per publisher.
            let mut client = h.grpc().await;
            tasks.push(tokio::spawn(async move {
                let requests = events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| PublishRequest {
                        event: Some(v1::publish_request::Event::LifeEvent(e)),
                        sequence: i as u64,
                    })
                    .collect::<Vec<_>>();
                let mut answers = client
                    .publish_stream(futures::stream::iter(requests))
                    .await
                    .unwrap()
                    .into_inner();
                let mut out = Vec::new();
                while let Some(answer) = answers.next().await {
                    let answer = answer.unwrap();
                    assert_eq!(answer.sequence, out.len() as u64, "answers in order");
                    out.push(answer);
                }
                out
            }));
        } else {
            // NATS: publish everything, then gather the verdicts.
            let client = h.client.clone();
            let js = h.js.clone();
            tasks.push(tokio::spawn(async move {
                let prefix = format!("verdicts.{p}");
                let mut verdicts = client.subscribe(format!("{prefix}.>")).await.unwrap();
                let messages: Vec<_> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let Input::Nats {
                            subject,
                            headers,
                            body,
                        } = corpus::encode_binary_json(e)
                        else {
                            unreachable!()
                        };
                        let mut map = HeaderMap::new();
                        for (n, v) in &headers {
                            map.append(n.as_str(), v.as_str());
                        }
                        map.insert(REPLY_TO_HEADER, format!("{prefix}.{i}").as_str());
                        (subject, map, body)
                    })
                    .collect();
                let acks = futures::stream::iter(messages)
                    .map(|(subject, map, body)| {
                        let js = js.clone();
                        async move {
                            js.publish_with_headers(subject, map, body.into())
                                .await
                                .unwrap()
                                .await
                                .unwrap()
                        }
                    })
                    .buffer_unordered(256)
                    .collect::<Vec<_>>()
                    .await;
                assert_eq!(acks.len(), events.len());
                let mut by_index = BTreeMap::new();
                while by_index.len() < events.len() {
                    let m = tokio::time::timeout(VERDICT_TIMEOUT, verdicts.next())
                        .await
                        .expect("every verdict arrives")
                        .unwrap();
                    let i: usize = m.subject.rsplit('.').next().unwrap().parse().unwrap();
                    let r: PublishResponse = serde_json::from_slice(&m.payload).unwrap();
                    by_index.insert(i, r);
                }
                by_index.into_values().collect::<Vec<_>>()
            }));
        }
    }
    let mut answers: Vec<Vec<PublishResponse>> = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }

    for (i, event) in events.iter().enumerate() {
        let expected = saga_id(&event.source, &event.id).to_string();
        let mut fresh = 0;
        for publisher in &answers {
            let a = &publisher[i];
            assert_eq!(a.event_id, event.id);
            assert_eq!(
                a.saga_id, expected,
                "the same saga id on every acknowledgement"
            );
            assert_ne!(a.outcome(), PublishOutcome::Rejected, "{a:?}");
            assert_eq!(a.duplicate, a.outcome() == PublishOutcome::Duplicate);
            if !a.duplicate {
                fresh += 1;
            }
        }
        assert_eq!(
            fresh, 1,
            "event {i}: exactly one acknowledgement says 'accepted'"
        );
    }

    // Exactly one stored life event each, and nothing else in the store.
    let events_stream = h.js.get_stream("LEVENSLOOP_EVENTS").await.unwrap();
    let info = events_stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, u64::from(EVENTS));
    assert_eq!(info.state.subjects_count, u64::from(EVENTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_that_is_down_loses_nothing() {
    const EVENTS: u32 = 300;
    let mut h = Harness::start().await;
    h.stop_gateway().await;

    // Registries publish while no gateway runs: JetStream captures every message.
    let mut pending = Vec::new();
    for i in 0..EVENTS {
        let event = corpus::numbered_birth(10_000 + i);
        let Input::Nats {
            subject,
            headers,
            body,
        } = corpus::encode_binary_protobuf(&event)
        else {
            unreachable!()
        };
        pending.push((event, h.nats_publish(&subject, &headers, body).await));
    }
    let captured =
        h.js.get_stream(INGEST_STREAM)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
    assert_eq!(captured.state.messages, u64::from(EVENTS));

    // The gateway comes back and answers each of them.
    h.restart_gateway().await;
    let mut accepted = 0;
    for (event, mut verdicts) in pending {
        let v = verdict(&mut verdicts).await;
        assert_eq!(v.event_id, event.id);
        assert_ne!(v.outcome(), PublishOutcome::Rejected, "{v:?}");
        accepted += 1;
    }
    assert_eq!(accepted, EVENTS);
    let stored =
        h.js.get_stream("LEVENSLOOP_EVENTS")
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
    assert_eq!(stored.state.messages, u64::from(EVENTS));
    // Work-queue retention: what was handled is gone from the ingest stream.
    let left =
        h.js.get_stream(INGEST_STREAM)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
    assert_eq!(left.state.messages, 0);
}
