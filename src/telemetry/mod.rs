//! Logs, traces and metrics.
//!
//! Logs are human-readable by default and JSON with `CLERK_SYNC_LOG_FORMAT=json`; `RUST_LOG` filters them. At
//! the default `info` a webhook leaves one line (its type, record, outcome and delivery); the spans of a trace are
//! `debug` (target [`SPAN_TARGET`]).
//! Spans are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the SDK would otherwise
//! default to localhost, so the gate is ours.

pub mod http;
pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes exported spans when the daemon stops.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("clerk-sync: could not flush traces: {e}");
            }
        }
    }
}

/// The target of the spans that make a trace (`http_request`, `record_actor`, `write_batch`). They are `debug`
/// for logs, so the default log has one line per webhook and nothing else per request, and a disabled span costs
/// nothing; the OTLP layer enables them whatever `RUST_LOG` says, because a trace without its request span has no
/// root and cannot continue the caller's trace.
pub const SPAN_TARGET: &str = "clerk_sync::span";

/// `RUST_LOG`, or `default` when it is unset or empty (an empty variable counts as unset, as in the config).
fn log_filter(default: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// ractor wraps every actor's message loop in an `info` span ("Actor"), entered and left on each message: at
/// `info` that cost every webhook a few thousand instructions for a span no log line shows.
const DEFAULT_FILTER: &str = "info,sqlx=warn,ractor=warn";

/// Colour only on a terminal: escapes in a file or a journal are noise (and ~200 bytes a line). `NO_COLOR`
/// (no-color.org) turns it off on a terminal too.
fn ansi(terminal: bool, no_color: Option<&str>) -> bool {
    terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the global tracing subscriber. `json` selects JSON logs; `otlp_endpoint` enables span export.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    init_with(json, otlp_endpoint, DEFAULT_FILTER)
}

/// [`init`] with another filter when `RUST_LOG` is unset (`clerk-sync doctor` logs only errors: its report says
/// the rest).
pub fn init_with(json: bool, otlp_endpoint: Option<&str>, default_filter: &str) -> TelemetryGuard {
    use std::io::IsTerminal;
    let colour = ansi(
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let fmt = fmt.with_filter(log_filter(default_filter));
    let mut export_error = None;
    let provider = otlp_endpoint.filter(|e| !e.trim().is_empty()).and_then(|_| {
        // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables) itself.
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("clerk-sync")
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                export_error = Some(e.to_string());
                None
            }
        }
    });
    // Each layer has its own filter, so without an exporter a `debug` span is disabled at its call site and
    // costs nothing; with one, only the exporter sees the request spans.
    let _ = match &provider {
        Some(p) => {
            let spans = log_filter(default_filter).add_directive(
                format!("{SPAN_TARGET}=debug")
                    .parse()
                    .unwrap_or_else(|_| LevelFilter::INFO.into()),
            );
            let otel = tracing_opentelemetry::layer()
                .with_tracer(p.tracer("clerk-sync"))
                .with_filter(spans);
            tracing_subscriber::registry().with(fmt).with(otel).try_init()
        }
        None => tracing_subscriber::registry().with(fmt).try_init(),
    };
    match (&provider, export_error) {
        (Some(_), _) => tracing::info!("exporting traces over OTLP/HTTP"),
        (None, Some(e)) => tracing::warn!(error = e, "OTEL_EXPORTER_OTLP_ENDPOINT is set but the exporter failed"),
        (None, None) => {}
    }
    TelemetryGuard { provider }
}

/// A random 128-bit id as 32 hex digits (request ids). Each `RandomState` is seeded from the OS.
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    use super::ansi;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi(true, None));
        assert!(ansi(true, Some("")));
        assert!(!ansi(true, Some("1")));
        assert!(!ansi(false, None));
    }
}
