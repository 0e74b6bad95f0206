//! The operators' web dashboard and its JSON API, over HTTP.
//!
//! Every `/api` endpoint is a gRPC method of [`OperationsApi`] called in-process: the same
//! authentication and roles (the bearer token of the `authorization` header; the local
//! operator when the service is open), the same filters, the same masking of INSZ numbers,
//! the same actions through the orchestrators. Bodies are the proto3 JSON mapping of the
//! gRPC messages (field names as in `operations.proto`, enums by name, 64-bit integers as
//! strings). Errors are `{"code": "...", "message": "..."}` with the HTTP status of the gRPC
//! code: 400 invalid, 401 unauthenticated, 403 not allowed, 404 not found, 409 failed
//! precondition, 503 unavailable.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /api/me` | who is calling: name, role, what the role may do |
//! | `GET /api/sagas?status=&type=&municipality=&handler=&since=&until=&person=&page_size=&page_token=` | `ListSagas`; `status` and `type` take comma-separated names (`failed,compensated`, `birth`), `since` and `until` a time (RFC 3339) or an age (`90s`, `15m`, `2h`, `7d`) |
//! | `GET /api/sagas/{id}` | `GetSaga`, and its [`chart`] |
//! | `POST /api/sagas/{id}/retry` `{"step": "...", "reason": "..."}` | `RetryStep`; answers like `GET /api/sagas/{id}` |
//! | `POST /api/sagas/{id}/skip` `{"step": "...", "reason": "..."}` | `SkipStep` |
//! | `POST /api/sagas/{id}/cancel` `{"reason": "..."}` | `CancelSaga` |
//! | `GET /api/stats` | `Stats`, and the [`throughput`] |
//! | `GET /api/incidents?page_size=&page_token=` | `ListIncidents` |
//! | `GET /api/rejected?page_size=&page_token=` | `ListRejected` |
//! | `GET /api/events?(the list's filters)&saga=` | `WatchSagas` as server-sent events: `saga` (a changed saga's summary), `lagged` (changes were missed: read again) |
//!
//! The pages (`/`, `/sagas`, `/sagas/{id}`, `/incidents`, `/rejected`) are one HTML shell
//! and plain JavaScript modules under `/assets/`, compiled into the binary; they call the
//! API above. Other routes (a `/metrics` endpoint) can be merged into [`router`]'s router.
//!
//! Actions come from the dashboard's own pages only: a `POST` must carry a JSON body (so a
//! cross-site form cannot send one without the browser asking first) and, when the browser
//! names an `Origin`, it must be this server.

use crate::auth::Caller;
use crate::chart::{self, Chart};
use crate::grpc::OperationsApi;
use crate::throughput::{Throughput, ThroughputView};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use levensloop_proto::v1::{self, operations_service_server::OperationsService};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Status};

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub api: OperationsApi,
    pub throughput: Arc<Throughput>,
}

/// The dashboard's routes: the pages, their assets, the JSON API and the event stream.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/sagas", get(page))
        .route("/sagas/{id}", get(page))
        .route("/incidents", get(page))
        .route("/rejected", get(page))
        .route("/assets/{name}", get(asset))
        .route("/api/me", get(me))
        .route("/api/sagas", get(list_sagas))
        .route("/api/sagas/{id}", get(get_saga))
        .route("/api/sagas/{id}/retry", post(retry_step))
        .route("/api/sagas/{id}/skip", post(skip_step))
        .route("/api/sagas/{id}/cancel", post(cancel_saga))
        .route("/api/stats", get(stats))
        .route("/api/incidents", get(incidents))
        .route("/api/rejected", get(rejected))
        .route("/api/events", get(events))
        .fallback(not_found)
        .with_state(dashboard)
}

// ---- errors ----

