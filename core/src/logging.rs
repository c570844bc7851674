//! The node's log output: human-readable text (the default) or JSON lines.
//!
//! `log-level` chooses the verbosity as in Go receptor (`RECEPTOR_LOG` overrides it with a
//! `tracing` filter); `log-format` (`--log-format json`, or `log-format: json` in a file)
//! chooses the form. In JSON form every record is one object on one line:
//!
//! ```json
//! {"time":"2026-12-07T21:08:51.490333Z","level":"WARN","target":"receptor_core::work",
//!  "node":"foo","message":"unit failed","fields":{"unit":"fooX1","worktype":"echo"}}
//! ```
//!
//! `node` is this node's ID; `fields` holds the record's own fields and those of the spans
//! it happened in (the innermost wins), such as `peer`, `unit`, `plugin`, `session` or
//! `service`. Log records go to standard error.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogLevel};

/// Installs the process-wide logger for node `node_id`. Later calls do nothing.
pub fn init(level: LogLevel, format: LogFormat, node_id: &str) {
    let filter = filter(level);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(JsonLines::new(node_id, std::io::stderr))
            .try_init(),
    };
}

/// The filter of `level`, or of `RECEPTOR_LOG` when that is set and valid.
fn filter(level: LogLevel) -> EnvFilter {
    let default = match level {
        LogLevel::Error => "error",
        LogLevel::Warning => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let wanted = std::env::var("RECEPTOR_LOG").unwrap_or_else(|_| default.to_owned());
    EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new(default))
}

/// A layer writing each event as one JSON object per line to the writer `make` returns.
pub struct JsonLines<W> {
    node: String,
    make: W,
}

impl<W> JsonLines<W> {
    /// Records of node `node_id`, written to `make()`.
    pub fn new(node_id: &str, make: W) -> Self {
        JsonLines {
            node: node_id.to_owned(),
            make,
        }
    }
}

/// The fields of a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

/// Collects fields into a JSON map; `message` is kept apart.
#[derive(Default)]
struct Collect {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Collect {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

impl<S, W, O> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Fn() -> O + 'static,
    O: std::io::Write,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut collect = Collect::default();
        attrs.record(&mut collect);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(collect.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut collect = Collect::default();
        values.record(&mut collect);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(SpanFields(fields)) => fields.extend(collect.fields),
            None => extensions.insert(SpanFields(collect.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.clone());
                }
            }
        }
        let mut collect = Collect::default();
        event.record(&mut collect);
        fields.extend(collect.fields);
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("time".to_owned(), Value::String(now_rfc3339()));
        line.insert(
            "level".to_owned(),
            Value::String(metadata.level().to_string()),
        );
        line.insert(
            "target".to_owned(),
            Value::String(metadata.target().to_owned()),
        );
        line.insert("node".to_owned(), Value::String(self.node.clone()));
        line.insert(
            "message".to_owned(),
            Value::String(collect.message.unwrap_or_default()),
        );
        line.insert("fields".to_owned(), Value::Object(fields));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per record, so that lines of concurrent threads never interleave.
        let _ = (self.make)().write_all(text.as_bytes());
    }
}

/// The current UTC time in RFC 3339 form.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn events_become_json_lines_with_span_fields() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let layer = JsonLines::new("foo", move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", peer = "bar");
            let _entered = span.enter();
            tracing::warn!(
                unit = "foo123",
                plugin = "echo",
                count = 3,
                "unit \"x\" failed"
            );
        });
        let text = String::from_utf8(buffer.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let record: Value = serde_json::from_str(lines[0]).unwrap_or(Value::Null);
        assert_eq!(record["level"], "WARN");
        assert_eq!(record["node"], "foo");
        assert_eq!(record["message"], "unit \"x\" failed");
        assert_eq!(record["target"], module_path!());
        assert_eq!(record["fields"]["peer"], "bar");
        assert_eq!(record["fields"]["unit"], "foo123");
        assert_eq!(record["fields"]["plugin"], "echo");
        assert_eq!(record["fields"]["count"], 3);
        assert!(record["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
