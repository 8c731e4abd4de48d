//! Logs, traces and metrics.
//!
//! Logs are human-readable by default and JSON with `CLERK_SYNC_LOG_FORMAT=json`; `RUST_LOG` filters them.
//! Spans are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the SDK would otherwise
//! default to localhost, so the gate is ours.

pub mod http;
pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
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

/// Installs the global tracing subscriber. `json` selects JSON logs; `otlp_endpoint` enables span export.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    init_with(json, otlp_endpoint, "info,sqlx=warn")
}

/// [`init`] with another filter when `RUST_LOG` is unset (`clerk-sync doctor` logs only errors: its report says
/// the rest).
pub fn init_with(json: bool, otlp_endpoint: Option<&str>, default_filter: &str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
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
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("clerk-sync")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
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
