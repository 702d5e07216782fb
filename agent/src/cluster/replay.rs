//! Replayable request bodies, so requests with a small body can be retried. The client's body
//! is streamed to the upstream as it arrives (never collected first) while the chunks are kept,
//! up to [`RETRY_BUFFER_BYTES`]; a retry sends the kept chunks again and then goes on reading
//! the client. Once more than the bound has gone through, the copy is dropped and the request
//! can no longer be retried. Chunks are `Bytes`, so keeping one is a reference count, not a
//! copy. Only the newest attempt may read the client's stream; an older attempt still being
//! polled by its (abandoned) connection gets an error instead, so two attempts never split the
//! stream between them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::RequestBody;
use crate::proxy::body::Counted;

/// Most request-body bytes kept for a retry (64 KiB). A larger body is streamed and not retried.
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;

/// Why a replayed body could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the client's body failed.
    #[error("reading the client's request body: {0}")]
    Source(#[from] crate::proxy::h1_server::BodyError),
    /// A newer attempt took over the client's body.
    #[error("request body taken over by a retry")]
    Superseded,
    /// The shared state was poisoned by a panic elsewhere.
    #[error("request body lost")]
    Lost,
}

/// The client's body and what has been kept of it.
struct Tee {
    source: Option<Counted<RequestBody>>,
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    kept: usize,
    limit: usize,
    /// More than `limit` went through: `chunks` was dropped.
    overflow: bool,
    /// The client's body failed.
    failed: bool,
    /// The client's body ended (all of it is in `chunks` unless `overflow`).
    done: bool,
    /// The attempt allowed to read `source`.
    generation: u32,
    hint: SizeHint,
}

/// A client body being forwarded with a copy kept for retries.
#[derive(Clone)]
pub struct Replay {
    tee: Arc<Mutex<Tee>>,
}

impl Replay {
    /// Starts keeping `body`, up to `limit` bytes.
    pub fn new(body: Counted<RequestBody>, limit: usize) -> Replay {
        let hint = body.size_hint();
        Replay {
            tee: Arc::new(Mutex::new(Tee {
                source: Some(body),
                chunks: Vec::new(),
                trailers: None,
                kept: 0,
                limit,
                overflow: false,
                failed: false,
                done: false,
                generation: 0,
                hint,
            })),
        }
    }

    /// The body for the next attempt: what was kept, then the rest of the client's stream.
    pub fn body(&self) -> ReplayBody {
        let (generation, hint) = match self.tee.lock() {
            Ok(mut t) => {
                t.generation = t.generation.wrapping_add(1);
                (t.generation, t.hint)
            }
            Err(_) => (0, SizeHint::default()),
        };
        ReplayBody {
            tee: Some(self.tee.clone()),
            generation,
            pos: 0,
            trailers_sent: false,
            hint,
        }
    }

    /// Whether another attempt can send the whole body again.
    pub fn replayable(&self) -> bool {
        self.tee.lock().is_ok_and(|t| !t.overflow && !t.failed)
    }
}

/// The body of one attempt (empty for requests without a body).
pub struct ReplayBody {
    tee: Option<Arc<Mutex<Tee>>>,
    generation: u32,
    /// Next kept chunk to send.
    pos: usize,
    trailers_sent: bool,
    hint: SizeHint,
}

impl ReplayBody {
    /// An empty body (a replayed request that had none).
    pub fn empty() -> ReplayBody {
        ReplayBody {
            tee: None,
            generation: 0,
            pos: 0,
            trailers_sent: false,
            hint: SizeHint::with_exact(0),
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = ReplayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReplayError>>> {
        let this = self.get_mut();
        let Some(tee) = &this.tee else {
            return Poll::Ready(None);
        };
        let Ok(mut t) = tee.lock() else {
            return Poll::Ready(Some(Err(ReplayError::Lost)));
        };
        loop {
            if this.pos < t.chunks.len() {
                let chunk = t.chunks[this.pos].clone();
                this.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if t.done {
                if !this.trailers_sent
                    && let Some(tr) = &t.trailers
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(tr.clone()))));
                }
                return Poll::Ready(None);
            }
            if this.generation != t.generation {
                return Poll::Ready(Some(Err(ReplayError::Superseded)));
            }
            let Some(source) = t.source.as_mut() else {
                t.done = true;
                continue;
            };
            let frame = match Pin::new(source).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    t.done = true;
                    t.source = None;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    t.failed = true;
                    t.done = true;
                    t.source = None;
                    return Poll::Ready(Some(Err(ReplayError::Source(e))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    if !t.overflow {
                        t.kept += data.len();
                        if t.kept > t.limit {
                            t.overflow = true;
                            t.chunks = Vec::new();
                        } else {
                            t.chunks.push(data.clone());
                            this.pos += 1;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                t.trailers = Some(trailers.clone());
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            // Any other frame kind carries nothing to forward: read on.
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(tee) = &self.tee else {
            return true;
        };
        tee.lock().is_ok_and(|t| {
            t.done && self.pos >= t.chunks.len() && (t.trailers.is_none() || self.trailers_sent)
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
