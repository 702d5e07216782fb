//! The export side of tracing, one background task: it takes finished spans off the bounded
//! queue, gathers a batch (up to `TASKMESH_TRACE_BATCH` spans, or whatever arrived within
//! `TASKMESH_TRACE_FLUSH_MS` of the batch's first span), and hands it to every configured
//! exporter at once: [`otlp`] (OTLP/HTTP protobuf to a collector) and [`xray`] (segments to the
//! X-Ray daemon over UDP). While an export is in flight the queue fills and, once full, the
//! request path drops spans instead of waiting.

pub mod otlp;
pub mod xray;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Identity, SpanData, TraceConfig};
use crate::metrics::Metrics;

/// Runs until every [`super::Tracer`] handle is gone.
pub async fn run(
    mut rx: mpsc::Receiver<SpanData>,
    config: TraceConfig,
    identity: Identity,
    metrics: Arc<Metrics>,
) {
    let otlp = match &config.otlp {
        Some(c) => match otlp::OtlpExporter::new(c, &identity) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "OTLP exporter disabled");
                None
            }
        },
        None => None,
    };
    let xray = match &config.xray {
        Some(c) => match xray::XrayExporter::new(c, &identity).await {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, daemon = %c.daemon, "X-Ray exporter disabled");
                None
            }
        },
        None => None,
    };
    tracing::info!(
        otlp = config.otlp.as_ref().map(|c| c.url.to_string()),
        xray = config.xray.as_ref().map(|c| c.daemon.to_string()),
        sampling = config.sampling,
        "tracing on"
    );
    let max = config.batch.max(1);
    let mut batch: Vec<SpanData> = Vec::with_capacity(max.min(4096));
    loop {
        if rx.recv_many(&mut batch, max).await == 0 {
            break;
        }
        let deadline = Instant::now() + config.flush;
        while batch.len() < max {
            let room = max - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        let (o, x) = tokio::join!(
            async {
                match &otlp {
                    Some(e) => Some(e.export(&batch).await.map_err(|e| e.to_string())),
                    None => None,
                }
            },
            async {
                match &xray {
                    Some(e) => Some(e.export(&batch).await.map_err(|e| e.to_string())),
                    None => None,
                }
            }
        );
        for (what, r) in [("otlp", o), ("xray", x)] {
            match r {
                Some(Ok(())) => metrics.trace_spans_exported(what, n),
                Some(Err(e)) => {
                    metrics.trace_export_failed(what);
                    tracing::warn!(exporter = what, spans = n, error = %e, "trace export failed");
                }
                None => {}
            }
        }
        batch.clear();
    }
}
