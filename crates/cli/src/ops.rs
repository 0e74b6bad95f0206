//! The operators' commands: `sagas list`, `saga show|watch|retry|skip|cancel`, `incidents`,
//! `rejected`, `handlers`, `stats`. They talk to the operations service (and, for `handlers`,
//! the handlers service) over gRPC; the renderers are pure functions of the answers, so their
//! output is tested as text.

use crate::Output;
use crate::saga::line;
use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use levensloop_proto::types::Timestamp;
use levensloop_proto::v1::{
    self, handler_service_client::HandlerServiceClient,
    operations_service_client::OperationsServiceClient,
};
use std::io::Write;
use tonic::transport::Channel;

/// Where the services are and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The operations service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "LEVENSLOOP_OPERATIONS_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub operations_url: String,
    /// The handlers service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "LEVENSLOOP_HANDLERS_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub handlers_url: String,
    /// The operator's bearer token (see the operations service's `--operators` file).
    #[arg(long, global = true, env = "LEVENSLOOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Which sagas: the filters of `sagas list` and `saga watch`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only sagas in these statuses (running, parked, compensating, completed, compensated,
    /// failed, cancelled); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only these life events (birth, death, move, driving-exam).
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only sagas acting for this municipality (REFNIS code, e.g. 44021 for Gent).
    #[arg(long)]
    pub municipality: Option<String>,
    /// Only sagas with a step for this handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Only sagas started since: a duration back from now (30m, 2h, 7d) or a date/time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only sagas started before: a duration back from now or a date/time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only sagas about this person (INSZ, 11 digits).
    #[arg(long)]
    pub person: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many (the service pages through the rest).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page (its `next page:` token).
        #[arg(long)]
        page_token: Option<String>,
    },
}

/// A saga's id and step, for the actions.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// Print a saga's timeline: every event with its time, and where each step stands.
    Show { id: uuid::Uuid },
    /// Print sagas as they change (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        filter: Filter,
    },
    /// Retry a step now (a failed one, one waiting for its retry, or a compensation).
    Retry {
        id: uuid::Uuid,
        step: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Skip a step (it counts as done), or a compensation that cannot be done.
    Skip {
        id: uuid::Uuid,
        step: String,
        #[arg(long)]
        reason: String,
    },
    /// Cancel a saga: what was done is compensated, then it ends Cancelled.
    Cancel {
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
    },
}

/// The operators' commands that take no saga.
#[derive(Debug)]
pub enum Query {
    Incidents { limit: u32 },
    Rejected { limit: u32 },
    Handlers { all: bool },
    Stats,
}

async fn operations(
    connection: &Connection,
) -> anyhow::Result<
    OperationsServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>,
