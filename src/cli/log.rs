//! `--log-format json`: one JSON object per line for log shippers — `time` (RFC 3339),
//! `level`, `target`, `message`, the event's own fields, and `job_id` on every line once a
//! job has started (for `run` and `action` that is before their first line).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one line of JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        let mut line = head(&meta.level().to_string(), meta.target(), message);
        // The spans it happened in, innermost last, as `name{fields}` (libcontainer's).
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.as_str())
                        .unwrap_or_default();
                    Value::String(format!("{}{{{fields}}}", span.name()))
                })
                .collect();
            line.insert("spans".into(), Value::Array(spans));
        }
        for (key, value) in fields.0 {
            line.entry(key).or_insert(value);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// What every line starts with: `time`, `level`, `target`, `message` and `job_id`.
fn head(level: &str, target: &str, message: Value) -> Map<String, Value> {
    let mut line = Map::new();
    let now = jiff::Timestamp::now().to_string();
    line.insert("time".into(), Value::String(now));
    line.insert("level".into(), Value::String(level.to_owned()));
    line.insert("target".into(), Value::String(target.to_owned()));
    line.insert("message".into(), message);
    if let Some(job) = berth::util::log_job() {
        line.insert("job_id".into(), Value::String(job));
    }
    line
}

/// A line the component printed on its stdout, as a log line (`stream: "stdout"`): with
/// `run --json` its stdout goes to stderr, among berth's own lines.
pub fn component_line(text: &str) -> String {
    let mut line = head("INFO", "component", Value::String(text.to_owned()));
    line.insert("stream".into(), Value::String("stdout".into()));
    Value::Object(line).to_string()
}

/// A message berth prints for the operator on stderr (`berth: user error: …`, `warning:
/// …`), as a log line: its level read from how it starts.
pub fn operator_line(text: &str) -> String {
    let level = if text.starts_with("warning:") {
        "WARN"
    } else if text.starts_with("berth:") || text.starts_with("error:") {
        "ERROR"
    } else {
        "INFO"
    };
    Value::Object(head(level, "berth", Value::String(text.to_owned()))).to_string()
}

/// An event's fields as JSON values.
#[derive(Debug, Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber writes, kept for the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_one_json_object_with_its_fields_and_the_job() {
        let captured = Captured::default();
        let writer = captured.clone();
        // As main.rs builds it: span fields without colours.
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        berth::util::set_log_job("0123456789ab");
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                container = "berth-x-0123456789ab-0",
                n = 3,
                "a \"quoted\"\nline"
            );
            let span = tracing::info_span!("create", id = 7);
            let _in = span.enter();
            tracing::info!(ok = true, "inside");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["message"], "a \"quoted\"\nline");
        assert_eq!(lines[0]["container"], "berth-x-0123456789ab-0");
        assert_eq!(lines[0]["n"], 3);
        assert_eq!(lines[1]["ok"], true);
        assert_eq!(lines[1]["spans"], serde_json::json!(["create{id=7}"]));
        for line in &lines {
            assert_eq!(line["job_id"], "0123456789ab");
            let time = line["time"].as_str().unwrap();
            assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        }
    }
}
