//! A scripted HTTP endpoint standing in for an integrator's webhook.
//!
//! Each path `/hook/<name>` answers POSTs with the status codes scripted for it, in order
//! (the last one repeats), and remembers every request: the name, the `Idempotency-Key`
//! header and the JSON body. Runs on the caller's tokio runtime, on a free port of 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

/// One request the webhook received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub name: String,
    pub idempotency_key: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
struct Script {
    answers: Arc<Mutex<HashMap<String, Vec<u16>>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A running scripted webhook; stops with the runtime.
#[derive(Debug, Clone)]
pub struct ScriptedWebhook {
    base: String,
    script: Script,
}

impl ScriptedWebhook {
    /// Starts serving `answers`: per name, the status codes to give in turn.
    pub async fn start(
        answers: impl IntoIterator<Item = (&'static str, Vec<u16>)>,
    ) -> std::io::Result<Self> {
        let script = Script::default();
        if let Ok(mut a) = script.answers.lock() {
            a.extend(answers.into_iter().map(|(n, codes)| (n.to_owned(), codes)));
        }
        let app = axum::Router::new()
            .route("/hook/{name}", axum::routing::post(answer))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base: format!("http://{addr}/hook"),
            script,
        })
    }

    /// The URL of one scripted name.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.script
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

async fn answer(
    State(script): State<Script>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::Json<serde_json::Value>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut received) = script.received.lock() {
        received.push(Received {
            name: name.clone(),
            idempotency_key,
            body: body.0,
        });
    }
    let code = script
        .answers
        .lock()
        .ok()
        .and_then(|mut answers| {
            let queue = answers.get_mut(&name)?;
            Some(if queue.len() > 1 {
                queue.remove(0)
            } else {
                *queue.first()?
            })
        })
        .unwrap_or(404);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(serde_json::json!({ "case": format!("{name}-{code}") })),
    )
}