> {
    let channel = Channel::from_shared(connection.operations_url.clone())
        .context("the operations URL")?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach the operations service at {} (is `infra/just up` running?)",
                connection.operations_url
            )
        })?;
    Ok(OperationsServiceClient::with_interceptor(
        channel,
        Bearer(connection.token.clone()),
    ))
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                tonic::Status::invalid_argument("the token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A gRPC refusal as the operator should read it.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn sagas(
    connection: &Connection,
    command: SagasCommand,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let SagasCommand::List {
        filter,
        limit,
        page_token,
    } = command;
    let mut client = operations(connection).await?;
    let filter = filter.to_proto(Utc::now())?;
    let mut sagas = Vec::new();
    let mut token = page_token.unwrap_or_default();
    // Pages until the limit: the service caps a page, the operator asked for a count.
    loop {
        let want = limit.saturating_sub(sagas.len() as u32);
        if want == 0 {
            break;
        }
        let page = client
            .list_sagas(v1::ListSagasRequest {
                filter: Some(filter.clone()),
                page_size: want,
                page_token: token.clone(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        sagas.extend(page.sagas);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    sagas.truncate(limit as usize);
    print_list(&sagas, output, out, sagas_table)?;
    if output == Output::Table && !token.is_empty() {
        writeln!(out, "next page: --page-token {token}")?;
    }
    Ok(())
}

pub async fn saga(
    connection: &Connection,
    command: SagaCommand,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = operations(connection).await?;
    let detail = match command {
        SagaCommand::Show { id } => client
            .get_saga(v1::GetSagaRequest {
                saga_id: id.to_string(),
            })
            .await
            .map_err(refused)?
            .into_inner(),
        SagaCommand::Watch { filter } => {
            let mut changes = client
                .watch_sagas(v1::WatchSagasRequest {
                    filter: Some(filter.to_proto(Utc::now())?),
                })
                .await
                .map_err(refused)?
                .into_inner();
            while let Some(saga) = changes.message().await.map_err(refused)? {
                match output {
                    Output::Json => writeln!(out, "{}", serde_json::to_string(&saga)?)?,
                    Output::Table => writeln!(out, "{}", watch_line(&saga))?,
                }
                out.flush()?;
            }
            return Ok(());
        }
        SagaCommand::Retry { id, step, reason } => client
            .retry_step(v1::RetryStepRequest {
                saga_id: id.to_string(),
                step_id: step,
                actor: String::new(),
                reason,
            })
            .await
            .map_err(refused)?
            .into_inner(),
        SagaCommand::Skip { id, step, reason } => client
            .skip_step(v1::SkipStepRequest {
                saga_id: id.to_string(),
                step_id: step,
                actor: String::new(),
                reason,
            })
            .await
            .map_err(refused)?
            .into_inner(),
        SagaCommand::Cancel { id, reason } => client
            .cancel_saga(v1::CancelSagaRequest {
                saga_id: id.to_string(),
                actor: String::new(),
                reason,
            })
            .await
            .map_err(refused)?
            .into_inner(),
    };
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string(&detail)?)?,
        Output::Table => write!(out, "{}", saga_detail(&detail))?,
    }
    Ok(())
}

/// A list as a table, or one JSON document per item.
fn print_list<T: serde::Serialize>(
    items: &[T],
    output: Output,
    out: &mut impl Write,
    table: impl Fn(&[T]) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            for item in items {
                writeln!(out, "{}", serde_json::to_string(item)?)?;
            }
        }
        Output::Table => write!(out, "{}", table(items))?,
    }
    Ok(())
}

