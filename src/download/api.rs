//! The HTTP side of downloads: `POST /v1/download_model` and the status
//! API (`GET /v1/downloads`, `GET /v1/downloads/{id}`).

use std::io;
use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::jobs::{Jobs, Kind};
use super::request::{DownloadRequest, ProcessEnvironment};
use crate::access::Access;
use crate::errors;
use crate::http::{Request, Responder};
use crate::offload::Busy;

/// `POST /v1/download_model`.
pub async fn download_model(
    jobs: &Arc<Jobs>,
    access: &Access,
    req: &Request,
    res: &mut Responder<'_>,
) -> io::Result<()> {
    let request = match DownloadRequest::from_json(&req.body, &ProcessEnvironment) {
        Ok(request) => request,
        Err(e) => return res.error(StatusCode::BAD_REQUEST, &e.to_string()).await,
    };
    if let Err(denied) = access.confine(&request.output_dir) {
        return res.error(denied.status, &denied.detail).await;
    }
    if let Err(e) = super::preflight(&request) {
        return res
            .error(
                e.status(),
                &format!("Model download failed: {}", errors::chain(&e)),
            )
            .await;
    }
    let source = request.source_text.clone();
    let output_dir = request.output_dir.display().to_string();
    let async_download = request.async_download;
    let permit = match jobs.offload.reserve() {
        Ok(permit) => permit,
        Err(busy) => return too_many(res, &busy).await,
    };
    let job = jobs.register(request, Kind::Model, permit.place());
    let done = jobs.spawn(job.clone(), permit);
    if async_download {
        let body = json!({
            "status": "started",
            "state": job.status()["state"],
            "message": "Model download started in background",
            "source": source,
            "output_dir": output_dir,
            "id": job.id,
        });
        return res.json(StatusCode::ACCEPTED, &body).await;
    }
    match done.recv_async().await {
        Ok(Ok(())) => {
            let body = json!({
                "status": "completed",
                "message": "Model download completed successfully",
                "source": source,
                "output_dir": output_dir,
                "verified_by": job.progress.checks(),
            });
            res.json(StatusCode::OK, &body).await
        }
        Ok(Err(e)) => {
            res.error(
                e.status(),
                &format!("Model download failed: {}", errors::chain(&e)),
            )
            .await
        }
        Err(_) => {
            res.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Model download failed: the job ended without a result",
            )
            .await
        }
    }
}

/// `429` with `Retry-After`: the cap on concurrent jobs is reached and
/// the queue is full.
pub async fn too_many(res: &mut Responder<'_>, busy: &Busy) -> io::Result<()> {
    let body = json!({ "detail": busy.to_string() }).to_string();
    let headers = [("content-type", "application/json"), ("retry-after", "5")];
    res.send(StatusCode::TOO_MANY_REQUESTS, &headers, body.as_bytes())
        .await
}

/// `GET /v1/downloads`.
pub async fn list(jobs: &Jobs, res: &mut Responder<'_>) -> io::Result<()> {
    let all: Vec<_> = jobs.all().iter().map(|job| job.status()).collect();
    res.json(StatusCode::OK, &json!({ "downloads": all })).await
}

/// `GET /v1/downloads/{id}`.
pub async fn status(jobs: &Jobs, id: &str, res: &mut Responder<'_>) -> io::Result<()> {
    match jobs.get(id) {
        Some(job) => res.json(StatusCode::OK, &job.status()).await,
        None => {
            res.error(StatusCode::NOT_FOUND, &format!("No download with id {id}"))
                .await
        }
    }
}