/// A gRPC status as an HTTP answer.
#[derive(Debug)]
pub struct ApiError(Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(self.0.code());
        let body = Json(ErrorBody {
            code: code_name(self.0.code()),
            message: self.0.message(),
        });
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn not_found(uri: Uri) -> ApiError {
    ApiError(Status::not_found(format!("nothing at {}", uri.path())))
}

// ---- calling the gRPC methods ----

/// A gRPC request carrying the HTTP caller's credentials.
fn request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn caller(api: &OperationsApi, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    api.operators
        .authenticate(header)
        .map_err(|e| ApiError(Status::unauthenticated(e.to_string())))
}

// ---- the API ----

#[derive(Debug, Serialize)]
struct Me {
    name: String,
    role: &'static str,
    may_act: bool,
    sees_insz: bool,
    /// No operators file: everyone is the local operator.
    open: bool,
}

async fn me(State(d): State<Dashboard>, headers: HeaderMap) -> ApiResult<Me> {
    let caller = caller(&d.api, &headers)?;
    Ok(Json(Me {
        role: match caller.role {
            crate::auth::Role::Viewer => "viewer",
            crate::auth::Role::Operator => "operator",
            crate::auth::Role::Supervisor => "supervisor",
        },
        may_act: caller.role.may_act(),
        sees_insz: caller.role.sees_insz(),
        open: d.api.operators.is_open(),
        name: caller.name,
    }))
}

/// The list's filter, as query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct FilterParams {
    /// Comma-separated statuses: `running`, `failed,compensated`, …
    pub status: Option<String>,
    /// Comma-separated life event types: `birth`, `death`, `change-of-address`,
    /// `driving-exam-passed`.
    #[serde(rename = "type")]
    pub types: Option<String>,
    pub municipality: Option<String>,
    pub handler: Option<String>,
    /// Started at or after: RFC 3339, or an age (`15m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Started before: the same forms.
    pub until: Option<String>,
    /// The person's INSZ (11 digits; separators ignored).
    pub person: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    page_size: Option<String>,
    page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct EventParams {
    #[serde(flatten)]
    filter: FilterParams,
    /// Only this saga's changes.
    saga: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PageParams {
    page_size: Option<String>,
    page_token: Option<String>,
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn page_size(value: Option<&str>) -> Result<u32, ApiError> {
    present(value).map_or(Ok(0), |v| {
        v.parse().map_err(|_| {
            ApiError(Status::invalid_argument(format!(
                "page_size {v:?} is not a number"
            )))
        })
    })
}

/// A saga status by its short name (`running`) or its proto name (`SAGA_STATUS_RUNNING`).
pub fn parse_status(name: &str) -> Option<v1::SagaStatus> {
    let upper = name.trim().to_ascii_uppercase().replace('-', "_");
    let full = if upper.starts_with("SAGA_STATUS_") {
        upper
    } else {
        format!("SAGA_STATUS_{upper}")
    };
    v1::SagaStatus::from_str_name(&full).filter(|s| *s != v1::SagaStatus::Unspecified)
}

/// A life event type by its short name (`birth`, `change-of-address`), its CloudEvents type
/// or its proto name (`LIFE_EVENT_TYPE_BIRTH`).
pub fn parse_type(name: &str) -> Option<v1::LifeEventType> {
    let name = name.trim();
    let t = v1::LifeEventType::from_str_name(name)
        .unwrap_or_else(|| crate::summary::life_event_type(&name.to_ascii_lowercase()));
    (t != v1::LifeEventType::Unspecified).then_some(t)
}

/// A time: RFC 3339, or an age before `now` (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    let split = value.len().checked_sub(1)?;
    let (number, unit) = value.split_at(split);
    let n: i64 = number.parse().ok().filter(|n| *n >= 0)?;
    let age = match unit {
        "s" => TimeDelta::try_seconds(n),
        "m" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        _ => None,
    }?;
    now.checked_sub_signed(age)
}

/// The API's filter from query parameters; a value that names nothing is refused.
pub fn filter_of(params: &FilterParams, now: DateTime<Utc>) -> Result<v1::SagaFilter, Status> {
    let list = |value: Option<&str>| -> Vec<String> {
        present(value)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let statuses = list(params.status.as_deref())
        .iter()
        .map(|s| {
            parse_status(s).map(|s| s as i32).ok_or_else(|| {
                Status::invalid_argument(format!("status {s:?} is not a saga status"))
            })
        })
        .collect::<Result<_, _>>()?;
    let types = list(params.types.as_deref())
        .iter()
        .map(|t| {
            parse_type(t).map(|t| t as i32).ok_or_else(|| {
                Status::invalid_argument(format!("type {t:?} is not a life event type"))
            })
        })
        .collect::<Result<_, _>>()?;
    let time = |value: Option<&str>, name: &str| {
        present(value)
            .map(|v| {
                parse_time(v, now)
                    .map(crate::summary::to_timestamp)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "{name} {v:?}: give a time (RFC 3339) or an age (15m, 2h, 7d)"
                        ))
                    })
            })
            .transpose()
    };
    Ok(v1::SagaFilter {
        statuses,
        types,
        municipality_nis_code: present(params.municipality.as_deref())
            .unwrap_or_default()
            .to_owned(),
        handler: present(params.handler.as_deref())
            .unwrap_or_default()
            .to_owned(),
        started_after: time(params.since.as_deref(), "since")?,
        started_before: time(params.until.as_deref(), "until")?,
        person_insz: present(params.person.as_deref())
            .unwrap_or_default()
            .to_owned(),
    })
}

