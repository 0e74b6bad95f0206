//! Sends operators' commands to the orchestrators (NATS request/reply, see
//! `levensloop/v1/command.proto`) and reads their answer.

use levensloop_proto::stored::SAGA_COMMAND_SUBJECT;
use levensloop_proto::v1;
use prost::Message;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("no orchestrator is running to take the command")]
    NoOrchestrator,
    #[error("the orchestrator did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the command could not be sent: {0}")]
    Transport(String),
    #[error("the orchestrator's answer does not decode: {0}")]
    BadAnswer(String),
}

#[derive(Debug, Clone)]
pub struct Steering {
    client: async_nats::Client,
    timeout: Duration,
}

impl Steering {
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    pub async fn send(
        &self,
        command: &v1::SagaCommand,
    ) -> Result<v1::SagaCommandReply, SteerError> {
        let request = async_nats::Request::new()
            .payload(command.encode_to_vec().into())
            .timeout(Some(self.timeout));
        let answer = self
            .client
            .send_request(SAGA_COMMAND_SUBJECT, request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => SteerError::NoOrchestrator,
                async_nats::RequestErrorKind::TimedOut => SteerError::TimedOut(self.timeout),
                _ => SteerError::Transport(e.to_string()),
            })?;
        v1::SagaCommandReply::decode(answer.payload.as_ref())
            .map_err(|e| SteerError::BadAnswer(e.to_string()))
    }
}
