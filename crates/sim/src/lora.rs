//! The engines' LoRA endpoints, as vLLM and SGLang implement them.
//!
//! - vLLM: `POST /v1/load_lora_adapter {"lora_name","lora_path"}` answers
//!   `200` with the text `Success: LoRA adapter '<name>' added
//!   successfully.`; an adapter already loaded is a `400`; a path without
//!   `adapter_config.json` a `404` ("No adapter found"). `POST
//!   /v1/unload_lora_adapter {"lora_name"}` answers `200` text, or `400`
//!   for an adapter it does not know. Errors are vLLM's `ErrorResponse`
//!   JSON.
//! - SGLang: `POST /load_lora_adapter` and `/unload_lora_adapter` (no
//!   `/v1`) answer a JSON `LoRAUpdateResult`: `{"success", "error_message",
//!   "loaded_adapters"}`, `200` on success and `400` otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use http::StatusCode;
use serde_json::{Value, json};

/// Loaded adapters, shared by every worker of the simulated engine.
#[derive(Debug, Default)]
pub struct SimLora {
    loaded: Mutex<BTreeMap<String, String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Marks a LoRA call in progress for as long as it lives.
#[derive(Debug)]
pub struct InFlight<'a>(&'a SimLora);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// An answer: status, content type, body.
pub type Reply = (StatusCode, &'static str, Vec<u8>);

fn vllm_error(status: StatusCode, message: String) -> Reply {
    let kind = if status == StatusCode::NOT_FOUND {
        "NotFoundError"
    } else {
        "BadRequestError"
    };
    let body = json!({ "object": "error", "message": message, "type": kind, "param": null, "code": status.as_u16() });
    (status, "application/json", body.to_string().into_bytes())
}

fn text(message: String) -> Reply {
    (
        StatusCode::OK,
        "text/plain; charset=utf-8",
        message.into_bytes(),
    )
}

impl SimLora {
    /// Counts a call as in progress (tests read the most there ever were
    /// at once, to see that the sidecar serializes calls for one name).
    pub fn begin(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        InFlight(self)
    }

    /// `GET /sim/lora`: what is loaded, and the most calls seen at once.
    pub fn report(&self) -> Value {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({ "loaded": loaded, "max_in_flight": self.max_in_flight.load(SeqCst) })
    }

    fn fields(body: &[u8]) -> (Option<String>, Option<String>) {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
        };
        (field("lora_name"), field("lora_path"))
    }

    /// vLLM's load.
    pub fn vllm_load(&self, body: &[u8]) -> Reply {
        let (Some(name), Some(path)) = Self::fields(body) else {
            return vllm_error(
                StatusCode::BAD_REQUEST,
                "Both 'lora_name' and 'lora_path' must be provided.".into(),
            );
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.contains_key(&name) {
            return vllm_error(
                StatusCode::BAD_REQUEST,
                format!("The lora adapter '{name}' has already been loaded."),
            );
        }
        if !Path::new(&path).join("adapter_config.json").is_file() {
            return vllm_error(
                StatusCode::NOT_FOUND,
                format!("Loading lora {name} failed: No adapter found for {path}"),
            );
        }
        loaded.insert(name.clone(), path);
        text(format!(
            "Success: LoRA adapter '{name}' added successfully."
        ))
    }

    /// vLLM's unload.
    pub fn vllm_unload(&self, body: &[u8]) -> Reply {
        let (Some(name), _) = Self::fields(body) else {
            return vllm_error(
                StatusCode::BAD_REQUEST,
                "'lora_name' needs to be provided to unload a LoRA adapter.".into(),
            );
        };
        if self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .is_none()
        {
            return vllm_error(
                StatusCode::BAD_REQUEST,
                format!("The lora adapter '{name}' cannot be found."),
            );
        }
        text(format!(
            "Success: LoRA adapter '{name}' removed successfully."
        ))
    }

    fn sglang_result(&self, success: bool, error: String) -> Reply {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let body = json!({ "success": success, "error_message": error, "loaded_adapters": loaded });
        let status = if success {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, "application/json", body.to_string().into_bytes())
    }

    /// SGLang's load.
    pub fn sglang_load(&self, body: &[u8]) -> Reply {
        let (Some(name), Some(path)) = Self::fields(body) else {
            return self.sglang_result(false, "lora_name and lora_path are required".into());
        };
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if loaded.contains_key(&name) {
                drop(loaded);
                return self.sglang_result(
                    false,
                    format!("The LoRA adapter name '{name}' is already loaded."),
                );
            }
            if !Path::new(&path).join("adapter_config.json").is_file() {
                drop(loaded);
                return self.sglang_result(
                    false,
                    format!("Failed to load LoRA adapter {name} from {path}"),
                );
            }
            loaded.insert(name, path);
        }
        self.sglang_result(true, String::new())
    }

    /// SGLang's unload.
    pub fn sglang_unload(&self, body: &[u8]) -> Reply {
        let (Some(name), _) = Self::fields(body) else {
            return self.sglang_result(false, "lora_name is required".into());
        };
        let removed = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .is_some();
        if removed {
            self.sglang_result(true, String::new())
        } else {
            self.sglang_result(false, format!("LoRA adapter {name} is not loaded."))
        }
    }
}
