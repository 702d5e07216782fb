//! The server side of plaintext client connections (egress, and ingress without TLS): HTTP/1.1
//! with our own codec, HTTP/2 with prior knowledge (h2c) handed to hyper.
//!
//! hyper's HTTP/1 server gives every connection an 8 KiB read and an 8 KiB write buffer, and
//! every request a header-read timer and a boxed dispatch state; at 256 keep-alive connections
//! that was most of the agent's heap. Here a connection holds one read buffer that starts at
//! 4 KiB, grows while reads fill it (to 64 KiB) and shrinks back between requests, a small
//! buffer for response heads, one timer for its whole life, and the request's future (boxed
//! once per connection, reused by every request).
//!
//! - **Request heads** are parsed with `httparse` (hyper's parser); field values are slices of
//!   the read buffer (no copy). A head larger than `--max-header-bytes` or with more fields than
//!   `--max-headers` is answered 431, an invalid one 400, a request line of another HTTP version
//!   505; the connection is then closed.
//! - **Request framing** follows RFC 9112 §6.3 and refuses what could be smuggled (400):
//!   `Transfer-Encoding` on HTTP/1.0, a final transfer coding other than `chunked`, an invalid
//!   or repeated-and-differing `Content-Length`. With both `Transfer-Encoding: chunked` and
//!   `Content-Length`, the chunked coding frames the body, `Content-Length` is removed, and the
//!   connection is closed after the response.
//! - **The request body** ([`RequestBody`]) reads the connection as the handler polls it, from
//!   any task; `Expect: 100-continue` is answered when the body is first read, and not at all if
//!   the response comes first.
//! - **Timeouts:** the client has `--client-timeout-seconds` to send a complete head, counted
//!   from when the connection starts waiting for it (so it also bounds an idle keep-alive
//!   connection). While the handler runs, a client that closes its connection cancels the
//!   request (its upstream exchange is dropped).
//! - **Responses** are framed by the body's known length (or its `Content-Length` field), else
//!   chunked (trailers are sent), or, for an HTTP/1.0 client, by closing the connection. `HEAD`,
//!   1xx, 204 and 304 responses carry no body. A `Date` field is added when missing.
//! - **Keep-alive:** HTTP/1.1 unless either side says `close`; HTTP/1.0 with `keep-alive`.
//!   Pipelined requests are answered in order. A response sent before its request body was read
//!   closes the connection (after a short lingering read, so the response is not lost to a TCP
//!   reset).
//! - **Drain:** an idle connection closes at once; one with a request in flight answers it with
//!   `Connection: close` and closes.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::BoxError;
use super::h1::{self, BodyFraming, Chunked, FIRST_READ, Framing, H1Error, Step, Writer};
use crate::agent::Shared;
use crate::metrics::LimitKind;

/// Most request fields the parser has room for: a larger `--max-headers` is capped here.
pub const MAX_HEADERS_CAP: usize = 256;

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client speaking h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection closed with an unread request body keeps reading (and discarding)
/// what the client still sends, so the response is not destroyed by a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

/// The limits and timeouts of the downstream HTTP/1 server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and fields), and largest trailer section.
    pub max_head_bytes: usize,
    /// Most fields in a request head (at most [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
    /// How long a client may take to send a complete request head, counted from when the
    /// connection starts waiting for it.
    pub header_timeout: Duration,
}

/// Why the body of a client's request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The HTTP/1.1 connection failed or the body's framing was broken.
    #[error("reading the client's request body: {0}")]
    H1(#[from] H1Error),
    /// hyper failed to read it (HTTP/2, TLS connections).
    #[error("reading the client's request body: {0}")]
    Hyper(#[from] hyper::Error),
    /// The request this body belongs to is over (its connection moved on or closed).
    #[error("the client's request is over")]
    Stale,
}

impl super::body::IdleError for BodyError {
    fn stream_idle(_: Duration) -> Option<Self> {
        None
    }
}

/// The body of a client's request, HTTP/1.1 or HTTP/2.
pub struct RequestBody(Kind);

enum Kind {
    /// No body.
    Empty,
    /// Read from the HTTP/1.1 connection it came on.
    H1 { conn: Arc<Shared1>, generation: u32 },
    /// Read by hyper: an HTTP/2 stream's body, or a request on a TLS connection.
    Hyper(Incoming),
}

impl RequestBody {
    /// A body read by hyper (HTTP/2, and HTTP/1.1 over TLS).
    pub fn hyper(body: Incoming) -> RequestBody {
        RequestBody(Kind::Hyper(body))
    }

    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody(Kind::Empty)
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Kind::Empty => "empty",
            Kind::H1 { .. } => "http/1.1",
            Kind::Hyper(_) => "hyper",
        };
        f.debug_tuple("RequestBody").field(&kind).finish()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::H1 { conn, generation } => conn.lock().poll_body(*generation, cx),
            Kind::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Hyper),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::H1 { conn, generation } => {
                let c = conn.lock();
                c.generation != *generation || c.body.ended()
            }
            Kind::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::H1 { conn, .. } => conn.lock().body.size_hint(),
            Kind::Hyper(b) => b.size_hint(),
        }
    }
}