async fn list_sagas(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> ApiResult<v1::ListSagasResponse> {
    let filter = filter_of(&params.filter, Utc::now())?;
    let message = v1::ListSagasRequest {
        filter: Some(filter),
        page_size: page_size(params.page_size.as_deref())?,
        page_token: params.page_token.unwrap_or_default(),
    };
    let response = d.api.list_sagas(request(&headers, message)).await?;
    Ok(Json(response.into_inner()))
}

/// A saga as the saga page shows it.
#[derive(Debug, Serialize)]
pub struct SagaView {
    pub detail: v1::SagaDetail,
    pub chart: Chart,
}

fn view(detail: v1::SagaDetail) -> SagaView {
    let chart = chart::chart(&detail, Utc::now());
    SagaView { detail, chart }
}

async fn get_saga(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<SagaView> {
    let detail = d
        .api
        .get_saga(request(&headers, v1::GetSagaRequest { saga_id: id }))
        .await?;
    Ok(Json(view(detail.into_inner())))
}

/// An operator's action: the step (retry, skip) and why.
#[derive(Debug, Default, Deserialize)]
struct ActionBody {
    #[serde(default)]
    step: String,
    #[serde(default)]
    reason: String,
}

/// Refuses a request another site's page made the browser send.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if host.is_empty() || origin_host != host {
        return Err(ApiError(Status::permission_denied(format!(
            "actions are taken from this dashboard's own pages, not from {origin}"
        ))));
    }
    Ok(())
}

fn action_body(body: Result<Json<ActionBody>, JsonRejection>) -> Result<ActionBody, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        ApiError(Status::invalid_argument(format!(
            "the body must be JSON like {{\"step\": \"...\", \"reason\": \"...\"}}: {}",
            e.body_text()
        )))
    })
}

