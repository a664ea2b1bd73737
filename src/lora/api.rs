//! The HTTP handlers of the LoRA endpoints: the request checked, the
//! operation started on a thread of its own, its answer awaited.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use super::{LoadRequest, Lora, check_name, spawn_load, spawn_unload};
use crate::errors;

/// `POST /v1/load_lora_adapter`.
pub async fn handle_load(
    lora: &Arc<Lora>,
    access: &crate::access::Access,
    req: &crate::http::Request,
    res: &mut crate::http::Responder<'_>,
) -> std::io::Result<()> {
    let request =
        match LoadRequest::from_json(&req.body, &crate::download::request::ProcessEnvironment) {
            Ok(request) => request,
            Err(e) => {
                lora.count_bad_request(false);
                return res.error(StatusCode::BAD_REQUEST, &e.to_string()).await;
            }
        };
    if let Err(denied) = access.confine(&request.download.output_dir) {
        lora.count_bad_request(false);
        return res.error(denied.status, &denied.detail).await;
    }
    if let Err(e) = crate::download::preflight(&request.download) {
        lora.count_download_refused();
        let detail = format!("LoRA adapter download failed: {}", errors::chain(&e));
        return res.error(e.status(), &detail).await;
    }
    let started = json!({
        "status": "started",
        "message": "LoRA adapter download and load started in background",
        "lora_name": request.lora_name,
        "source": request.download.source_text,
        "output_dir": request.download.output_dir.display().to_string(),
    });
    let async_download = request.download.async_download;
    let (job, answer) = match spawn_load(lora, request) {
        Ok(started) => started,
        Err(busy) => return crate::download::api::too_many(res, &busy).await,
    };
    if async_download {
        let mut body = started;
        body["id"] = json!(job.id);
        body["state"] = job.status()["state"].clone();
        return res.json(StatusCode::ACCEPTED, &body).await;
    }
    match answer.recv_async().await {
        Ok(answer) => res.json(answer.status, &answer.body).await,
        Err(_) => {
            res.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the load ended without an answer",
            )
            .await
        }
    }
}

/// `POST /v1/unload_lora_adapter`: the body goes to the engine (without
/// `cleanup`, which is ours).
pub async fn handle_unload(
    lora: &Arc<Lora>,
    req: &crate::http::Request,
    res: &mut crate::http::Responder<'_>,
) -> std::io::Result<()> {
    let fields = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    "Request body must be a JSON object: not an object",
                )
                .await;
        }
        Err(e) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    &format!("Request body must be a JSON object: {e}"),
                )
                .await;
        }
    };
    let lora_name = match check_name(&fields) {
        Ok(name) => name,
        Err(e) => {
            lora.count_bad_request(true);
            return res.error(StatusCode::BAD_REQUEST, &e.to_string()).await;
        }
    };
    let mut fields = fields;
    let cleanup = match fields.remove("cleanup") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    "Invalid parameter: cleanup must be true or false",
                )
                .await;
        }
    };
    let answer = match spawn_unload(lora, lora_name, fields, cleanup) {
        Ok(answer) => answer,
        Err(busy) => return crate::download::api::too_many(res, &busy).await,
    };
    match answer.recv_async().await {
        Ok(answer) => res.json(answer.status, &answer.body).await,
        Err(_) => {
            res.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the unload ended without an answer",
            )
            .await
        }
    }
}
