//! `ListRejected`: what the gateway refused, newest first, read from the rejected stream
//! (each input kept exactly as received, with the reason in its headers).
//!
//! The page token is the stream sequence to continue below, so paging is stable while new
//! refusals arrive.

use async_nats::jetstream;
use levensloop_proto::stored::{HEADER_ORIGIN, HEADER_REASON, HEADER_REASON_CODE, REJECTED_STREAM};
use levensloop_proto::types::Timestamp;
use levensloop_proto::v1;

#[derive(Debug, thiserror::Error)]
pub enum RejectedError {
    #[error("the page token {0:?} is not one this service gave out")]
    BadToken(String),
    #[error("the rejected stream is unavailable: {0}")]
    Unavailable(String),
}

/// Reads the rejected stream.
#[derive(Debug, Clone)]
pub struct RejectedReader {
    js: jetstream::Context,
}

impl RejectedReader {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(client),
        }
    }

    /// Up to `page_size` refusals before the token's position (from the newest without one).
    pub async fn list(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<v1::ListRejectedResponse, RejectedError> {
        let below = if page_token.is_empty() {
            None
        } else {
            Some(
                page_token
                    .parse::<u64>()
                    .map_err(|_| RejectedError::BadToken(page_token.to_owned()))?,
            )
        };
        let page_size = page_size.clamp(1, 500) as usize;
        let mut stream = match self.js.get_stream(REJECTED_STREAM).await {
            Ok(s) => s,
            // The gateway creates the stream; before it ever ran, nothing was refused.
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(v1::ListRejectedResponse::default());
            }
            Err(e) => return Err(RejectedError::Unavailable(e.to_string())),
        };
        let state = stream
            .info()
            .await
            .map_err(|e| RejectedError::Unavailable(e.to_string()))?
            .state
            .clone();
        let mut seq = below.map_or(state.last_sequence, |b| b.saturating_sub(1));
        let mut rejected = Vec::with_capacity(page_size);
        while seq >= state.first_sequence.max(1) && rejected.len() < page_size {
            match stream.direct_get(seq).await {
                Ok(message) => rejected.push(to_proto(&message)),
                // Removed by the retention limit or an operator: nothing to show.
                Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => {}
                Err(e) => return Err(RejectedError::Unavailable(e.to_string())),
            }
            seq -= 1;
        }
        let more = seq >= state.first_sequence.max(1);
        Ok(v1::ListRejectedResponse {
            rejected,
            next_page_token: if more {
                (seq + 1).to_string()
            } else {
                String::new()
            },
        })
    }
}

fn to_proto(message: &jetstream::message::StreamMessage) -> v1::RejectedInput {
    let header = |name: &str| -> String {
        message
            .headers
            .iter()
            .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first())
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let mut content_type = header("Content-Type");
    if content_type.is_empty() {
        content_type = header("ce-datacontenttype");
    }
    let received = message.time;
    v1::RejectedInput {
        origin: header(HEADER_ORIGIN),
        received_at: Some(Timestamp {
            seconds: received.unix_timestamp(),
            nanos: received.nanosecond() as i32,
        }),
        reason_code: header(HEADER_REASON_CODE),
        reason: header(HEADER_REASON),
        original: message.payload.to_vec(),
        content_type,
    }
}