async fn retry_step(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult<SagaView> {
    same_origin(&headers)?;
    let body = action_body(body)?;
    let message = v1::RetryStepRequest {
        saga_id: id,
        step_id: body.step,
        reason: body.reason,
        ..Default::default()
    };
    let detail = d.api.retry_step(request(&headers, message)).await?;
    Ok(Json(view(detail.into_inner())))
}

async fn skip_step(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult<SagaView> {
    same_origin(&headers)?;
    let body = action_body(body)?;
    let message = v1::SkipStepRequest {
        saga_id: id,
        step_id: body.step,
        reason: body.reason,
        ..Default::default()
    };
    let detail = d.api.skip_step(request(&headers, message)).await?;
    Ok(Json(view(detail.into_inner())))
}

async fn cancel_saga(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult<SagaView> {
    same_origin(&headers)?;
    let body = action_body(body)?;
    let message = v1::CancelSagaRequest {
        saga_id: id,
        reason: body.reason,
        ..Default::default()
    };
    let detail = d.api.cancel_saga(request(&headers, message)).await?;
    Ok(Json(view(detail.into_inner())))
}

#[derive(Debug, Serialize)]
struct StatsView {
    stats: v1::StatsResponse,
    throughput: ThroughputView,
}

async fn stats(State(d): State<Dashboard>, headers: HeaderMap) -> ApiResult<StatsView> {
    let stats = d.api.stats(request(&headers, v1::StatsRequest {})).await?;
    Ok(Json(StatsView {
        stats: stats.into_inner(),
        throughput: d.throughput.view(Utc::now()),
    }))
}

async fn incidents(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(params): Query<PageParams>,
) -> ApiResult<v1::ListIncidentsResponse> {
    let message = v1::ListIncidentsRequest {
        page_size: page_size(params.page_size.as_deref())?,
        page_token: params.page_token.unwrap_or_default(),
    };
    let response = d.api.list_incidents(request(&headers, message)).await?;
    Ok(Json(response.into_inner()))
}

async fn rejected(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(params): Query<PageParams>,
) -> ApiResult<v1::ListRejectedResponse> {
    let message = v1::ListRejectedRequest {
        page_size: page_size(params.page_size.as_deref())?,
        page_token: params.page_token.unwrap_or_default(),
    };
    let response = d.api.list_rejected(request(&headers, message)).await?;
    Ok(Json(response.into_inner()))
}

/// `WatchSagas` as server-sent events, optionally narrowed to one saga.
async fn events(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = filter_of(&params.filter, Utc::now())?;
    let saga = present(params.saga.as_deref()).map(str::to_owned);
    let changes = d
        .api
        .watch_sagas(request(
            &headers,
            v1::WatchSagasRequest {
                filter: Some(filter),
            },
        ))
        .await?
        .into_inner();
    let hello = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let stream = changes.filter_map(move |change| {
        let event = match change {
            Ok(summary) if saga.as_ref().is_none_or(|s| *s == summary.saga_id) => {
                match Event::default().event("saga").json_data(&summary) {
                    Ok(event) => Some(Ok(event)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a change not sent to the dashboard");
                        None
                    }
                }
            }
            Ok(_) => None,
            Err(status) => Some(Ok(Event::default().event("lagged").data(status.message()))),
        };
        futures::future::ready(event)
    });
    Ok(
        Sse::new(hello.chain(stream))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

// ---- pages and assets ----

/// The pages' security: only this server's own scripts, styles and connections.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

const INDEX: &str = include_str!("dashboard/index.html");

/// The assets under `/assets/`: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/api.js"),
    ),
    (
        "format.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/format.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/overview.js"),
    ),
    (
        "sagas.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/sagas.js"),
    ),
    (
        "saga.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/saga.js"),
    ),
    (
        "gantt.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/gantt.js"),
    ),
    (
        "lists.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/lists.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("dashboard/favicon.svg"),
    ),
];

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Served from memory and small: always revalidated, so a new binary's pages show at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            secured(([(header::CONTENT_TYPE, *content_type)], *body).into_response())
        }
        None => ApiError(Status::not_found(format!("no asset {name}"))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_as_the_cli_writes_them() {
        let now = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let params = FilterParams {
            status: Some("running, FAILED,SAGA_STATUS_PARKED".into()),
            types: Some("birth,change-of-address".into()),
            municipality: Some(" 44021 ".into()),
            since: Some("2h".into()),
            until: Some("2026-10-19T09:42:00Z".into()),
            ..Default::default()
        };
        let filter = filter_of(&params, now).unwrap();
        assert_eq!(
            filter.statuses,
            [
                v1::SagaStatus::Running as i32,
                v1::SagaStatus::Failed as i32,
                v1::SagaStatus::Parked as i32
            ]
        );
        assert_eq!(
            filter.types,
            [
                v1::LifeEventType::Birth as i32,
                v1::LifeEventType::ChangeOfAddress as i32
            ]
        );
        assert_eq!(filter.municipality_nis_code, "44021");
        assert_eq!(filter.started_after.unwrap().seconds, 1_790_000_000 - 7200);
        assert_eq!(filter.started_before.unwrap().seconds, 1_792_402_920);
        assert!(filter.handler.is_empty() && filter.person_insz.is_empty());
    }

    #[test]
    fn a_filter_value_that_names_nothing_is_refused() {
        let now = Utc::now();
        for params in [
            FilterParams {
                status: Some("sleeping".into()),
                ..Default::default()
            },
            FilterParams {
                types: Some("wedding".into()),
                ..Default::default()
            },
            FilterParams {
                since: Some("yesterday".into()),
                ..Default::default()
            },
        ] {
            let refused = filter_of(&params, now).unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{params:?}");
        }
        assert_eq!(
            filter_of(&FilterParams::default(), now).unwrap(),
            v1::SagaFilter::default()
        );
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn every_module_and_file_the_pages_load_is_served() {
        let served = |name: &str| ASSETS.iter().any(|(n, _, _)| *n == name);
        let mut wanted = Vec::new();
        for source in std::iter::once(INDEX).chain(ASSETS.iter().map(|(_, _, body)| *body)) {
            for (marker, end) in [("from \"./", '"'), ("/assets/", '"')] {
                for (i, _) in source.match_indices(marker) {
                    let rest = &source[i + marker.len()..];
                    if let Some(name) = rest.split(end).next() {
                        wanted.push(name.to_owned());
                    }
                }
            }
        }
        assert!(wanted.iter().any(|n| n == "app.js"), "{wanted:?}");
        for name in &wanted {
            assert!(served(name), "{name} is loaded by a page but not served");
        }
        for (name, content_type, _) in ASSETS {
            assert!(
                content_type.starts_with(match name.rsplit('.').next() {
                    Some("js") => "text/javascript",
                    Some("css") => "text/css",
                    _ => "image/svg+xml",
                }),
                "{name}: {content_type}"
            );
        }
    }

    #[test]
    fn only_same_origin_requests_may_act() {
        let mut headers = HeaderMap::new();
        assert!(
            same_origin(&headers).is_ok(),
            "no Origin: not a browser's cross-site request"
        );
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(same_origin(&headers).is_err());
    }
}
