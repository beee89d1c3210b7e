//! Traces and metrics settings: the standard OpenTelemetry variables and
//! `EVENT_BUS_METRICS_ADDR`.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset: tracing off | collector base URL; traces go to `<it>/v1/traces` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | unset | the traces URL itself (wins over the one above) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` | only `http/protobuf` is supported |
//! | `OTEL_SERVICE_NAME` | `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else `eventbus` | |
//! | `OTEL_RESOURCE_ATTRIBUTES` | none | `key=value,...` (values percent-encoded) |
//! | `OTEL_TRACES_SAMPLER` | `parentbased_always_on` | `always_on`, `always_off`, `traceidratio`, `parentbased_*` |
//! | `OTEL_TRACES_SAMPLER_ARG` | `1.0` | the ratio of `*traceidratio` |
//! | `OTEL_SDK_DISABLED` | `false` | `true` turns tracing off |
//! | `EVENT_BUS_METRICS_ADDR` | off | `consume`, `relay`: serve `/metrics` here (`--metrics-addr`) |

use std::net::SocketAddr;

use eventbus::telemetry::{TraceSampler, TracingConfig};

use super::Env;
use crate::error::{CliError, Result};

/// The variables read here.
pub(crate) const TELEMETRY_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "EVENT_BUS_METRICS_ADDR",
];

/// Traces and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct TelemetrySettings {
    /// `None`: tracing off (no endpoint set).
    pub(crate) tracing: Option<TracingConfig>,
    /// `EVENT_BUS_METRICS_ADDR`.
    pub(crate) metrics_addr: Option<SocketAddr>,
}

impl TelemetrySettings {
    pub(crate) fn load(env: &Env) -> Result<Self> {
        let metrics_addr = env.parse(
            "EVENT_BUS_METRICS_ADDR",
            "an address like 127.0.0.1:9464",
            |s| s.parse::<SocketAddr>().ok(),
        )?;
        Ok(TelemetrySettings {
            tracing: tracing_config(env)?,
            metrics_addr,
        })
    }
}

fn tracing_config(env: &Env) -> Result<Option<TracingConfig>> {
    let disabled = env.parse("OTEL_SDK_DISABLED", "`true` or `false`", |s| {
        match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    })?;
    let (var, url) = match (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?,
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")?,
    ) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env.get(var)? {
            if p.trim() != "http/protobuf" {
                return Err(CliError::Setting {
                    var,
                    reason: format!(
                        "{p:?} is not supported: eventbus exports traces over `http/protobuf` only"
                    ),
                });
            }
        }
    }
    let endpoint = url::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| CliError::Setting {
            var,
            reason: format!(
                "{:?} is not an http:// or https:// URL",
                eventbus::redact_url(&url)
            ),
        })?;
    let mut resource_attributes = resource_attributes(env)?;
    let service_name = match env.get("OTEL_SERVICE_NAME")? {
        Some(name) => name,
        None => resource_attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "eventbus".to_owned()),
    };
    resource_attributes.retain(|(k, _)| k != "service.name");
    let mut config = TracingConfig::new(endpoint, service_name);
    config.resource_attributes = resource_attributes;
    config.sampler = sampler(env)?;
    if disabled == Some(true) {
        return Ok(None);
    }
    Ok(Some(config))
}

fn sampler(env: &Env) -> Result<TraceSampler> {
    let ratio = env
        .parse("OTEL_TRACES_SAMPLER_ARG", "a number between 0 and 1", |s| {
            s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
        })?
        .unwrap_or(1.0);
    let parent = |s| TraceSampler::ParentBased(Box::new(s));
    Ok(
        match env.get("OTEL_TRACES_SAMPLER")?.as_deref().map(str::trim) {
            None | Some("parentbased_always_on") => parent(TraceSampler::AlwaysOn),
            Some("always_on") => TraceSampler::AlwaysOn,
            Some("always_off") => TraceSampler::AlwaysOff,
            Some("traceidratio") => TraceSampler::Ratio(ratio),
            Some("parentbased_always_off") => parent(TraceSampler::AlwaysOff),
            Some("parentbased_traceidratio") => parent(TraceSampler::Ratio(ratio)),
            Some(other) => {
                return Err(CliError::Setting {
                    var: "OTEL_TRACES_SAMPLER",
                    reason: format!(
                        "{other:?} is not one of always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                    ),
                })
            }
        },
    )
}

/// `key=value,key2=value2`, values percent-decoded.
fn resource_attributes(env: &Env) -> Result<Vec<(String, String)>> {
    let Some(raw) = env.get("OTEL_RESOURCE_ATTRIBUTES")? else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| CliError::Setting {
        var: "OTEL_RESOURCE_ATTRIBUTES",
        reason,
    };
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
        let v = percent_decode(v.trim()).ok_or_else(|| {
            bad(format!(
                "the value of {:?} is not percent-encoded UTF-8",
                k.trim()
            ))
        })?;
        out.push((k.trim().to_owned(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&'static str, &str)]) -> Result<TelemetrySettings> {
        TelemetrySettings::load(&Env::from_pairs(pairs))
    }

    #[test]
    fn off_without_an_endpoint() {
        let s = load(&[("OTEL_SERVICE_NAME", "x")]).unwrap();
        assert!(s.tracing.is_none());
        assert!(load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])
        .unwrap()
        .tracing
        .is_none());
    }

    #[test]
    fn reads_the_standard_variables() {
        let s = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,deployment.environment=prod%20eu",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("EVENT_BUS_METRICS_ADDR", "127.0.0.1:9464"),
        ])
        .unwrap();
        let t = s.tracing.unwrap();
        assert_eq!(t.endpoint.as_str(), "http://collector:4318/v1/traces");
        assert_eq!(t.service_name, "a");
        assert_eq!(
            t.resource_attributes,
            vec![("deployment.environment".to_owned(), "prod eu".to_owned())]
        );
        assert_eq!(
            t.sampler,
            TraceSampler::ParentBased(Box::new(TraceSampler::Ratio(0.25)))
        );
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let t = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c/otlp/traces",
            ),
            ("OTEL_SERVICE_NAME", "orders"),
        ])
        .unwrap()
        .tracing
        .unwrap();
        assert_eq!(t.endpoint.as_str(), "https://c/otlp/traces");
        assert_eq!(t.service_name, "orders");
    }

    #[test]
    fn bad_values_name_their_variable_and_hide_secrets() {
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://u:SENTINEL@c")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
                ],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
                ],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (&[("OTEL_SDK_DISABLED", "maybe")], "OTEL_SDK_DISABLED"),
            (
                &[("EVENT_BUS_METRICS_ADDR", "nowhere")],
                "EVENT_BUS_METRICS_ADDR",
            ),
        ];
        for (pairs, var) in cases {
            match load(pairs) {
                Err(CliError::Setting { var: v, reason }) => {
                    assert_eq!(v, *var, "{reason}");
                    assert!(!reason.contains("SENTINEL"), "{reason}");
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }
}