pub async fn query(
    connection: &Connection,
    query: Query,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let Query::Handlers { all } = query {
        let channel = Channel::from_shared(connection.handlers_url.clone())
            .context("the handlers URL")?
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the handlers service at {}",
                    connection.handlers_url
                )
            })?;
        let handlers = HandlerServiceClient::new(channel)
            .list_handlers(v1::ListHandlersRequest {
                include_deregistered: all,
            })
            .await
            .map_err(refused)?
            .into_inner()
            .handlers;
        return print_list(&handlers, output, out, handlers_table);
    }
    let mut client = operations(connection).await?;
    match query {
        Query::Handlers { .. } => {}
        Query::Incidents { limit } => {
            let incidents = client
                .list_incidents(v1::ListIncidentsRequest {
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(refused)?
                .into_inner()
                .incidents;
            print_list(&incidents, output, out, incidents_table)?;
        }
        Query::Rejected { limit } => {
            let rejected = client
                .list_rejected(v1::ListRejectedRequest {
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(refused)?
                .into_inner()
                .rejected;
            print_list(&rejected, output, out, rejected_table)?;
        }
        Query::Stats => {
            let stats = client
                .stats(v1::StatsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            match output {
                Output::Json => writeln!(out, "{}", serde_json::to_string(&stats)?)?,
                Output::Table => write!(out, "{}", stats_tables(&stats))?,
            }
        }
    }
    Ok(())
}

impl Filter {
    /// The filter as the API takes it; `now` anchors durations like `2h`.
    pub fn to_proto(&self, now: DateTime<Utc>) -> anyhow::Result<v1::SagaFilter> {
        let statuses = self
            .status
            .iter()
            .map(|s| parse_status(s).map(i32::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let types = self
            .types
            .iter()
            .map(|t| parse_type(t).map(i32::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let moment = |s: &Option<String>| -> anyhow::Result<Option<Timestamp>> {
            s.as_deref()
                .map(|s| parse_moment(s, now).map(timestamp))
                .transpose()
        };
        Ok(v1::SagaFilter {
            statuses,
            types,
            municipality_nis_code: self.municipality.clone().unwrap_or_default(),
            handler: self.handler.clone().unwrap_or_default(),
            started_after: moment(&self.since)?,
            started_before: moment(&self.until)?,
            person_insz: self.person.clone().unwrap_or_default(),
        })
    }
}

fn parse_status(s: &str) -> anyhow::Result<v1::SagaStatus> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "running" => v1::SagaStatus::Running,
        "parked" => v1::SagaStatus::Parked,
        "compensating" => v1::SagaStatus::Compensating,
        "completed" => v1::SagaStatus::Completed,
        "compensated" => v1::SagaStatus::Compensated,
        "failed" => v1::SagaStatus::Failed,
        "cancelled" => v1::SagaStatus::Cancelled,
        other => anyhow::bail!(
            "unknown status {other:?}: running, parked, compensating, completed, compensated, failed or cancelled"
        ),
    })
}

fn parse_type(s: &str) -> anyhow::Result<v1::LifeEventType> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "birth" => v1::LifeEventType::Birth,
        "death" => v1::LifeEventType::Death,
        "move" | "change-of-address" => v1::LifeEventType::ChangeOfAddress,
        "driving-exam" | "driving-exam-passed" => v1::LifeEventType::DrivingExamPassed,
        other => anyhow::bail!("unknown life event {other:?}: birth, death, move or driving-exam"),
    })
}

/// `30m`, `2h`, `7d` back from `now`, an RFC 3339 time, or a date (its midnight, UTC).
fn parse_moment(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let s = s.trim();
    if let Some((digits, unit)) = s
        .char_indices()
        .last()
        .map(|(i, c)| (&s[..i], c))
        .filter(|(d, _)| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    {
        let n: i64 = digits.parse().context("a duration")?;
        let back = match unit {
            's' => chrono::Duration::seconds(n),
            'm' => chrono::Duration::minutes(n),
            'h' => chrono::Duration::hours(n),
            'd' => chrono::Duration::days(n),
            _ => anyhow::bail!("{s:?}: a duration ends in s, m, h or d"),
        };
        return Ok(now - back);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    anyhow::bail!("{s:?} is neither a duration (30m, 2h, 7d), an RFC 3339 time nor a date")
}

fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn when(t: Option<&Timestamp>) -> String {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// The operator's word for a life event type.
pub fn type_name(t: i32) -> &'static str {
    match v1::LifeEventType::try_from(t) {
        Ok(v1::LifeEventType::Birth) => "birth",
        Ok(v1::LifeEventType::Death) => "death",
        Ok(v1::LifeEventType::ChangeOfAddress) => "move",
        Ok(v1::LifeEventType::DrivingExamPassed) => "driving-exam",
        _ => "-",
    }
}

pub fn status_name(s: i32) -> &'static str {
    match v1::SagaStatus::try_from(s) {
        Ok(v1::SagaStatus::Running) => "running",
        Ok(v1::SagaStatus::Parked) => "parked",
        Ok(v1::SagaStatus::Compensating) => "compensating",
        Ok(v1::SagaStatus::Completed) => "completed",
        Ok(v1::SagaStatus::Compensated) => "compensated",
        Ok(v1::SagaStatus::Failed) => "failed",
        Ok(v1::SagaStatus::Cancelled) => "cancelled",
        _ => "-",
    }
}

pub fn step_status_name(s: i32) -> &'static str {
    match v1::StepStatus::try_from(s) {
        Ok(v1::StepStatus::Pending) => "pending",
        Ok(v1::StepStatus::Running) => "running",
        Ok(v1::StepStatus::Waiting) => "waiting",
        Ok(v1::StepStatus::Succeeded) => "succeeded",
        Ok(v1::StepStatus::Failed) => "failed",
        Ok(v1::StepStatus::Skipped) => "skipped",
        Ok(v1::StepStatus::Compensating) => "compensating",
        Ok(v1::StepStatus::Compensated) => "compensated",
        _ => "-",
    }
}

/// Columns padded to their widest cell, two spaces apart, like `kubectl get`.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn current_steps(steps: &[v1::StepSummary]) -> String {
    if steps.is_empty() {
        return "-".to_owned();
    }
    steps
        .iter()
        .map(|s| {
            if s.attempts > 1 {
                format!(
                    "{} ({}, attempt {})",
                    s.step_id,
                    step_status_name(s.status),
                    s.attempts
                )
            } else {
                format!("{} ({})", s.step_id, step_status_name(s.status))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn sagas_table(sagas: &[v1::SagaSummary]) -> String {
    if sagas.is_empty() {
        return "No sagas match.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = sagas
        .iter()
        .map(|s| {
            vec![
                s.saga_id.clone(),
                type_name(s.r#type).to_owned(),
                status_name(s.status).to_owned(),
                or_dash(&s.municipality_nis_code),
                or_dash(&s.person_insz),
                when(s.started_at.as_ref()),
                current_steps(&s.current_steps),
            ]
        })
        .collect();
    columns(
        &[
            "SAGA",
            "TYPE",
            "STATUS",
            "MUNICIPALITY",
            "PERSON",
            "STARTED",
            "CURRENT STEPS",
        ],
        &rows,
    )
}

fn watch_line(s: &v1::SagaSummary) -> String {
    format!(
        "{}  {}  {}  {}  {}",
        when(s.updated_at.as_ref()),
        s.saga_id,
        type_name(s.r#type),
        status_name(s.status),
        current_steps(&s.current_steps)
    )
}

pub fn saga_detail(detail: &v1::SagaDetail) -> String {
    let mut text = String::new();
    if let Some(s) = &detail.summary {
        text.push_str(&format!(
            "saga {}  {}  {}\n",
            s.saga_id,
            type_name(s.r#type),
            status_name(s.status).to_uppercase()
        ));
        text.push_str(&format!(
            "  life event {} from {}, municipality {}, person {}\n",
            or_dash(&s.life_event_id),
            or_dash(&s.life_event_source),
            or_dash(&s.municipality_nis_code),
            or_dash(&s.person_insz)
        ));
        text.push_str(&format!(
            "  started {}, updated {}, finished {}\n",
            when(s.started_at.as_ref()),
            when(s.updated_at.as_ref()),
            when(s.finished_at.as_ref())
        ));
        if !s.last_error.is_empty() {
            text.push_str(&format!("  last error: {}\n", s.last_error));
        }
    }
    text.push_str("\nSteps\n");
    let rows: Vec<Vec<String>> = detail
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step_id.clone(),
                or_dash(&s.handler),
                step_status_name(s.status).to_owned(),
                s.attempts.to_string(),
            ]
        })
        .collect();
    text.push_str(&indent(&columns(
        &["STEP", "HANDLER", "STATUS", "ATTEMPTS"],
        &rows,
    )));
    text.push_str("\nTimeline\n");
    for entry in &detail.timeline {
        let line = entry.event.as_ref().map(line).unwrap_or_default();
        text.push_str(&format!("  {}  {}\n", when(entry.at.as_ref()), line));
    }
    text
}

fn indent(block: &str) -> String {
    block.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn incidents_table(incidents: &[v1::Incident]) -> String {
    if incidents.is_empty() {
        return "No open incidents.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                when(i.raised_at.as_ref()),
                i.saga_id.clone(),
                or_dash(&i.step_id),
                i.reason.clone(),
            ]
        })
        .collect();
    columns(&["RAISED", "SAGA", "STEP", "REASON"], &rows)
}

pub fn rejected_table(rejected: &[v1::RejectedInput]) -> String {
    if rejected.is_empty() {
        return "Nothing rejected.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = rejected
        .iter()
        .map(|r| {
            vec![
                when(r.received_at.as_ref()),
                or_dash(&r.origin),
                or_dash(&r.reason_code),
                r.reason.clone(),
            ]
        })
        .collect();
    columns(&["RECEIVED", "ORIGIN", "CODE", "REASON"], &rows)
}

pub fn handlers_table(handlers: &[v1::HandlerRegistration]) -> String {
    if handlers.is_empty() {
        return "No handlers registered.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = handlers
        .iter()
        .map(|h| {
            let spec = h.spec.clone().unwrap_or_default();
            let types = spec
                .life_event_types
                .iter()
                .map(|t| type_name(*t))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                spec.name,
                h.version.to_string(),
                or_dash(&spec.owner),
                or_dash(&types),
                or_dash(&spec.after_steps.join(",")),
                if spec.blocking {
                    "blocking"
                } else {
                    "alongside"
                }
                .to_owned(),
                if spec.webhook_url.is_empty() {
                    "work stream".to_owned()
                } else {
                    spec.webhook_url
                },
                if h.deregistered {
                    "deregistered"
                } else {
                    "active"
                }
                .to_owned(),
            ]
        })
        .collect();
    columns(
        &[
            "NAME",
            "VERSION",
            "OWNER",
            "LIFE EVENTS",
            "AFTER",
            "MODE",
            "SERVED BY",
            "STATUS",
        ],
        &rows,
    )
}

pub fn stats_tables(stats: &v1::StatsResponse) -> String {
    let rows: Vec<Vec<String>> = stats
        .by_status
        .iter()
        .map(|c| {
            vec![
                type_name(c.r#type).to_owned(),
                status_name(c.status).to_owned(),
                c.count.to_string(),
            ]
        })
        .collect();
    let mut text = columns(&["TYPE", "STATUS", "SAGAS"], &rows);
    text.push('\n');
    let rows: Vec<Vec<String>> = stats
        .step_latency
        .iter()
        .map(|h| {
            vec![
                h.handler.clone(),
                format!("{:.1}", h.p50_ms),
                format!("{:.1}", h.p95_ms),
                format!("{:.1}", h.p99_ms),
            ]
        })
        .collect();
    text.push_str(&columns(&["HANDLER", "P50 MS", "P95 MS", "P99 MS"], &rows));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| timestamp(t.with_timezone(&Utc)))
    }

    #[test]
    fn columns_pad_to_the_widest_cell_and_trim_the_end() {
        let text = columns(
            &["A", "LONGER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), "".into()],
                vec!["y".into(), "z".into(), "last".into()],
            ],
        );
        assert_eq!(
            text,
            "A          LONGER  C\nwide cell  x\ny          z       last\n"
        );
    }

    #[test]
    fn durations_dates_and_times_are_moments() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_moment(s, now).unwrap().to_rfc3339();
        assert_eq!(at("90m"), "2026-12-06T10:30:00+00:00");
        assert_eq!(at("7d"), "2026-11-29T12:00:00+00:00");
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00+00:00");
        assert_eq!(at("2026-12-01T08:15:00+01:00"), "2026-12-01T07:15:00+00:00");
        assert!(parse_moment("5y", now).is_err());
        assert!(parse_moment("yesterday", now).is_err());
    }

    #[test]
    fn filters_name_what_is_wrong() {
        let filter = Filter {
            status: vec!["runing".into()],
            ..Filter::default()
        };
        let err = filter.to_proto(Utc::now()).unwrap_err().to_string();
        assert!(err.starts_with("unknown status \"runing\""), "{err}");
        let filter = Filter {
            status: vec!["failed".into(), "Parked".into()],
            types: vec!["move".into()],
            municipality: Some("44021".into()),
            ..Filter::default()
        };
        let proto = filter.to_proto(Utc::now()).unwrap();
        assert_eq!(
            proto.statuses,
            [v1::SagaStatus::Failed as i32, v1::SagaStatus::Parked as i32]
        );
        assert_eq!(proto.types, [v1::LifeEventType::ChangeOfAddress as i32]);
        assert_eq!(proto.municipality_nis_code, "44021");
    }

    #[test]
    fn a_saga_list_reads_like_kubectl() {
        let saga = v1::SagaSummary {
            saga_id: "6f1c0000-0000-5000-8000-000000000001".into(),
            r#type: v1::LifeEventType::Death as i32,
            municipality_nis_code: "44021".into(),
            person_insz: "85.07.30-***.**".into(),
            status: v1::SagaStatus::Running as i32,
            started_at: ts("2026-12-06T09:00:00Z"),
            current_steps: vec![
                v1::StepSummary {
                    step_id: "close-waste-account".into(),
                    handler: "diftar.close-account".into(),
                    status: v1::StepStatus::Waiting as i32,
                    attempts: 2,
                },
                v1::StepSummary {
                    step_id: "library".into(),
                    handler: "bibliotheek.close-account".into(),
                    status: v1::StepStatus::Running as i32,
                    attempts: 1,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            sagas_table(&[saga]),
            "SAGA                                  TYPE   STATUS   MUNICIPALITY  PERSON           STARTED              CURRENT STEPS\n\
             6f1c0000-0000-5000-8000-000000000001  death  running  44021         85.07.30-***.**  2026-12-06 09:00:00  close-waste-account (waiting, attempt 2), library (running)\n"
        );
        assert_eq!(sagas_table(&[]), "No sagas match.\n");
    }

    #[test]
    fn handlers_show_where_they_sit_and_who_serves_them() {
        let registration = v1::HandlerRegistration {
            spec: Some(v1::HandlerSpec {
                name: "gent.library.close-account".into(),
                owner: "Stad Gent".into(),
                life_event_types: vec![v1::LifeEventType::Death as i32],
                after_steps: vec!["validate".into()],
                blocking: true,
                ..Default::default()
            }),
            version: 2,
            ..Default::default()
        };
        assert_eq!(
            handlers_table(&[registration]),
            "NAME                        VERSION  OWNER      LIFE EVENTS  AFTER     MODE      SERVED BY    STATUS\n\
             gent.library.close-account  2        Stad Gent  death        validate  blocking  work stream  active\n"
        );
    }
}
