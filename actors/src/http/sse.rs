//! `GET /v1/jobs/{id}/events`: a job's live updates as server-sent events,
//! read from the master's job-update subscription ([`JobUpdates`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use ffrtmp_api::ErrorBody;
use ffrtmp_runtime::model::Job;
use futures::Stream;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::error::ApiResult;
use super::{Api, ApiError};
use crate::events::{JobUpdates, UpdateKind};

/// One server-sent event of `GET /v1/jobs/{id}/events`, as the fields of the
/// event (OpenAPI 3.2's reading of `text/event-stream`): `event` is `state` or
/// `progress`, `data` the whole job as JSON. Its schema is named `JobEvent`
/// in the document; the type is not `ffrtmp_runtime::state::JobEvent`.
pub struct JobEventSchema;

impl ToSchema for JobEventSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("JobEvent")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            Job::name().into_owned(),
            <Job as utoipa::PartialSchema>::schema(),
        ));
        Job::schemas(schemas);
    }
}

impl utoipa::PartialSchema for JobEventSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::extensions::Extensions;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // `contentSchema` (JSON Schema 2020-12) says what the JSON in `data`
        // is; utoipa has no field for it, so it goes in as an extra key.
        let job = format!("#/components/schemas/{}", Job::name());
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The job, as JSON (`Job`)."))
            .content_media_type("application/json")
            .extensions(Some(Extensions::from_iter([(
                "contentSchema",
                json!({ "$ref": job }),
            )])));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One server-sent event: `event` is `state` (the first event, and \
                 every state change) or `progress`; `data` is the whole job.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["state", "progress"])),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .into()
    }
}

/// Live job updates as server-sent events: the job now (`event: state`),
/// then `progress` and `state` events as it changes; the stream ends after
/// the terminal state. Each event's `data` is the whole job (`Job`).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "An event stream; each event's `data` is a `Job` as JSON.",
            body = JobEventSchema, content_type = "text/event-stream"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
pub(super) async fn events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // The same subscription an embedding application gets
    // (`embed::subscribe`): subscribed before the job is read, so no change
    // falls between the two; a watcher that lags re-reads the job.
    let mut updates = JobUpdates::open(&api.events, api.store.clone(), &id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(&id))?;
    let stream = async_stream(move |tx| async move {
        // Ends after the terminal state, or when the updates end.
        while let Some(update) = updates.next().await {
            let kind = match update.kind {
                UpdateKind::State => "state",
                UpdateKind::Progress => "progress",
            };
            if !send_event(&tx, json_event(kind, &*update.job)).await {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The server-sent event `kind` whose data is `value` as JSON. A value that
/// does not serialise is logged and becomes an `error` event
/// (`{"error":{"code":"internal",...}}`, the `Err`), after which the stream
/// ends: never an empty object passed off as the data.
pub(super) fn json_event<T: Serialize>(kind: &str, value: &T) -> Result<Event, Event> {
    match serde_json::to_string(value) {
        Ok(data) => Ok(Event::default().event(kind).data(data)),
        Err(e) => {
            tracing::error!(error = %e, kind, "an event could not be serialised; ending the stream");
            let body = serde_json::json!({"error": {
                "code": "internal",
                "message": format!("a `{kind}` event could not be serialised: {e}"),
                "field": null,
            }});
            Err(Event::default().event("error").data(body.to_string()))
        }
    }
}

/// Send an event from [`json_event`]; `false` when the stream must end:
/// the client is gone, or the event was an error event.
pub(super) async fn send_event(
    tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    event: Result<Event, Event>,
) -> bool {
    let (event, go_on) = match event {
        Ok(e) => (e, true),
        Err(e) => (e, false),
    };
    tx.send(Ok(event)).await.is_ok() && go_on
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
