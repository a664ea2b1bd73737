//! Which inference engine the sidecar stands beside, and what that decides.

use std::fmt;

use crate::prom::standard::{self, StandardName};

/// A supported inference engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// vLLM (also `vllmdisaggregated`).
    Vllm,
    /// SGLang.
    Sglang,
}

/// See [`Engine::kv_events_env`].
#[derive(Clone, Copy, Debug)]
pub struct KvEventsEnv {
    /// The ZMQ endpoint's variable.
    pub endpoint: &'static str,
    /// The topic filter's variable.
    pub topic: &'static str,
    /// The topic filter when that variable is unset.
    pub default_topic: &'static str,
}

/// The engine named on the command line is not one we support.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Unsupported engine: {0}. Supported engine: vllm, sglang")]
pub struct UnsupportedEngine(pub String);

impl Engine {
    /// Parses an engine name, case-insensitively.
    pub fn parse(name: &str) -> Result<Engine, UnsupportedEngine> {
        match name.to_ascii_lowercase().as_str() {
            "vllm" | "vllmdisaggregated" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            _ => Err(UnsupportedEngine(name.to_owned())),
        }
    }

    /// The lower-case name used in logs and Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }

    /// The engine's path for loading a LoRA adapter.
    pub fn lora_load_path(self) -> &'static str {
        match self {
            Engine::Vllm => "/v1/load_lora_adapter",
            Engine::Sglang => "/load_lora_adapter",
        }
    }

    /// The engine's path for unloading a LoRA adapter.
    pub fn lora_unload_path(self) -> &'static str {
        match self {
            Engine::Vllm => "/v1/unload_lora_adapter",
            Engine::Sglang => "/unload_lora_adapter",
        }
    }

    /// Where the Python sidecar reads this engine's KV-cache event settings:
    /// the endpoint's and the topic filter's environment variables, and the
    /// topic filter when the variable is unset (empty: every topic).
    pub fn kv_events_env(self) -> KvEventsEnv {
        match self {
            Engine::Vllm => KvEventsEnv {
                endpoint: "VLLM_ZMQ_ENDPOINT",
                topic: "VLLM_ZMQ_TOPIC_FILTER",
                default_topic: "kv-events",
            },
            Engine::Sglang => KvEventsEnv {
                endpoint: "SGLANG_ZMQ_ENDPOINT",
                topic: "SGLANG_ZMQ_TOPIC_FILTER",
                default_topic: "",
            },
        }
    }

    /// The metric standardization table for this engine.
    pub fn metric_table(self) -> &'static [StandardName] {
        match self {
            Engine::Vllm => standard::VLLM,
            Engine::Sglang => standard::SGLANG,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        assert_eq!(Engine::parse("vllm"), Ok(Engine::Vllm));
        assert_eq!(Engine::parse("VLLM"), Ok(Engine::Vllm));
        assert_eq!(Engine::parse("vLLMDisaggregated"), Ok(Engine::Vllm));
        assert_eq!(Engine::parse("SGLang"), Ok(Engine::Sglang));
        let err = Engine::parse("tgi").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unsupported engine: tgi. Supported engine: vllm, sglang"
        );
    }
}
