//! What the environment asks of telemetry: the log format and the OpenTelemetry settings
//! (endpoint, service name, resource attributes, sampler).

use opentelemetry_sdk::trace::Sampler;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// How traces are sampled and where they go, read from the `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry layer at all.
    pub disabled: bool,
    /// OTLP/gRPC endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`);
    /// `None` exports nothing. `OTEL_TRACES_EXPORTER=none` clears it.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, else the process's own name.
    pub service_name: String,
    /// Share of new traces sampled, 0..=1; a call that arrives with a sampled (or unsampled)
    /// parent follows its parent unless `parent_based` is false.
    pub ratio: f64,
    pub parent_based: bool,
}

impl TraceSettings {
    /// From the environment; `service` names the process when `OTEL_SERVICE_NAME` does not.
    pub fn from_env(service: &str) -> Result<Self, String> {
        Self::from_lookup(service, |k| {
            std::env::var(k).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// `from_env` over any lookup (tests pass a map).
    pub fn from_lookup(
        service: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let disabled =
            get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter = get("OTEL_TRACES_EXPORTER").unwrap_or_else(|| "otlp".into());
        let endpoint = match exporter.trim() {
            "otlp" => get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT")),
            "none" => None,
            other => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER: '{other}' is not otlp or none"
                ))
            }
        };
        let arg = |default: f64| -> Result<f64, String> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG: '{v}' is not a number from 0 to 1")
                    }),
            }
        };
        let sampler = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
        let (ratio, parent_based) = match sampler.trim() {
            "always_on" => (1.0, false),
            "always_off" => (0.0, false),
            "traceidratio" => (arg(1.0)?, false),
            "parentbased_always_on" => (1.0, true),
            "parentbased_always_off" => (0.0, true),
            "parentbased_traceidratio" => (arg(1.0)?, true),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER: '{other}' is not always_on, always_off, traceidratio or their parentbased_ forms"
                ))
            }
        };
        Ok(Self {
            disabled,
            endpoint,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string()),
            ratio,
            parent_based,
        })
    }

    /// The sampler of new traces (no parent), by ratio.
    pub(crate) fn root_sampler(&self) -> Sampler {
        if self.ratio >= 1.0 {
            Sampler::AlwaysOn
        } else if self.ratio <= 0.0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(self.ratio)
        }
    }

    pub(crate) fn sampler(&self) -> Sampler {
        let root = self.root_sampler();
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}
