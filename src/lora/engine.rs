//! The engine's side of a load or unload: the POST, retried while the
//! engine refuses connections (it may still be starting), and its answer
//! mapped as the Python sidecar's clients expect.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};

use super::stats::Outcome;
use super::{Answer, Lora};
use crate::net::RetryPolicy;

/// How an engine that refuses connections (still starting) is retried
/// within the window.
const ENGINE_RETRY: RetryPolicy = RetryPolicy {
    attempts: u32::MAX,
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
};

impl Lora {
    /// POSTs `body` to the engine, retrying connection failures for the
    /// retry window (never an answer, whatever its status).
    pub(super) fn call(&self, path: &str, body: &Value, what: &str) -> (Outcome, Answer) {
        let mut url = self.base.clone();
        url.target = format!("{}{path}", self.base.target.trim_end_matches('/'));
        let shown = url.display_without_query();
        let payload = body.to_string();
        let headers = [("content-type".to_owned(), "application/json".to_owned())];
        let deadline = Instant::now() + self.retry_window;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.client.send("POST", &url, &headers, payload.as_bytes()) {
                Ok(mut response) => {
                    let status = response.status;
                    return match response.text(1024 * 1024) {
                        Ok(text) => map_engine_answer(status, &text),
                        Err(e) => (
                            Outcome::Unreachable,
                            Answer::detail(
                                StatusCode::BAD_GATEWAY,
                                format!(
                                    "Failed to {what} LoRA adapter: reading the engine's answer from {shown}: {e}"
                                ),
                            ),
                        ),
                    };
                }
                Err(e) => e,
            };
            let timed_out = matches!(
                error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
            let connect_failed = matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotFound
            );
            if connect_failed && Instant::now() < deadline {
                if attempt == 1 {
                    tracing::info!(engine = %shown, error = %error, "cannot reach the engine yet (starting?); retrying within --engine-retry-window");
                }
                let pause = ENGINE_RETRY.backoff(attempt);
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                continue;
            }
            let (status, reason) = if timed_out {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the engine at {shown} did not answer in time"),
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach the engine at {shown}: {error}"),
                )
            };
            return (
                Outcome::Unreachable,
                Answer::detail(status, format!("Failed to {what} LoRA adapter: {reason}")),
            );
        }
    }
}

/// The engine's answer as the caller gets it.
fn map_engine_answer(status: u16, text: &str) -> (Outcome, Answer) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status >= 400 {
        return (
            Outcome::EngineError,
            Answer::detail(code, format!("HTTP {status}: {text}")),
        );
    }
    let body = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!({ "message": text }));
    (Outcome::Ok, Answer { status: code, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_answers_map_as_clients_expect() {
        let (_, answer) = map_engine_answer(200, "Success: LoRA adapter 'x' added successfully.");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.body,
            json!({ "message": "Success: LoRA adapter 'x' added successfully." })
        );
        let (_, answer) = map_engine_answer(200, r#"{"success":true,"error_message":""}"#);
        assert_eq!(answer.body, json!({ "success": true, "error_message": "" }));
        let (_, answer) =
            map_engine_answer(400, r#"{"object":"error","message":"already loaded"}"#);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer.body,
            json!({ "detail": r#"HTTP 400: {"object":"error","message":"already loaded"}"# })
        );
    }
}