/// The connection state shared by the connection's task and its request's body.
struct Shared1(Mutex<Io>);

impl Shared1 {
    fn lock(&self) -> MutexGuard<'_, Io> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `Expect: 100-continue` handling of the request being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// Not asked for, already sent, or no longer useful (the response has started).
    No,
    /// Asked for: this much of [`CONTINUE`] is written.
    Wanted(usize),
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

struct Io {
    stream: TcpStream,
    /// Bytes read and not yet consumed: the rest of the current request, pipelined requests.
    buf: BytesMut,
    read_size: usize,
    /// The body of the request being served.
    body: BodyFraming,
    /// Reading the body failed (the connection cannot go on).
    body_failed: bool,
    /// The request being served (a body of an older one gets [`BodyError::Stale`]).
    generation: u32,
    expect: Continue,
}

impl Io {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        h1::poll_fill(&mut self.stream, &mut self.buf, &mut self.read_size, cx)
    }

    fn poll_body(
        &mut self,
        generation: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if generation != self.generation {
            return Poll::Ready(Some(Err(BodyError::Stale)));
        }
        if self.body_failed {
            return Poll::Ready(Some(Err(BodyError::Stale)));
        }
        while let Continue::Wanted(done) = self.expect {
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &CONTINUE[done..])) {
                Ok(n) if n > 0 => {
                    self.expect = if done + n == CONTINUE.len() {
                        Continue::No
                    } else {
                        Continue::Wanted(done + n)
                    };
                }
                Ok(_) => return self.body_fail(H1Error::Write(io::ErrorKind::WriteZero.into())),
                Err(e) => return self.body_fail(H1Error::Write(e)),
            }
        }
        loop {
            match self.body.step(&mut self.buf) {
                Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return self.body_fail(e),
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return self.body_fail(H1Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return self.body_fail(H1Error::Read(e)),
            }
        }
    }

    fn body_fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.body_failed = true;
        Poll::Ready(Some(Err(BodyError::H1(e))))
    }

    /// Reads the next request head: `Ok(None)` when the client closed the connection cleanly
    /// before sending one.
    fn poll_head(
        &mut self,
        limits: &Limits,
        first: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Head>, Refusal>> {
        loop {
            if !self.buf.is_empty() {
                if first && self.buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&self.buf) {
                    // Possibly the start of the HTTP/2 preface: read on.
                } else if first && self.buf.starts_with(H2_PREFACE) {
                    return Poll::Ready(Ok(Some(Head::H2)));
                } else if let Some(parsed) = parse_request(&mut self.buf, limits)? {
                    return Poll::Ready(Ok(Some(Head::H1(parsed))));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.buf.is_empty() => return Poll::Ready(Ok(None)),
                Ok(0) => return Poll::Ready(Err(Refusal::Incomplete)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Refusal::Io(e))),
            }
        }
    }

    /// While the handler runs (and the request body has been read): whether the client has
    /// closed the connection. Bytes it sends meanwhile (a pipelined request) are kept, up to one
    /// head's worth.
    fn poll_client_gone(&mut self, limits: &Limits, cx: &mut Context<'_>) -> bool {
        if !self.body.ended() || self.body_failed {
            // The body's reader watches the connection.
            return false;
        }
        while self.buf.len() < limits.max_head_bytes {
            match self.poll_fill(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
            }
        }
        false
    }

    /// Starts serving a new request: bodies of older ones go stale.
    fn next_request(&mut self, body: BodyFraming, expect: Continue) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.body = body;
        self.body_failed = false;
        self.expect = expect;
        self.generation
    }

    /// Between requests: buffers grown by a large request are given back.
    fn idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 2 * FIRST_READ {
            self.buf = BytesMut::new();
        }
        self.read_size = FIRST_READ;
    }
}

/// A response head goes out through the lock, taken only for the write itself: the response
/// body is polled between writes, and it may be reading this connection's request body.
struct Locked<'a>(&'a Shared1);

impl AsyncWrite for Locked<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.lock().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.lock().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.lock().stream).poll_shutdown(cx)
    }
}

