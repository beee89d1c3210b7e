//! [`Tracing`]: the OpenTelemetry SDK with an OTLP/HTTP exporter behind a
//! bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::SPAN_TARGET;
use crate::{Error, Result};

/// Which spans are recorded and exported (the context of the others still
/// propagates: an unsampled span's `traceparent` is written all the same,
/// its flag `00`).
#[derive(Debug, Clone, PartialEq)]
pub enum TraceSampler {
    /// Every span.
    AlwaysOn,
    /// No span.
    AlwaysOff,
    /// This fraction of traces (0.0 to 1.0), by trace id.
    Ratio(f64),
    /// As the parent decided; roots by the inner sampler.
    ParentBased(Box<TraceSampler>),
}

impl Default for TraceSampler {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Self {
        TraceSampler::ParentBased(Box::new(TraceSampler::AlwaysOn))
    }
}

impl TraceSampler {
    fn to_sdk(&self) -> Sampler {
        match self {
            TraceSampler::AlwaysOn => Sampler::AlwaysOn,
            TraceSampler::AlwaysOff => Sampler::AlwaysOff,
            TraceSampler::Ratio(r) => Sampler::TraceIdRatioBased(*r),
            TraceSampler::ParentBased(inner) => Sampler::ParentBased(Box::new(inner.to_sdk())),
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL (for a collector's base URL, add `/v1/traces`).
    pub endpoint: url::Url,
    /// `service.name` of the resource.
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: Vec<(String, String)>,
    /// The sampler. Default `parentbased_always_on`.
    pub sampler: TraceSampler,
    /// Spans waiting for export at most; more are dropped and counted. Default 2048.
    pub max_queue_size: usize,
    /// How long one export may take. Default 10 s.
    pub export_timeout: Duration,
}

impl TracingConfig {
    /// A configuration with the defaults.
    pub fn new(endpoint: url::Url, service_name: impl Into<String>) -> Self {
        TracingConfig {
            endpoint,
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            sampler: TraceSampler::default(),
            max_queue_size: 2048,
            export_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.endpoint.scheme(), "http" | "https") {
            return Err(Error::Config(
                "the OTLP endpoint must be an http:// or https:// URL".into(),
            ));
        }
        if self.service_name.is_empty() {
            return Err(Error::Config("the service name must not be empty".into()));
        }
        if self.max_queue_size == 0 {
            return Err(Error::Config("max_queue_size must be positive".into()));
        }
        let mut s = &self.sampler;
        while let TraceSampler::ParentBased(inner) = s {
            s = inner;
        }
        if let TraceSampler::Ratio(r) = s {
            if !(0.0..=1.0).contains(r) {
                return Err(Error::Config(
                    "the sampler ratio must be between 0 and 1".into(),
                ));
            }
        }
        Ok(())
    }
}

static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// Spans dropped because the export queue was full, in this process.
pub fn spans_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed) as u64
}

/// The tracer provider of a process: spans go through a bounded queue to
/// an OTLP/HTTP exporter on the Tokio runtime. Never blocks the data path:
/// a span that finds the queue full is dropped and counted
/// ([`spans_dropped`], `eventbus_trace_spans_dropped_total`).
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the exporter. Call inside a Tokio runtime (the export task runs on it).
    pub fn start(config: &TracingConfig) -> Result<Tracing> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(config.export_timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the OTLP HTTP client: {e}")))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.as_str())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the OTLP exporter: {e}")))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let batch = BatchSpanProcessor::builder(
            Counted {
                inner: exporter,
                queued: queued.clone(),
            },
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(config.max_queue_size)
                .with_max_export_timeout(config.export_timeout)
                .build(),
        )
        .build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: batch,
                queued,
                max: config.max_queue_size,
            })
            .with_sampler(config.sampler.to_sdk())
            .with_resource(resource)
            .build();
        Ok(Tracing { provider })
    }

    /// The `tracing` layer that makes spans into OpenTelemetry spans: the
    /// library's ([`SPAN_TARGET`], TRACE) and every other span at INFO or
    /// above (the caller's, a handler's).
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let targets = tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target(SPAN_TARGET, tracing::Level::TRACE);
        let wanted = targets.clone();
        // Asked afresh for every span, never cached as "always": a cached
        // "always" skips the per-layer check, and a check left over on the
        // thread (sqlx asks `enabled!` for statements it then does not log)
        // would then drop the span from this layer now and then.
        let filter = tracing_subscriber::filter::DynFilterFn::new(move |meta, _| {
            targets.would_enable(meta.target(), meta.level())
        })
        .with_callsite_filter(move |meta| {
            if wanted.would_enable(meta.target(), meta.level()) {
                tracing::subscriber::Interest::sometimes()
            } else {
                tracing::subscriber::Interest::never()
            }
        });
        // No code location, thread or busy/idle attributes: each costs
        // allocations or clock reads on every span (and every poll), which
        // a span per event cannot afford (docs/benchmarks.md).
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("eventbus"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter)
            .boxed()
    }

    /// Exports what is queued; blocks until done (call it off the runtime's
    /// worker threads, e.g. in `spawn_blocking`, or after the runtime's work).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }

    /// Flushes, then stops the exporter (same caveat as [`Tracing::flush`]).
    pub fn shutdown(&self) {
        self.flush();
        let _ = self.provider.shutdown();
    }
}

/// The batch processor behind a gate: at most `max` spans queued or in an
/// export not yet started; past that a span is dropped here and counted.
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("eventbus_trace_spans_dropped_total").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, releasing the gate's count for every span it is handed.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