/// What came in at the start of a request.
#[allow(clippy::large_enum_variant)] // Moved once per request; boxed, it would be an allocation.
enum Head {
    /// An HTTP/1.x request.
    H1(Parsed),
    /// The HTTP/2 preface (first request of a connection only).
    H2,
}

/// A parsed request head.
struct Parsed {
    parts: http::request::Parts,
    body: BodyFraming,
    /// The connection may carry another request after this one.
    keep_alive: bool,
    /// `Expect: 100-continue` with a body to read.
    expect_continue: bool,
}

/// Why a request head was refused (and the connection closed).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("request head larger than the limit, or with too many fields")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported HTTP version")]
    Version,
    #[error("the client closed the connection in the middle of a request head")]
    Incomplete,
    #[error("no complete request head within the client timeout")]
    Timeout,
    #[error("reading the request: {0}")]
    Io(#[source] io::Error),
}

impl Refusal {
    /// The answer sent before closing, and the limit counter it is counted in.
    fn answer(&self) -> (Option<&'static [u8]>, Option<LimitKind>) {
        match self {
            Refusal::TooLarge => (
                Some(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
                Some(LimitKind::HeadTooLarge),
            ),
            Refusal::Malformed(_) => (
                Some(b"HTTP/1.1 400 Bad Request\r\n"),
                Some(LimitKind::Malformed),
            ),
            Refusal::Version => (
                Some(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"),
                Some(LimitKind::Malformed),
            ),
            Refusal::Timeout => (None, Some(LimitKind::ClientTimeout)),
            Refusal::Incomplete | Refusal::Io(_) => (None, None),
        }
    }
}

/// Parses a request head at the start of `buf` (consumed when complete; `None`: incomplete).
fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Parsed>, Refusal> {
    let (len, method, target, minor, fields) = {
        let mut raw =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
        let room = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut raw[..room],
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
                return Err(Refusal::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
            Err(httparse::Error::Version) => return Err(Refusal::Version),
            Err(_) => return Err(Refusal::Malformed("request head")),
        };
        if len > limits.max_head_bytes {
            return Err(Refusal::TooLarge);
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &str| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        (
            len,
            span(req.method.unwrap_or_default()),
            span(req.path.unwrap_or_default()),
            req.version.unwrap_or(1),
            h1::FieldPositions::of(buf, req.headers),
        )
    };
    let head = buf.split_to(len).freeze();
    let method = Method::from_bytes(&head[method]).map_err(|_| Refusal::Malformed("method"))?;
    let uri = http::Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| Refusal::Malformed("request target"))?;
    let (mut headers, scan) =
        h1::build_fields(&head, fields.as_slice()).map_err(Refusal::Malformed)?;
    let mut keep_alive = !scan.close && (minor == 1 || scan.keep_alive);
    let body = if scan.transfer_encoded {
        if minor == 0 {
            return Err(Refusal::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !scan.chunked {
            return Err(Refusal::Malformed("final transfer coding is not chunked"));
        }
        if scan.length.is_some() {
            // RFC 9112 §6.3 (3): chunked frames it; the connection must close after.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        BodyFraming::Chunked(Chunked::Size)
    } else {
        match scan.length {
            Some(n) if n > 0 => BodyFraming::Length(n),
            _ => BodyFraming::Empty,
        }
    };
    let expect_continue = minor == 1
        && !body.ended()
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    Ok(Some(Parsed {
        parts,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// What the response to one request must respect.
struct Exchange {
    version: Version,
    head_request: bool,
}

/// Encodes the response head into `out` and says how its body is written (`None`: no body).
fn encode_response_head(
    parts: &http::response::Parts,
    body: SizeHint,
    end_stream: bool,
    ex: &Exchange,
    keep_alive: &mut bool,
    out: &mut Vec<u8>,
) -> Option<Framing> {
    out.clear();
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // HEAD and 304 answers describe the body they do not carry: their Content-Length stays.
    let describes_only = ex.head_request || status == StatusCode::NOT_MODIFIED;
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut declared = None;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            if declared.is_none() {
                declared = h1::parse_length(value.as_bytes());
            }
            if describes_only && declared.is_some() {
                h1::field(out, b"content-length", value.as_bytes());
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        h1::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        date::with(|d| h1::field(out, b"date", d));
    }
    let length = |out: &mut Vec<u8>, n: u64| {
        h1::field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    };
    let framing = if describes_only {
        if declared.is_none()
            && ex.head_request
            && let Some(n) = body.exact()
            && n > 0
        {
            length(out, n);
        }
        None
    } else if bodiless {
        None
    } else if end_stream {
        length(out, 0);
        Some(Framing::Length(0))
    } else if let Some(n) = body.exact().or(declared) {
        length(out, n);
        Some(Framing::Length(n))
    } else if ex.version == Version::HTTP_11 {
        h1::field(out, b"transfer-encoding", b"chunked");
        Some(Framing::Chunked)
    } else {
        *keep_alive = false;
        Some(Framing::UntilClose)
    };
    if !*keep_alive {
        h1::field(out, b"connection", b"close");
    } else if ex.version == Version::HTTP_10 {
        h1::field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The `Date` field value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// `Sun, 06 Nov 1994 08:49:37 GMT`.
    const LEN: usize = 29;

    thread_local! {
        static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
    }

    /// Calls `f` with the current date.
    pub fn with(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let mut buf = [0u8; LEN];
                let _ = write!(&mut buf[..], "{}", httpdate::HttpDate::from(now));
                *c = (secs, buf);
            }
            f(&c.1);
        });
    }
}

/// Serves one plaintext client connection with `handler` until the client closes it, it fails,
/// keep-alive ends, or the agent drains. A connection that opens with the HTTP/2 preface is
/// served by hyper's HTTP/2 server (`h2`) instead.
pub async fn serve<F, Fut, B>(
    shared: &Shared,
    stream: TcpStream,
    limits: Limits,
    h2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    handler: F,
) where
    F: Fn(Request<RequestBody>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let conn = Arc::new(Shared1(Mutex::new(Io {
        stream,
        buf: BytesMut::new(),
        read_size: FIRST_READ,
        body: BodyFraming::Empty,
        body_failed: false,
        generation: 0,
        expect: Continue::No,
    })));
    let mut drain_rx = shared.lifecycle.drain_signal();
    let drain = super::drained(&mut drain_rx).fuse();
    tokio::pin!(drain);
    let mut draining = false;
    let timer = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(timer);
    // The request's future: boxed once per connection and reused by each request, so that the
    // connection's own future stays small while it waits between requests.
    let mut in_flight: Option<Pin<Box<Option<Fut>>>> = None;
    let mut out: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // The timer is moved only when it fires early (it was set for an earlier request): no
        // timer-wheel work per request.
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        let head = poll_fn(|cx| {
            if !draining && drain.as_mut().poll(cx).is_ready() {
                draining = true;
            }
            let mut io = conn.lock();
            if let Poll::Ready(r) = io.poll_head(&limits, first, cx) {
                return Poll::Ready(r);
            }
            if draining && io.buf.is_empty() {
                return Poll::Ready(Ok(None));
            }
            drop(io);
            while timer.as_mut().poll(cx).is_ready() {
                if timer.deadline() >= deadline {
                    return Poll::Ready(Err(Refusal::Timeout));
                }
                timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await;
        let parsed = match head {
            Ok(Some(Head::H1(p))) => p,
            Ok(Some(Head::H2)) => {
                drop(in_flight);
                // Boxed: the HTTP/2 connection's state is large, and inline it would make
                // every HTTP/1.1 connection's future as large.
                return Box::pin(serve_h2(shared, conn, h2, handler)).await;
            }
            Ok(None) => return close(&conn, false).await,
            Err(refusal) => return Box::pin(refuse(shared, &conn, refusal)).await,
        };
        let ex = Exchange {
            version: parsed.parts.version,
            head_request: parsed.parts.method == Method::HEAD,
        };
        let body = if parsed.body.ended() {
            conn.lock().next_request(BodyFraming::Empty, Continue::No);
            RequestBody::empty()
        } else {
            let expect = if parsed.expect_continue {
                Continue::Wanted(0)
            } else {
                Continue::No
            };
            let generation = conn.lock().next_request(parsed.body, expect);
            RequestBody(Kind::H1 {
                conn: conn.clone(),
                generation,
            })
        };
        let slot = in_flight.get_or_insert_with(|| Box::pin(None));
        slot.set(Some(handler(Request::from_parts(parsed.parts, body))));
        let response = poll_fn(|cx| {
            if let Some(fut) = slot.as_mut().as_pin_mut()
                && let Poll::Ready(r) = fut.poll(cx)
            {
                return Poll::Ready(Some(r));
            }
            if !draining && drain.as_mut().poll(cx).is_ready() {
                draining = true;
            }
            if conn.lock().poll_client_gone(&limits, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        slot.set(None);
        let Some(response) = response else {
            tracing::debug!(
                "the client closed its connection before the response; request cancelled"
            );
            return close(&conn, false).await;
        };
        let (parts, body) = response.into_parts();
        let mut keep_alive = parsed.keep_alive && !draining;
        let framing = encode_response_head(
            &parts,
            body.size_hint(),
            body.is_end_stream(),
            &ex,
            &mut keep_alive,
            &mut out,
        );
        // Too late for 100 Continue: the client sends its body or gives up, and the
        // connection closes below unless the body was read anyway.
        conn.lock().expect = Continue::No;
        let mut writer = Writer::new(framing.map(|_| body), framing.unwrap_or(Framing::Length(0)));
        let written = poll_fn(|cx| writer.poll_write(&mut Locked(&conn), &mut out, cx)).await;
        drop(writer);
        if let Err(e) = written {
            tracing::debug!(error = %e, "response not written in full; closing the connection");
            return close(&conn, false).await;
        }
        let unread = {
            let io = conn.lock();
            !io.body.ended() || io.body_failed
        };
        if unread {
            return close(&conn, true).await;
        }
        if !keep_alive {
            return close(&conn, false).await;
        }
        conn.lock().idle();
        if out.capacity() > 2 * FIRST_READ {
            out = Vec::new();
        }
        first = false;
    }
}

/// Answers a refused request head (when it has an answer), counts it, and closes.
async fn refuse(shared: &Shared, conn: &Shared1, refusal: Refusal) {
    let (answer, limit) = refusal.answer();
    if let Some(kind) = limit {
        shared.metrics.limit_hit(kind);
    }
    tracing::debug!(error = %refusal, "client connection closed");
    if let Some(status_line) = answer {
        let mut out = status_line.to_vec();
        date::with(|d| h1::field(&mut out, b"date", d));
        out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n\r\n");
        let _ = tokio::time::timeout(LINGER, Locked(conn).write_all(&out)).await;
    }
    close(conn, answer.is_some()).await;
}

/// Closes the connection: sends FIN, then (`linger`) reads and drops what the client still
/// sends for a short while, so that closing with unread bytes does not reset the connection
/// before the client has read the response. Bodies of the last request go stale.
async fn close(conn: &Shared1, linger: bool) {
    {
        let mut io = conn.lock();
        io.generation = io.generation.wrapping_add(1);
        io.body = BodyFraming::Empty;
        io.buf = BytesMut::new();
        // A TCP shutdown is immediate: never pending.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut io.stream).poll_shutdown(&mut cx);
    }
    if linger {
        // Boxed: rare, and inline its timer would make every connection's future larger.
        Box::pin(drain_input(conn)).await;
    }
}

/// Reads and drops input until the client closes, [`LINGER_BYTES`] or [`LINGER`].
async fn drain_input(conn: &Shared1) {
    let _ = tokio::time::timeout(LINGER, async {
        let mut seen = 0;
        poll_fn(|cx| {
            let mut io = conn.lock();
            while seen < LINGER_BYTES {
                io.buf.clear();
                match ready!(io.poll_fill(cx)) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
            Poll::Ready(())
        })
        .await
    })
    .await;
}

/// Serves a connection that opened with the HTTP/2 preface with hyper's HTTP/2 server, the
/// bytes already read given back to it first.
async fn serve_h2<F, Fut, B>(
    shared: &Shared,
    conn: Arc<Shared1>,
    h2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    handler: F,
) where
    F: Fn(Request<RequestBody>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Ok(conn) = Arc::try_unwrap(conn) else {
        // No request body exists before the first request: this cannot happen.
        tracing::warn!("HTTP/2 connection still shared; closing");
        return;
    };
    let io = conn.0.into_inner().unwrap_or_else(PoisonError::into_inner);
    let stream = Rewind {
        prefix: io.buf.freeze(),
        stream: io.stream,
    };
    // `map`, not `async move { Ok(fut.await) }`: an async block awaiting a future it owns holds
    // that future twice, and hyper keeps the service future per stream.
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        handler(req.map(RequestBody::hyper)).map(Ok::<_, Infallible>)
    });
    let conn = h2.serve_connection(TokioIo::new(stream), svc);
    super::run_hyper_connection(shared, conn, |c| c.graceful_shutdown()).await;
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use http::{Request, Response};
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::RequestBody;

    /// A concrete error type: `Box<dyn Error>` here trips a higher-ranked lifetime bug of rustc's
    /// `Send` check in `tokio::spawn`.
    type TestBody = UnsyncBoxBody<Bytes, std::io::Error>;

    /// Dropped with the request future of `/hang`.
    struct Cancelled(Arc<AtomicUsize>);

    impl Drop for Cancelled {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    use std::sync::Arc;

    /// What the test server does, by path.
    async fn script(req: Request<RequestBody>, cancelled: Arc<AtomicUsize>) -> Response<TestBody> {
        let head = format!(
            "{} {} v={} cl={:?} te={:?}",
            req.method(),
            req.uri(),
            if req.version() == http::Version::HTTP_10 {
                "1.0"
            } else {
                "1.1"
            },
            req.headers().get("content-length"),
            req.headers().get("transfer-encoding"),
        );
        let hint = http_body::Body::size_hint(req.body()).exact();
        let mut resp = match req.uri().path() {
            "/echo" => Response::new(
                req.into_body()
                    .map_err(std::io::Error::other)
                    .boxed_unsync(),
            ),
            "/collect" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Response::new(
                    Full::new(body)
                        .map_err(std::io::Error::other)
                        .boxed_unsync(),
                )
            }
            "/ignore" => Response::new(
                Full::new(Bytes::from_static(b"ignored"))
                    .map_err(std::io::Error::other)
                    .boxed_unsync(),
            ),
            "/stream" => {
                let frames = futures::stream::iter([
                    Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"one,"))),
                    Ok(http_body::Frame::data(Bytes::from_static(b"two"))),
                    Ok(http_body::Frame::trailers({
                        let mut t = http::HeaderMap::new();
                        t.insert("x-trailer", http::HeaderValue::from_static("yes"));
                        t
                    })),
                ]);
                Response::new(StreamBody::new(frames).boxed_unsync())
            }
            "/nocontent" => {
                let mut r = Response::new(
                    http_body_util::Empty::new()
                        .map_err(std::io::Error::other)
                        .boxed_unsync(),
                );
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                r
            }
            "/hang" => {
                let _guard = Cancelled(cancelled);
                std::future::pending::<()>().await;
                unreachable!()
            }
            _ => Response::new(
                Full::new(Bytes::from_static(b"0123456789"))
                    .map_err(std::io::Error::other)
                    .boxed_unsync(),
            ),
        };
        resp.headers_mut()
            .insert("x-request", http::HeaderValue::from_str(&head).unwrap());
        resp.headers_mut().insert(
            "x-body-hint",
            http::HeaderValue::from_str(&format!("{hint:?}")).unwrap(),
        );
        resp
    }

    struct TestServer {
        addr: SocketAddr,
        cancelled: Arc<AtomicUsize>,
        agent: crate::AgentHandle,
        _dir: tempfile::TempDir,
    }

    async fn server(tune: impl FnOnce(&mut crate::Settings)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::Settings::for_unit_test(dir.path());
        tune(&mut s);
        let agent = crate::Agent::start(s).await.unwrap();
        let shared = agent.shared().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancelled = Arc::new(AtomicUsize::new(0));
        let c = cancelled.clone();
        tokio::spawn(async move {
            let servers = Arc::new(crate::proxy::limits::server_builder(&shared.settings));
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (shared, servers, c) = (shared.clone(), servers.clone(), c.clone());
                tokio::spawn(async move {
                    super::super::serve_plain(&shared, stream, &servers, move |req| {
                        script(req, c.clone())
                    })
                    .await
                });
            }
        });
        TestServer {
            addr,
            cancelled,
            agent,
            _dir: dir,
        }
    }

    /// Sends `raw` and reads until the server closes the connection.
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        read_to_close(&mut s).await
    }

    /// Reads until the server closes the connection (at most 10 s).
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    const LIMITS: super::Limits = super::Limits {
        max_head_bytes: 8 * 1024,
        max_headers: 16,
        header_timeout: Duration::from_secs(30),
    };

    /// Mangled request heads: never a panic, and what is accepted is framed consistently: a
    /// length body has one `Content-Length` equal to it, a chunked one has none left, and
    /// ambiguous framing never keeps the connection.
    #[test]
    fn mangled_request_heads_never_panic() {
        use rand::SeedableRng;
        let seeds: [&[u8]; 4] = [
            b"POST /a?b=c HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            b"POST http://x/y HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.0\r\nconnection: keep-alive\r\nexpect: 100-continue\r\n\r\n",
            b"PUT * HTTP/1.1\r\ncontent-length: 10\r\ncontent-length: 10\r\nconnection: close\r\n\r\n",
        ];
        const AWKWARD: &[u8] = b"\r\n:;0 \t\x00\xff,";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e5e_0001);
        let mut accepted = 0;
        for round in 0..20_000 {
            let wire = super::h1::mangled(seeds[round % seeds.len()], AWKWARD, &mut rng);
            let mut buf = BytesMut::from(&wire[..]);
            let Ok(Some(p)) = super::parse_request(&mut buf, &LIMITS) else {
                continue;
            };
            accepted += 1;
            let lengths: Vec<_> = p.parts.headers.get_all("content-length").iter().collect();
            match p.body {
                super::BodyFraming::Length(n) => {
                    assert_eq!(lengths.len(), 1, "{wire:?}");
                    assert_eq!(lengths[0].to_str().unwrap().parse::<u64>().unwrap(), n);
                }
                super::BodyFraming::Chunked(_) => {
                    assert!(lengths.is_empty(), "{wire:?}");
                    if p.parts.headers.contains_key("content-length") {
                        assert!(!p.keep_alive);
                    }
                }
                _ => {}
            }
            assert!(buf.len() <= wire.len());
        }
        assert!(
            accepted > 1_000,
            "the mutations left too few valid heads: {accepted}"
        );
    }

    /// A head arriving in pieces is complete only with its last byte, whatever the split.
    #[test]
    fn request_heads_parse_only_when_complete() {
        let wire = b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok";
        let head_len = wire.len() - 2;
        for cut in 1..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let r = super::parse_request(&mut buf, &LIMITS);
            if cut < head_len {
                assert!(matches!(r, Ok(None)), "cut at {cut}");
                assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
            } else {
                let p = r.unwrap().unwrap();
                assert_eq!(p.parts.uri, "/p");
                assert!(matches!(p.body, super::BodyFraming::Length(2)));
                assert_eq!(&buf[..], &wire[head_len..cut]);
            }
        }
        // Many fields (past those kept on the stack): every one kept, in order, values intact.
        let many: String = (0..60).map(|i| format!("x-f{i}: value-{i}\r\n")).collect();
        let wire = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let limits = super::Limits {
            max_headers: 64,
            ..LIMITS
        };
        let p = super::parse_request(&mut BytesMut::from(wire.as_bytes()), &limits)
            .unwrap()
            .unwrap();
        assert_eq!(p.parts.headers.len(), 60);
        for (i, (name, value)) in p.parts.headers.iter().enumerate() {
            assert_eq!(name.as_str(), format!("x-f{i}"));
            assert_eq!(value, &format!("value-{i}"));
        }
    }

    #[tokio::test]
    async fn requests_are_framed_as_rfc_9112_says() {
        let t = server(|_| {}).await;
        // Content-Length body, echoed with its length; then a chunked body with trailers, echoed
        // chunked with them; the last request closes.
        let r = exchange(
            t.addr,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n\
              GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        let responses: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), 3, "{r}");
        assert!(responses[0].starts_with("200 OK\r\n"), "{r}");
        assert!(responses[0].contains("content-length: 5\r\n"), "{r}");
        assert!(responses[0].contains("x-body-hint: Some(5)"), "{r}");
        assert!(responses[0].ends_with("\r\n\r\nhello"), "{r}");
        assert!(
            responses[1].contains("transfer-encoding: chunked\r\n"),
            "{r}"
        );
        assert!(responses[1].contains("te=Some(\"chunked\")"), "{r}");
        assert!(
            responses[1].ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n"),
            "{r}"
        );
        assert!(responses[2].contains("connection: close\r\n"), "{r}");
        assert!(responses[2].ends_with("\r\n\r\n0123456789"), "{r}");
        for resp in &responses {
            assert!(resp.contains("\r\ndate: "), "{resp}");
        }

        // Smuggling shapes: 400 and closed, the request behind never read.
        for raw in [
            &b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"[..],
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nabcde",
            b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /plain HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        ] {
            let r = exchange(t.addr, &[raw, b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"].concat()).await;
            assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
            assert_eq!(r.matches("HTTP/1.1").count(), 1, "{r}");
        }
        // Both: chunked frames the body, Content-Length is not passed on, the connection closes.
        let r = exchange(
            t.addr,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
        assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "{r}");
        assert!(r.contains("cl=None"), "{r}");
        assert!(r.contains("connection: close\r\n"), "{r}");
        assert!(r.ends_with("2\r\nok\r\n0\r\n\r\n"), "{r}");
        // Equal repeated lengths are passed on as one.
        let r = exchange(
            t.addr,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        )
        .await;
        assert!(
            r.contains("cl=Some(\"2\")") && r.ends_with("\r\n\r\nok"),
            "{r}"
        );
        // Another HTTP version.
        let r = exchange(t.addr, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 505 "), "{r}");
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn responses_are_framed_for_the_request_and_the_client() {
        let t = server(|_| {}).await;
        // HTTP/1.1: unknown length is chunked (trailers sent); HEAD describes without a body;
        // 204 has neither body nor length.
        let r = exchange(
            t.addr,
            b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n\
              HEAD /plain HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /nocontent HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        let responses: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), 3, "{r}");
        assert!(
            responses[0].ends_with("\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\nx-trailer: yes\r\n\r\n"),
            "{r}"
        );
        assert!(responses[1].contains("content-length: 10\r\n"), "{r}");
        assert!(responses[1].ends_with("\r\n\r\n"), "{r}");
        assert!(responses[2].starts_with("204 No Content\r\n"), "{r}");
        assert!(!responses[2].contains("content-length"), "{r}");
        assert!(responses[2].ends_with("\r\n\r\n"), "{r}");

        // HTTP/1.0: closed after the response unless it asks for keep-alive; a body of unknown
        // length is delimited by closing the connection.
        let r = exchange(t.addr, b"GET /plain HTTP/1.0\r\n\r\n").await;
        assert!(
            r.contains("connection: close\r\n") && r.ends_with("0123456789"),
            "{r}"
        );
        let r = exchange(
            t.addr,
            b"GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .await;
        let responses: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), 2, "{r}");
        assert!(responses[0].contains("connection: keep-alive\r\n"), "{r}");
        assert!(responses[1].contains("connection: close\r\n"), "{r}");
        assert!(!responses[1].contains("transfer-encoding"), "{r}");
        assert!(responses[1].ends_with("\r\n\r\none,two"), "{r}");
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_when_the_body_is_read() {
        let t = server(|_| {}).await;
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"POST /collect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            .await
            .unwrap();
        let mut interim = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"body").await.unwrap();
        s.write_all(b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let rest = read_to_close(&mut s).await;
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
        assert!(rest.contains("\r\n\r\nbodyHTTP/1.1 200 OK\r\n"), "{rest}");

        // Answered without reading the body: no 100 Continue, and the connection closes (the
        // body the client may still send is not taken for a request).
        let r = exchange(
            t.addr,
            b"POST /ignore HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(!r.contains("100 Continue"), "{r}");
        assert!(
            r.contains("connection: close\r\n") || r.ends_with("ignored"),
            "{r}"
        );
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn an_unread_body_closes_the_connection_after_the_response() {
        let t = server(|_| {}).await;
        // 256 KiB announced, a little sent: the answer arrives whole, then the connection closes
        // and nothing of the body is read as a request.
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 262144\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'G'; 64 * 1024]).await.unwrap();
        let r = read_to_close(&mut s).await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("ignored"),
            "{r}"
        );
        assert_eq!(r.matches("HTTP/1.1").count(), 1, "{r}");
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn a_client_that_goes_away_cancels_its_request() {
        let t = server(|_| {}).await;
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(t.cancelled.load(Ordering::SeqCst), 0);
        drop(s);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while t.cancelled.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "request not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn heads_over_the_limits_are_431() {
        let t = server(|s| {
            s.max_header_bytes = 2048;
            s.max_headers = 8;
        })
        .await;
        let big = format!(
            "GET /plain HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
            "v".repeat(2100)
        );
        let r = exchange(t.addr, big.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // Incomplete and already too large: refused before the end of the head.
        let r = exchange(
            t.addr,
            format!("GET /plain HTTP/1.1\r\nx: {}", "v".repeat(4096)).as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let many: String = (0..9).map(|i| format!("x-{i}: v\r\n")).collect();
        let r = exchange(
            t.addr,
            format!("GET /plain HTTP/1.1\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let fits: String = (0..7).map(|i| format!("x-{i}: v\r\n")).collect();
        let r = exchange(
            t.addr,
            format!("GET /plain HTTP/1.1\r\nConnection: close\r\n{fits}\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn draining_closes_idle_connections_and_finishes_busy_ones() {
        let t = server(|_| {}).await;
        let mut idle = TcpStream::connect(t.addr).await.unwrap();
        let mut busy = TcpStream::connect(t.addr).await.unwrap();
        // Half a head: the request is under way when the drain starts.
        busy.write_all(b"GET /plain HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.agent.shared().lifecycle.drain("test", true);
        assert_eq!(
            read_to_close(&mut idle).await,
            "",
            "idle connection closed at once"
        );
        busy.write_all(b"Host: a\r\n\r\n").await.unwrap();
        let r = read_to_close(&mut busy).await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.contains("connection: close\r\n"),
            "{r}"
        );
        t.agent.shutdown().await;
    }

    #[tokio::test]
    async fn large_bodies_stream_both_ways_and_buffers_shrink_after() {
        let t = server(|_| {}).await;
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (mut rd, mut wr) = s.split();
        let send = async {
            wr.write_all(head.as_bytes()).await.unwrap();
            // Written while the echo streams back: both directions at once.
            wr.write_all(&body).await.unwrap();
            wr.write_all(b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
        };
        let mut got = Vec::new();
        let recv = rd.read_to_end(&mut got);
        let (_, n) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
                .await
                .unwrap();
        n.unwrap();
        let text_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(&got[text_end..text_end + body.len()], &body[..]);
        assert!(got[text_end + body.len()..].starts_with(b"HTTP/1.1 200 OK\r\n"));
        t.agent.shutdown().await;
    }
}
