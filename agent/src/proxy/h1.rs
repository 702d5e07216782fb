//! The client side of plaintext HTTP/1.1 upstream connections: one request and its response at a
//! time on a [`Conn`], driven directly by the request's own task.
//!
//! hyper's client connection runs as a task of its own and trades requests, response heads and
//! body chunks with the request's task through channels: two or more cross-task hand-offs per
//! request, a spawned task, an 8 KiB read and an 8 KiB write buffer, and a request channel
//! (about 16 KiB) for every upstream connection. Here the request's task writes the request head
//! and body and reads the response itself:
//!
//! - the request head (and the first body frame, if it is ready) goes out in one vectored write
//!   from a small per-connection buffer; body data is written from the client's own buffers;
//! - the response head is parsed with `httparse`, and its header values are slices of the read
//!   buffer (no copy); body data is split off the read buffer, which starts at 4 KiB and grows
//!   while reads fill it (to 64 KiB);
//! - framing follows RFC 9112 §6: `HEAD`, 1xx, 204 and 304 have no body; `Transfer-Encoding`
//!   ending in `chunked` wins over `Content-Length` (the connection is then not reused: such a
//!   message is a smuggling attempt or a broken server); differing `Content-Length` values are
//!   refused; otherwise the body ends when the upstream closes. Interim 1xx answers are skipped
//!   (`101` is refused: we never ask to upgrade);
//! - the request body keeps flowing after the response head arrives (a server may answer while
//!   it still reads), and a response that ends before the request body was sent ends the
//!   connection rather than returning it;
//! - a request sent on a reused connection that the upstream had already closed comes back to
//!   the caller to be sent on a fresh one ([`Failed::resend`]) when that is safe: nothing of the
//!   response arrived and either no body byte was taken from the client or the method is
//!   idempotent (RFC 9110 §9.2.2) and the body was never read.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::BoxError;
use super::pool::UpstreamBody;

/// Largest response head (status line and fields) accepted, and largest trailer section.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most fields in a response head or trailer section.
pub const MAX_HEADERS: usize = 100;
/// First read size; reads that fill the buffer double it up to [`MAX_READ`].
pub(super) const FIRST_READ: usize = 4 * 1024;
/// Largest read size.
pub(super) const MAX_READ: usize = 64 * 1024;
/// A body frame this small (with what is still unwritten before it) is copied after the head in
/// the connection's `out` buffer rather than written as a separate piece: a copy of a few KiB
/// costs less than the vectored system call it saves.
const COALESCE_MAX: usize = 4 * 1024;
/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange on an upstream HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Writing the request failed.
    #[error("writing the request failed: {0}")]
    Write(#[source] io::Error),
    /// Reading the response failed.
    #[error("reading the response failed: {0}")]
    Read(#[source] io::Error),
    /// The upstream closed the connection before sending anything.
    #[error("the upstream closed the connection before responding")]
    ClosedBeforeResponse,
    /// The upstream closed the connection in the middle of the response head.
    #[error("the upstream closed the connection in the middle of the response head")]
    IncompleteHead,
    /// The upstream closed the connection before the end of the response body.
    #[error("the upstream closed the connection before the end of the response body")]
    IncompleteBody,
    /// The response head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    /// The response head is too large.
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The response is not one we can frame or forward.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The body being sent failed (the client's request body, the upstream's response body).
    #[error("the body being sent failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body being sent did not match its `Content-Length`.
    #[error("the body being sent {0} its Content-Length")]
    Length(&'static str),
}

/// An upstream HTTP/1.1 connection between exchanges.
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed (always empty between exchanges).
    buf: BytesMut,
    /// The request head and chunk framing being written.
    out: Vec<u8>,
    /// Next read size.
    read_size: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.io.peer_addr().ok())
            .finish()
    }
}

impl Conn {
    /// A connection over `io` (connected, `TCP_NODELAY` set by the caller).
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            read_size: FIRST_READ,
        }
    }

    /// Whether an idle connection can carry another exchange: the upstream has neither closed
    /// it nor sent anything unasked. No system call unless the socket became readable since it
    /// was last drained.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more of the response into `buf`: the number of bytes read, 0 at end of stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.buf, &mut self.read_size, cx)
    }

    /// Readies a connection for the pool: buffers grown by a large response or request head are
    /// given back, so an idle connection holds a few KiB at most.
    pub fn idle(&mut self) {
        if self.buf.capacity() > 2 * FIRST_READ {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > 2 * FIRST_READ {
            self.out = Vec::new();
        }
        self.read_size = FIRST_READ;
    }

    /// Bytes held by this connection's buffers.
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.out.capacity()
    }
}

/// A failed exchange.
pub struct Failed {
    /// What went wrong.
    pub error: H1Error,
    /// The request's body, untouched, when the request may be sent again on a fresh
    /// connection: the connection was reused and closed under us before any response byte, and
    /// the upstream cannot have acted on it (not fully written) or the method is idempotent; no
    /// body byte was taken. The caller still has the head.
    pub resend: Option<UpstreamBody>,
}

impl std::fmt::Debug for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .field("resendable", &self.resend.is_some())
            .finish()
    }
}

/// Reads more from `io` into `buf`: the number of bytes read, 0 at end of stream. The read size
/// (`read_size`) doubles while reads fill the buffer, up to [`MAX_READ`], and halves after
/// small reads, down to [`FIRST_READ`].
///
/// Through `AsyncRead`, which marks the socket not readable after a short read: the probe of
/// [`Conn::is_reusable`] then costs no system call, and a task waiting for the next request
/// makes none either.
pub(super) fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    read_size: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        // All read is consumed: the next read starts over at the beginning of the allocation,
        // whose lines the last reads left in the cache, rather than after them, in lines no
        // read has touched for a buffer's worth of requests (at 256 connections, long gone
        // from the L2). Only when nothing split from the buffer still lives: no copy, no
        // allocation; otherwise the read goes where it would have.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
    if buf.capacity() - buf.len() < *read_size / 2 {
        buf.reserve(*read_size);
    }
    let spare = buf.capacity() - buf.len();
    let n = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf))?;
    if n == spare && *read_size < MAX_READ {
        *read_size *= 2;
    } else if n < *read_size / 4 && *read_size > FIRST_READ {
        *read_size /= 2;
    }
    Poll::Ready(Ok(n))
}

/// Sends the request `head` + `body` (the head's URI's path and query as the request target;
/// its `Host` field kept, or made from its URI's authority) on `conn` and reads the response
/// head. `reused`: the connection carried an exchange before (a failure before any response
/// byte may then be a stale connection: see [`Failed::resend`]).
///
/// The head is borrowed: it is encoded into the connection's buffer by this call, and the
/// caller keeps it for a retry. The future holds no copy of it.
pub fn exchange(
    conn: Box<Conn>,
    head: &http::request::Parts,
    body: UpstreamBody,
    reused: bool,
) -> impl Future<Output = Result<Response<ResponseBody>, Failed>> + use<> {
    let mut ex = Exchange::new(conn, head, body, reused);
    std::future::poll_fn(move |cx| ex.poll(cx))
}

/// How a message body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length`: bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (a response to an HTTP/1.0 client of unknown length).
    UntilClose,
}

/// Writes a message: the head already encoded in the connection's `out` buffer, then the body's
/// frames as they come. Used for requests to upstreams and for responses to clients.
pub(super) struct Writer<B = UpstreamBody> {
    body: Option<B>,
    framing: Framing,
    /// How much of the `out` buffer is written.
    out_pos: usize,
    /// Body data being written (after `out`).
    data: Bytes,
    /// Written after `data` (a chunk's CRLF).
    tail: &'static [u8],
    /// A frame was taken from the body: the message can no longer be sent again.
    taken: bool,
}

impl Writer<UpstreamBody> {
    /// Encodes the request head into `out` and returns the writer of the rest.
    fn start(parts: &http::request::Parts, body: UpstreamBody, out: &mut Vec<u8>) -> Writer {
        out.clear();
        let empty = body.is_end_stream();
        let framing = match body.size_hint().exact() {
            _ if empty => Framing::Length(0),
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        };
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        match parts.uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => out.extend_from_slice(pq.as_str().as_bytes()),
            _ => out.push(b'/'),
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
        {
            field(out, b"host", a.as_str().as_bytes());
        }
        let mut had_length = false;
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH {
                had_length = true;
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        match framing {
            Framing::Length(0)
                if !had_length
                    && !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) => {}
            Framing::Length(n) => field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            ),
            Framing::Chunked | Framing::UntilClose => field(out, b"transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
        Writer::new((!empty).then_some(body), framing)
    }
}

impl<B> Writer<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The writer of `body` (`None`: the message has none) framed as `framing`, after the head
    /// in the connection's `out` buffer.
    pub(super) fn new(body: Option<B>, framing: Framing) -> Writer<B> {
        Writer {
            body,
            framing,
            out_pos: 0,
            data: Bytes::new(),
            tail: b"",
            taken: false,
        }
    }

    fn has_pending(&self, out: &[u8]) -> bool {
        out.len() > self.out_pos || !self.data.is_empty() || !self.tail.is_empty()
    }

    /// Writes until the whole message is out (`Ready(Ok)`), the socket or the body is not
    /// ready (`Pending`), or something fails. The body is never polled while `io` is: `io` may
    /// take a lock that the body's own source needs.
    pub(super) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            if self.out_pos == out.len() {
                out.clear();
                self.out_pos = 0;
            }
            // Take the next frame when the last one's data is out: one that is ready now goes
            // out with what is pending (the head and the first data in one write).
            if self.data.is_empty()
                && self.tail.is_empty()
                && let Some(body) = self.body.as_mut()
            {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(frame) => self.frame(frame, out)?,
                    Poll::Pending if !self.has_pending(out) => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if !self.has_pending(out) {
                if self.body.is_none() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // One buffer goes out with `send`, several with `writev`: on Linux the vectored
            // call costs more (the iovec array is copied in, and the file layer checks it
            // before the socket sees it), ~0.5 µs a call on the benchmark's machine.
            let n = if self.data.is_empty() && self.tail.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, &out[self.out_pos..]))
            } else {
                let slices = [
                    IoSlice::new(&out[self.out_pos..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.tail),
                ];
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))
            }
            .map_err(H1Error::Write)?;
            if n == 0 {
                return Poll::Ready(Err(H1Error::Write(io::ErrorKind::WriteZero.into())));
            }
            self.advance(n, out.len());
        }
    }

    fn advance(&mut self, mut n: usize, out_len: usize) {
        let from_out = n.min(out_len - self.out_pos);
        self.out_pos += from_out;
        n -= from_out;
        let from_data = n.min(self.data.len());
        let _ = self.data.split_to(from_data);
        n -= from_data;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }

    /// Frames what the body gave (only called with nothing of `data`/`tail` pending).
    #[allow(clippy::type_complexity)]
    fn frame(
        &mut self,
        frame: Option<Result<Frame<Bytes>, B::Error>>,
        out: &mut Vec<u8>,
    ) -> Result<(), H1Error> {
        let frame = match frame {
            None => {
                self.body = None;
                return match self.framing {
                    Framing::Chunked => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        Ok(())
                    }
                    Framing::Length(0) | Framing::UntilClose => Ok(()),
                    Framing::Length(_) => Err(H1Error::Length("ended before")),
                };
            }
            Some(Err(e)) => {
                self.body = None;
                return Err(H1Error::Source(e.into()));
            }
            Some(Ok(f)) => f,
        };
        self.taken = true;
        match frame.into_data() {
            Ok(data) if data.is_empty() => Ok(()),
            Ok(data) => {
                match &mut self.framing {
                    Framing::Chunked => {
                        let mut hex = [0u8; 16];
                        let len = hex_len(data.len(), &mut hex);
                        out.extend_from_slice(len);
                        out.extend_from_slice(b"\r\n");
                        self.tail = b"\r\n";
                    }
                    Framing::Length(left) => {
                        *left = left
                            .checked_sub(data.len() as u64)
                            .ok_or(H1Error::Length("is longer than"))?;
                    }
                    Framing::UntilClose => {}
                }
                if out.len() - self.out_pos + data.len() + self.tail.len() <= COALESCE_MAX {
                    // A small frame joins what is pending in `out` (the head, a chunk line), so
                    // that all of it goes out in one `send`. Bounded: `out` holds at most
                    // COALESCE_MAX unwritten bytes this way; a larger frame waits in `data`, and
                    // no frame is taken while one does.
                    out.extend_from_slice(&data);
                    out.extend_from_slice(std::mem::take(&mut self.tail));
                } else {
                    self.data = data;
                }
                Ok(())
            }
            Err(frame) => {
                // Trailers: sent in a chunked body, dropped otherwise (HTTP/1.1 has no other
                // place for them). They are the last frame.
                if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing) {
                    self.body = None;
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        field(out, name.as_str().as_bytes(), value.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                }
                Ok(())
            }
        }
    }
}

/// `n` in lower-case hex, without leading zeros.
pub(super) fn hex_len(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

pub(super) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A request on its way out and its response head on its way in.
struct Exchange {
    conn: Option<Box<Conn>>,
    writer: Option<Writer>,
    /// The request is a `HEAD` (its response has no body).
    head_request: bool,
    /// The method is idempotent (RFC 9110 §9.2.2): the request may be sent again after the
    /// upstream may have seen it.
    idempotent: bool,
    reused: bool,
    /// Writing failed (the upstream may still have answered: read on).
    write_error: Option<H1Error>,
    /// Some response byte arrived.
    answered: bool,
    /// The request was written in full, body frames included.
    body_sent: bool,
}

impl Exchange {
    fn new(
        mut conn: Box<Conn>,
        head: &http::request::Parts,
        body: UpstreamBody,
        reused: bool,
    ) -> Exchange {
        let writer = Writer::start(head, body, &mut conn.out);
        Exchange {
            conn: Some(conn),
            writer: Some(writer),
            head_request: head.method == Method::HEAD,
            idempotent: matches!(
                head.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
            reused,
            write_error: None,
            answered: false,
            body_sent: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<ResponseBody>, Failed>> {
        match self.poll_head(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(r)) => Poll::Ready(Ok(r)),
            Poll::Ready(Err(error)) => Poll::Ready(Err(self.failed(error))),
        }
    }

    fn failed(&mut self, error: H1Error) -> Failed {
        let writer = self.writer.take();
        let untouched = writer.as_ref().map_or(!self.body_sent, |w| !w.taken);
        let unsent = self.write_error.is_some();
        let resend = (self.reused
            && !self.answered
            && untouched
            && (unsent || self.idempotent)
            && matches!(error, H1Error::ClosedBeforeResponse | H1Error::Read(_)))
        .then(|| {
            writer.and_then(|w| w.body).unwrap_or_else(|| {
                UpstreamBody::replay(crate::cluster::replay::ReplayBody::empty())
            })
        });
        // Nothing came back after a failed write: the write error says more.
        let error = match (self.write_error.take(), error) {
            (Some(w), H1Error::ClosedBeforeResponse | H1Error::Read(_)) => w,
            (_, e) => e,
        };
        Failed { error, resend }
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<ResponseBody>, H1Error>> {
        let conn = self.conn.as_mut().expect("polled after completion");
        let head_request = self.head_request;
        if let Some(w) = &mut self.writer
            && self.write_error.is_none()
        {
            match w.poll_write(&mut conn.io, &mut conn.out, cx) {
                Poll::Ready(Ok(())) => {
                    self.body_sent = w.taken;
                    self.writer = None;
                }
                Poll::Ready(Err(e @ (H1Error::Source(_) | H1Error::Length(_)))) => {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(e)) => self.write_error = Some(e),
                Poll::Pending => {}
            }
        }
        loop {
            if !conn.buf.is_empty() {
                match parse_head(&mut conn.buf, head_request)? {
                    Some(Head::Interim) => continue,
                    Some(Head::Final(parts, framing, keep_alive)) => {
                        let writer = self
                            .writer
                            .take()
                            .filter(|_| self.write_error.is_none())
                            .map(Box::new);
                        let keep_alive = keep_alive && self.write_error.is_none();
                        let body = ResponseBody {
                            conn: self.conn.take(),
                            writer,
                            framing,
                            keep_alive,
                        };
                        return Poll::Ready(Ok(Response::from_parts(parts, body)));
                    }
                    None if conn.buf.len() >= MAX_HEAD_BYTES => {
                        return Poll::Ready(Err(H1Error::HeadTooLarge));
                    }
                    None => {}
                }
            }
            match ready!(conn.poll_read(cx)) {
                Ok(0) if conn.buf.is_empty() => {
                    return Poll::Ready(Err(H1Error::ClosedBeforeResponse));
                }
                Ok(0) => return Poll::Ready(Err(H1Error::IncompleteHead)),
                Ok(_) => self.answered = true,
                Err(e) => return Poll::Ready(Err(H1Error::Read(e))),
            }
        }
    }
}

/// A parsed response head.
enum Head {
    /// A 1xx answer, consumed.
    Interim,
    /// The final response head, its body framing, and whether the connection may be reused.
    Final(http::response::Parts, BodyFraming, bool),
}

/// Parses a response head at the start of `buf` (consumed when complete; `None`: incomplete).
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, H1Error> {
    let (len, code, minor, fields) = {
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut raw)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        if len > MAX_HEAD_BYTES {
            return Err(H1Error::HeadTooLarge);
        }
        (
            len,
            res.code.unwrap_or(0),
            res.version.unwrap_or(1),
            FieldPositions::of(buf, res.headers),
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Invalid("status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::Invalid(
                "101 Switching Protocols to a request that did not ask to upgrade",
            ));
        }
        return Ok(Some(Head::Interim));
    }
    let (mut headers, scan) = build_fields(&head, fields.as_slice()).map_err(H1Error::Invalid)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut keep_alive = !scan.close && (minor == 1 || scan.keep_alive);
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            BodyFraming::Empty
        } else if scan.transfer_encoded {
            if scan.length.is_some() {
                // Both: RFC 9112 §6.3 (3) says Transfer-Encoding wins and the connection must close.
                headers.remove(header::CONTENT_LENGTH);
                keep_alive = false;
            }
            if scan.chunked {
                BodyFraming::Chunked(Chunked::Size)
            } else {
                keep_alive = false;
                BodyFraming::Close
            }
        } else if let Some(n) = scan.length {
            BodyFraming::Length(n)
        } else {
            keep_alive = false;
            BodyFraming::Close
        };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head::Final(parts, framing, keep_alive)))
}

/// A field's name and value as offsets into its head: (name start, name end, value start,
/// value end).
pub(super) type FieldPos = (u32, u32, u32, u32);

/// Fields kept on the stack by [`FieldPositions`]; heads with more use the heap.
const INLINE_FIELDS: usize = 24;

/// Where each field parsed out of a read buffer is, so that once the head is split off the
/// buffer and frozen, names and values can be taken from it without a copy. The usual few fields
/// stay on the stack (zeroing a large array for every head would cost more than the parse).
#[allow(clippy::large_enum_variant)] // On the stack by design: the heap is the rare case.
pub(super) enum FieldPositions {
    Inline(usize, [FieldPos; INLINE_FIELDS]),
    Heap(Vec<FieldPos>),
}

impl FieldPositions {
    /// The positions of `parsed`, parsed out of `buf`.
    pub(super) fn of(buf: &[u8], parsed: &[httparse::Header<'_>]) -> FieldPositions {
        let base = buf.as_ptr() as usize;
        let at = |h: &httparse::Header<'_>| {
            let ns = h.name.as_ptr() as usize - base;
            let vs = h.value.as_ptr() as usize - base;
            (
                ns as u32,
                (ns + h.name.len()) as u32,
                vs as u32,
                (vs + h.value.len()) as u32,
            )
        };
        if parsed.len() <= INLINE_FIELDS {
            let mut inline = [(0, 0, 0, 0); INLINE_FIELDS];
            for (slot, h) in inline.iter_mut().zip(parsed) {
                *slot = at(h);
            }
            FieldPositions::Inline(parsed.len(), inline)
        } else {
            FieldPositions::Heap(parsed.iter().map(at).collect())
        }
    }

    pub(super) fn as_slice(&self) -> &[FieldPos] {
        match self {
            FieldPositions::Inline(n, a) => &a[..*n],
            FieldPositions::Heap(v) => v,
        }
    }
}

/// Room left in a head's field map for the fields the proxy adds (`x-request-id`,
/// `x-forwarded-for`, trace context): a full map would be re-allocated and re-hashed on the first
/// insert.
const ADDED_FIELDS: usize = 4;

/// The fields of `head` at `fields`, values sharing `head`'s memory, and what they say about
/// framing. Repeated equal `Content-Length` fields are kept as one, so the framing forwarded to
/// the next hop is not ambiguous either.
pub(super) fn build_fields(
    head: &Bytes,
    fields: &[FieldPos],
) -> Result<(HeaderMap, FieldScan), &'static str> {
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
    let mut scan = FieldScan::default();
    for &(ns, ne, vs, ve) in fields {
        let name =
            HeaderName::from_bytes(&head[ns as usize..ne as usize]).map_err(|_| "field name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| "field value")?;
        scan.see(&name, &value)?;
        headers.append(name, value);
    }
    if scan.length_fields > 1
        && let Some(v) = headers.get(header::CONTENT_LENGTH).cloned()
    {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    Ok((headers, scan))
}

/// What a head's fields say about the body's framing and the connection (RFC 9112 §6, §9.3).
#[derive(Debug, Default)]
pub(super) struct FieldScan {
    /// The `Content-Length` (all its values are equal).
    pub(super) length: Option<u64>,
    /// How many `Content-Length` fields there were.
    length_fields: u32,
    /// A `Transfer-Encoding` field is present.
    pub(super) transfer_encoded: bool,
    /// The final transfer coding is `chunked`.
    pub(super) chunked: bool,
    /// `Connection: close`.
    pub(super) close: bool,
    /// `Connection: keep-alive`.
    pub(super) keep_alive: bool,
}

impl FieldScan {
    /// Notes one field. An invalid `Content-Length`, or one differing from an earlier one, is
    /// refused.
    pub(super) fn see(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
    ) -> Result<(), &'static str> {
        if name == header::CONTENT_LENGTH {
            let n = parse_length(value.as_bytes()).ok_or("invalid Content-Length")?;
            if self.length.is_some_and(|l| l != n) {
                return Err("differing Content-Length values");
            }
            self.length = Some(n);
            self.length_fields += 1;
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoded = true;
            // The final coding decides: `chunked` last means chunked framing.
            self.chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// A `Content-Length` value: digits only, and not absurdly long.
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// How a body being read is framed.
#[derive(Debug)]
pub(super) enum BodyFraming {
    /// No body (or it has been read).
    Empty,
    /// `Content-Length`: bytes still to read.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Until the peer closes the connection (responses only).
    Close,
}

/// What the next step of reading a body gave.
pub(super) enum Step {
    /// A data or trailers frame.
    Frame(Frame<Bytes>),
    /// The body has ended.
    End,
    /// More bytes must be read first (at the end of a [`BodyFraming::Close`] body, the end of
    /// the stream ends it).
    NeedMore,
}

impl BodyFraming {
    /// Takes the body's next frame out of `buf`.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, H1Error> {
        match self {
            BodyFraming::Empty | BodyFraming::Length(0) => {
                *self = BodyFraming::Empty;
                Ok(Step::End)
            }
            BodyFraming::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = (*left).min(buf.len() as u64) as usize;
                *left -= take as u64;
                Ok(Step::Frame(Frame::data(buf.split_to(take).freeze())))
            }
            BodyFraming::Chunked(state) => match state.decode(buf)? {
                Decoded::Data(d) => Ok(Step::Frame(Frame::data(d))),
                Decoded::Trailers(t) => {
                    *self = BodyFraming::Length(0);
                    Ok(Step::Frame(Frame::trailers(t)))
                }
                Decoded::End => {
                    *self = BodyFraming::Empty;
                    Ok(Step::End)
                }
                Decoded::NeedMore => Ok(Step::NeedMore),
            },
            BodyFraming::Close if buf.is_empty() => Ok(Step::NeedMore),
            BodyFraming::Close => Ok(Step::Frame(Frame::data(buf.split().freeze()))),
        }
    }

    /// Whether the body has been read to its end.
    pub(super) fn ended(&self) -> bool {
        matches!(self, BodyFraming::Empty | BodyFraming::Length(0))
    }

    /// The size of what is left, when known.
    pub(super) fn size_hint(&self) -> SizeHint {
        match self {
            BodyFraming::Empty => SizeHint::with_exact(0),
            BodyFraming::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

/// Where a chunked body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunked {
    /// At a chunk-size line.
    Size,
    /// In a chunk: bytes still to read.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero) chunk: the trailer section.
    Trailers,
    /// The body has ended.
    Done,
}

/// What the chunked decoder produced from the buffer.
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(H1Error::Invalid("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(H1Error::Invalid("chunk size")),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = (left.min(buf.len() as u64)) as usize;
                    *self = if take as u64 == left {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left - take as u64)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::Done => return Ok(Decoded::End),
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Invalid("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] == b"\r\n" {
                        let _ = buf.split_to(2);
                        *self = Chunked::Done;
                        return Ok(Decoded::End);
                    }
                    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (used, trailers) = match httparse::parse_headers(buf, &mut raw)? {
                        httparse::Status::Complete((used, fields)) => {
                            let mut map = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| H1Error::Invalid("trailer field name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| H1Error::Invalid("trailer field value"))?;
                                map.append(name, value);
                            }
                            (used, map)
                        }
                        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
                            return Err(H1Error::HeadTooLarge);
                        }
                        httparse::Status::Partial => return Ok(Decoded::NeedMore),
                    };
                    let _ = buf.split_to(used);
                    *self = Chunked::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
            }
        }
    }
}

/// The body of a response read from an upstream HTTP/1.1 connection. When it has been read to
/// its end (and the request was written in full), [`ResponseBody::reusable`] hands the
/// connection back.
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    /// The rest of the request body, still being sent (boxed: rare, and the body is moved
    /// several times on its way to the client).
    writer: Option<Box<Writer>>,
    framing: BodyFraming,
    keep_alive: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl ResponseBody {
    fn ended(&self) -> bool {
        self.framing.ended()
    }

    /// The connection, when this body has been read to its end, the request was written in
    /// full, and the upstream allows another exchange.
    pub fn reusable(&mut self) -> Option<Box<Conn>> {
        if self.ended() && self.keep_alive && self.writer.is_none() {
            self.conn.take()
        } else {
            None
        }
    }

    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.framing = BodyFraming::Empty;
        if self.writer.take().is_some() {
            // The response ended before the request did: this connection cannot go on.
            self.keep_alive = false;
        }
        Poll::Ready(None)
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.framing = BodyFraming::Empty;
        self.keep_alive = false;
        self.writer = None;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(w) = &mut this.writer {
            match w.poll_write(&mut conn.io, &mut conn.out, cx) {
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "request body not sent in full; the upstream answered");
                    this.writer = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Step::End) => return this.finish(),
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(conn.poll_read(cx)) {
                Ok(0) if matches!(this.framing, BodyFraming::Close) => {
                    this.keep_alive = false;
                    return this.finish();
                }
                Ok(0) => return this.fail(H1Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return this.fail(H1Error::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

/// `seed` with one to three random edits: a byte replaced, a byte of `awkward` inserted, or the
/// end cut off (the mangling of the parsers' robustness tests).
#[cfg(test)]
pub(super) fn mangled(seed: &[u8], awkward: &[u8], rng: &mut impl rand::Rng) -> Vec<u8> {
    let mut wire = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..wire.len());
        match rng.random_range(0..3) {
            0 => wire[at] = rng.random(),
            1 => wire.insert(at, awkward[rng.random_range(0..awkward.len())]),
            _ => wire.truncate(at.max(1)),
        }
    }
    wire
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::replay::ReplayBody;
    use http::Request;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// Feeds `wire` to a chunked decoder `step` bytes at a time; returns the data, the trailers
    /// and whether the end was seen.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap, bool), H1Error> {
        let mut dec = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers, mut ended) = (Vec::new(), HeaderMap::new(), false);
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = t,
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((data, trailers, ended))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;name=value\r\nhello\r\n6\r\n world\r\nA \r\n0123456789\r\n0\r\nx-checksum: 42\r\nx-other: a b\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, ended) = decode_in_steps(wire, step).unwrap();
            assert_eq!(data, b"hello world0123456789", "step {step}");
            assert_eq!(trailers["x-checksum"], "42");
            assert_eq!(trailers["x-other"], "a b");
            assert!(ended, "step {step}: the end after the trailers");
        }
        let (data, trailers, ended) = decode_in_steps(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(
            (data.as_slice(), trailers.len(), ended),
            (&b"abc"[..], 0, true)
        );
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nab\r\n"[..],
            b"3\r\nabcX\r\n",
            b"3\nabc\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                matches!(decode_in_steps(wire, 1), Err(H1Error::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b"5;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        assert!(matches!(
            decode_in_steps(&long, 512),
            Err(H1Error::Invalid(_))
        ));
    }

    fn head(wire: &str, head_request: bool) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(wire.as_bytes()), head_request)
    }

    fn final_head(wire: &str, head_request: bool) -> (http::response::Parts, BodyFraming, bool) {
        match head(wire, head_request) {
            Ok(Some(Head::Final(p, f, k))) => (p, f, k),
            Ok(Some(Head::Interim)) => panic!("interim: {wire:?}"),
            Ok(None) => panic!("incomplete: {wire:?}"),
            Err(e) => panic!("{e}: {wire:?}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (p, f, k) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            false,
        );
        assert!(matches!(f, BodyFraming::Length(12)) && k);
        assert_eq!(p.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(p.version, Version::HTTP_11);
        // HEAD, 204 and 304 have no body whatever their fields say.
        for (wire, head_req) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                false,
            ),
        ] {
            let (_, f, k) = final_head(wire, head_req);
            assert!(matches!(f, BodyFraming::Empty) && k, "{wire:?}");
        }
        // Chunked last wins over Content-Length, which goes; the connection ends after.
        let (p, f, k) = final_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, BodyFraming::Chunked(Chunked::Size)) && !k);
        assert!(!p.headers.contains_key("content-length"));
        let (_, f, k) = final_head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, BodyFraming::Chunked(_)) && k);
        // Not chunked last, or no length at all: until close.
        for wire in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
        ] {
            let (_, f, k) = final_head(wire, false);
            assert!(matches!(f, BodyFraming::Close) && !k, "{wire:?}");
        }
        // Keep-alive: HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`.
        let (_, _, k) = final_head(
            "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!k);
        let (p, _, k) = final_head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!k && p.version == Version::HTTP_10);
        let (_, _, k) = final_head(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(k);
        // Interim answers are consumed; 101 is refused.
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Some(Head::Interim))
        ));
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Some(Head::Final(..)))
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            head("HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(H1Error::Invalid(_))
        ));
        // Incomplete, malformed, differing lengths.
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\ncontent-le", false),
            Ok(None)
        ));
        assert!(head("HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
        assert!(matches!(
            head("SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(H1Error::Parse(_))
        ));
        for bad in ["1x", "-1", "", "99999999999999999999"] {
            let wire = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert!(
                matches!(head(&wire, false), Err(H1Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            head(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            ),
            Err(H1Error::Invalid(_))
        ));
        let (p, f, _) = final_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            false,
        );
        assert!(matches!(f, BodyFraming::Length(2)));
        assert_eq!(p.headers.get_all("content-length").iter().count(), 1);
    }

    #[test]
    fn oversized_response_heads_are_refused() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let wire = format!("HTTP/1.1 200 OK\r\n{many}content-length: 0\r\n\r\n");
        assert!(matches!(
            head(&wire, false),
            Err(H1Error::Parse(httparse::Error::TooManyHeaders))
        ));
        let big = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(head(&big, false), Err(H1Error::HeadTooLarge)));
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_cut_at_the_limit() {
        let (addr, task) = upstream(|mut s| async move {
            read_until(&mut s, b"\r\n\r\n").await;
            s.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            let filler = format!("x-filler: {}\r\n", "f".repeat(4000));
            // Until the client gives up and closes (the write then fails).
            while s.write_all(filler.as_bytes()).await.is_ok() {}
        })
        .await;
        let conn = Box::new(Conn::new(TcpStream::connect(addr).await.unwrap()));
        let req = Request::get(format!("http://{addr}/"))
            .header("host", "h")
            .body(UpstreamBody::replay(ReplayBody::empty()))
            .unwrap();
        let err = exchange_new(conn, req).await.unwrap_err();
        assert!(
            matches!(err.error, H1Error::HeadTooLarge),
            "{:?}",
            err.error
        );
        assert!(err.resend.is_none());
        task.await.unwrap();
    }

    /// Random chunked encodings (chunk sizes, extensions, trailers) of random bodies decode to
    /// the same bytes whatever the read boundaries; a fixed seed, so a failure reproduces.
    #[test]
    fn random_chunked_encodings_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a5c_3e5d);
        for round in 0..2_000 {
            let body: Vec<u8> = (0..rng.random_range(0..600))
                .map(|_| rng.random())
                .collect();
            let mut wire = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(200));
                let size = format!("{n:x}");
                let size = if rng.random_bool(0.3) {
                    size.to_uppercase()
                } else {
                    size
                };
                wire.extend_from_slice(size.as_bytes());
                if rng.random_bool(0.2) {
                    wire.extend_from_slice(b" ;ext=\"q\";x");
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n");
            let trailers = rng.random_bool(0.3);
            if trailers {
                wire.extend_from_slice(b"x-sum: 1\r\ngrpc-status: 0\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let step = rng.random_range(1..=wire.len());
            let (data, got_trailers, ended) =
                decode_in_steps(&wire, step).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(data, body, "round {round}, step {step}");
            assert!(ended, "round {round}");
            assert_eq!(
                got_trailers.len(),
                if trailers { 2 } else { 0 },
                "round {round}"
            );
        }
    }

    /// Mangled response heads and bodies (bytes flipped, inserted, cut) never panic the parser or
    /// the chunked decoder, and whatever they accept is consistent.
    #[test]
    fn mangled_responses_never_panic() {
        use rand::SeedableRng;
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 404 Not Found\r\nconnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        ];
        const AWKWARD: &[u8] = b"\r\n:;0 \t\x00\xff";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x051d_eca7);
        for round in 0..20_000 {
            let wire = super::mangled(seeds[round % seeds.len()], AWKWARD, &mut rng);
            let mut buf = BytesMut::from(&wire[..]);
            loop {
                match parse_head(&mut buf, round % 7 == 0) {
                    Ok(Some(Head::Interim)) => continue,
                    Ok(Some(Head::Final(parts, framing, _))) => {
                        if let BodyFraming::Length(n) = framing {
                            let declared = parts.headers.get(header::CONTENT_LENGTH);
                            assert_eq!(
                                declared.map(|v| v.to_str().unwrap().parse::<u64>().unwrap()),
                                Some(n)
                            );
                        }
                        if let BodyFraming::Chunked(mut dec) = framing {
                            while let Ok(Decoded::Data(_) | Decoded::Trailers(_)) =
                                dec.decode(&mut buf)
                            {}
                        }
                    }
                    Ok(None) | Err(_) => {}
                }
                break;
            }
        }
    }

    fn stream_body(chunks: &[&'static [u8]]) -> UpstreamBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        UpstreamBody::new(StreamBody::new(futures::stream::iter(frames)))
    }

    fn encoded_head(req: Request<UpstreamBody>) -> String {
        let (parts, body) = req.into_parts();
        let mut out = Vec::new();
        let _ = Writer::start(&parts, body, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let empty = || UpstreamBody::replay(ReplayBody::empty());
        let get = Request::get("http://10.0.0.1:8080/a?b=1")
            .header("host", "svc.local")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(empty())
            .unwrap();
        assert_eq!(
            encoded_head(get),
            "GET /a?b=1 HTTP/1.1\r\nhost: svc.local\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
        // An empty POST says so; a missing Host comes from the URI.
        let post = Request::post("http://10.0.0.1:8080").body(empty()).unwrap();
        assert_eq!(
            encoded_head(post),
            "POST / HTTP/1.1\r\nhost: 10.0.0.1:8080\r\ncontent-length: 0\r\n\r\n"
        );
        // A body of unknown length is chunked; the client's framing fields are not repeated.
        let put = Request::put("http://10.0.0.1:8080/x")
            .header("host", "h")
            .header("transfer-encoding", "chunked")
            .body(stream_body(&[b"ab"]))
            .unwrap();
        assert_eq!(
            encoded_head(put),
            "PUT /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    /// A one-connection raw upstream: hands the accepted socket to `script`.
    /// [`exchange`] of a whole request on a fresh connection.
    fn exchange_new(
        conn: Box<Conn>,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Failed>> {
        let (head, body) = req.into_parts();
        exchange(conn, &head, body, false)
    }

    async fn upstream<F, Fut>(script: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            script(s).await;
        });
        (addr, task)
    }

    async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.windows(end.len()).any(|w| w == end) {
            let n = s.read(&mut b).await.unwrap();
            assert!(
                n > 0,
                "eof before {:?}: {:?}",
                String::from_utf8_lossy(end),
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&b[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_streamed_request_body_goes_out_chunked() {
        let (addr, task) = upstream(|mut s| async move {
            let got = read_until(&mut s, b"0\r\n\r\n").await;
            assert_eq!(
                String::from_utf8(got).unwrap(),
                "POST /up HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
            );
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone").await.unwrap();
        })
        .await;
        let conn = Box::new(Conn::new(TcpStream::connect(addr).await.unwrap()));
        let req = Request::post(format!("http://{addr}/up"))
            .header("host", "h")
            .body(stream_body(&[b"abc", b"", b"0123456789abcdef"]))
            .unwrap();
        let resp = exchange_new(conn, req).await.unwrap();
        assert_eq!(resp.status(), 201);
        let mut body = resp.into_body();
        let data = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(&data[..], b"done");
        assert!(
            body.reusable().is_some(),
            "read to its end, request sent: reusable"
        );
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_large_response_grows_the_reads_and_the_idle_connection_gives_the_memory_back() {
        const LEN: usize = 1 << 20;
        let (addr, task) = upstream(|mut s| async move {
            read_until(&mut s, b"\r\n\r\n").await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&vec![b'z'; LEN]).await.unwrap();
            // Keep the connection open until the client is done.
            let _ = s.read(&mut [0u8; 1]).await;
        })
        .await;
        let conn = Box::new(Conn::new(TcpStream::connect(addr).await.unwrap()));
        let req = Request::get(format!("http://{addr}/big"))
            .header("host", "h")
            .body(UpstreamBody::replay(ReplayBody::empty()))
            .unwrap();
        let mut body = exchange_new(conn, req).await.unwrap().into_body();
        let (mut total, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            total += data.len();
            largest = largest.max(data.len());
        }
        assert_eq!(total, LEN);
        assert!(
            largest > FIRST_READ,
            "reads grew past {FIRST_READ}: largest chunk {largest}"
        );
        let mut conn = body.reusable().expect("read to the end: reusable");
        conn.idle();
        assert!(
            conn.buffered_capacity() <= 4 * FIRST_READ,
            "idle connection holds {} bytes",
            conn.buffered_capacity()
        );
        assert_eq!(conn.read_size, FIRST_READ);
        drop(conn);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_early_answer_is_delivered_and_ends_the_connection() {
        // The upstream refuses the upload after its head, without reading the body.
        let (addr, task) = upstream(|mut s| async move {
            read_until(&mut s, b"\r\n\r\n").await;
            s.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await;
        let conn = Box::new(Conn::new(TcpStream::connect(addr).await.unwrap()));
        // A body that never ends: the answer must not wait for it.
        let (_tx, req) = streamed_post(addr, "/up");
        let resp = tokio::time::timeout(Duration::from_secs(5), exchange_new(conn, req))
            .await
            .expect("answered without the body")
            .unwrap();
        assert_eq!(resp.status(), 413);
        let mut body = resp.into_body();
        assert_eq!(
            &(&mut body).collect().await.unwrap().to_bytes()[..],
            b"too big\n"
        );
        assert!(
            body.reusable().is_none(),
            "the request was not sent in full"
        );
        task.await.unwrap();
    }

    /// A POST whose body is whatever is sent on the returned channel, until it is dropped.
    fn streamed_post(
        addr: std::net::SocketAddr,
        path: &str,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        Request<UpstreamBody>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let req = Request::post(format!("http://{addr}{path}"))
            .header("host", "h")
            .body(UpstreamBody::new(StreamBody::new(frames)))
            .unwrap();
        (tx, req)
    }

    #[tokio::test]
    async fn request_and_response_bodies_stream_both_ways_at_once() {
        // An echo upstream: answers at once, then sends back each chunk as it arrives.
        let (addr, task) = upstream(|mut s| async move {
            read_until(&mut s, b"\r\n\r\n").await;
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            for expect in [&b"3\r\none\r\n"[..], b"3\r\ntwo\r\n"] {
                let got = read_until(&mut s, b"\r\n").await;
                let mut got = got;
                while got.len() < expect.len() {
                    got.extend(read_until(&mut s, b"\r\n").await);
                }
                assert_eq!(&got[..], expect);
                s.write_all(&got).await.unwrap();
            }
            read_until(&mut s, b"0\r\n\r\n").await;
            s.write_all(b"0\r\n\r\n").await.unwrap();
        })
        .await;
        let conn = Box::new(Conn::new(TcpStream::connect(addr).await.unwrap()));
        let (tx, req) = streamed_post(addr, "/echo");
        let resp = exchange_new(conn, req).await.unwrap();
        let mut body = resp.into_body();
        for word in ["one", "two"] {
            tx.send(Ok(Frame::data(Bytes::from_static(word.as_bytes()))))
                .await
                .unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("echoed while the request is still open")
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), word);
        }
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(body.reusable().is_some());
        task.await.unwrap();
    }

    /// A socket stand-in that records each write call: `send` (one buffer) or `writev`, and how
    /// many bytes it took; it takes at most `max` bytes a call, and, when `stalls`, is not
    /// writable every other call (a full send buffer).
    struct Recorder {
        calls: Vec<(&'static str, usize)>,
        wire: Vec<u8>,
        max: usize,
        stalls: bool,
        stalled: bool,
    }

    impl Recorder {
        fn new(max: usize, stalls: bool) -> Recorder {
            Recorder {
                calls: Vec::new(),
                wire: Vec::new(),
                max,
                stalls,
                stalled: false,
            }
        }

        fn stall(&mut self) -> bool {
            self.stalled = self.stalls && !self.stalled;
            self.stalled
        }
    }

    impl tokio::io::AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stall() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.wire.extend_from_slice(&buf[..n]);
            self.calls.push(("send", n));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.stall() {
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.wire.extend_from_slice(&b[..take]);
                n += take;
            }
            self.calls.push(("writev", n));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes `head` and then `body` framed as `framing` into `rec`; returns the largest number
    /// of unwritten bytes `out` held whenever the socket was not writable.
    fn write_all<B>(rec: &mut Recorder, head: &[u8], body: B, framing: Framing) -> usize
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut out = head.to_vec();
        let mut w = Writer::new(Some(body), framing);
        let mut cx = Context::from_waker(Waker::noop());
        let mut most = 0;
        for _ in 0..1_000_000 {
            most = most.max(out.len() - w.out_pos);
            match w.poll_write(rec, &mut out, &mut cx) {
                Poll::Ready(r) => {
                    r.unwrap();
                    return most;
                }
                Poll::Pending => assert!(rec.stalls, "a ready body and socket never wait"),
            }
        }
        panic!("the message was not written in a million polls");
    }

    #[test]
    fn a_small_body_goes_out_with_its_head_in_one_send() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n";
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 64]));
        let mut rec = Recorder::new(usize::MAX, false);
        write_all(&mut rec, head, body, Framing::Length(64));
        assert_eq!(rec.calls, [("send", head.len() + 64)]);
        assert_eq!(rec.wire, [&head[..], &[b'x'; 64]].concat());
    }

    #[test]
    fn a_large_body_is_not_copied_but_written_beside_the_head() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n";
        let data = vec![b'y'; 65536];
        let body = http_body_util::Full::new(Bytes::from(data.clone()));
        let mut rec = Recorder::new(usize::MAX, false);
        write_all(&mut rec, head, body, Framing::Length(65536));
        assert_eq!(rec.calls, [("writev", head.len() + 65536)]);
        assert_eq!(rec.wire, [&head[..], &data].concat());
    }

    #[test]
    fn small_chunks_are_framed_in_the_buffer_and_it_stays_bounded() {
        let head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        let words: Vec<Vec<u8>> = (0..200)
            .map(|i| vec![b'a' + (i % 26) as u8; 100 + i])
            .collect();
        let body = || {
            StreamBody::new(futures::stream::iter(words.iter().map(|w| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(w.clone())))
            })))
        };
        let mut want = head.to_vec();
        for w in &words {
            want.extend_from_slice(format!("{:x}\r\n", w.len()).as_bytes());
            want.extend_from_slice(w);
            want.extend_from_slice(b"\r\n");
        }
        want.extend_from_slice(b"0\r\n\r\n");
        // A socket that takes everything: each chunk, framed, goes out in one send.
        let mut rec = Recorder::new(usize::MAX, false);
        write_all(&mut rec, head, body(), Framing::Chunked);
        assert_eq!(rec.wire, want);
        assert!(
            rec.calls.iter().all(|(call, _)| *call == "send"),
            "{:?}",
            rec.calls
        );
        // A socket that takes 7 bytes a call and is writable every other call: the chunks
        // queue in `out` only up to the bound.
        let mut rec = Recorder::new(7, true);
        let most = write_all(&mut rec, head, body(), Framing::Chunked);
        assert_eq!(rec.wire, want);
        assert!(most <= COALESCE_MAX, "{most} bytes unwritten in out");
    }

    #[tokio::test]
    async fn reads_start_over_at_the_buffer_start_once_all_was_consumed() {
        let (addr, task) = upstream(|mut s| async move {
            for _ in 0..3 {
                s.write_all(&[b'm'; 100]).await.unwrap();
                // Wait for the go-ahead: one message per read.
                let mut go = [0u8; 1];
                s.read_exact(&mut go).await.unwrap();
            }
        })
        .await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let (mut buf, mut read_size) = (BytesMut::new(), FIRST_READ);
        let mut read = async |buf: &mut BytesMut, io: &mut TcpStream| {
            let n = std::future::poll_fn(|cx| poll_fill(io, buf, &mut read_size, cx))
                .await
                .unwrap();
            assert_eq!(n, 100);
            io.write_all(b"g").await.unwrap();
        };
        read(&mut buf, &mut io).await;
        let start = buf.as_ptr();
        // Consumed and dropped: the next read lands where the first did (those lines are warm).
        drop(buf.split_to(100).freeze());
        read(&mut buf, &mut io).await;
        assert_eq!(buf.as_ptr(), start, "the read went past the consumed bytes");
        // Consumed but still alive (a body frame on its way): the next read goes after it, in
        // the same allocation; neither is copied.
        let frame = buf.split_to(100).freeze();
        read(&mut buf, &mut io).await;
        assert_eq!(buf.as_ptr(), start.wrapping_add(100));
        assert_eq!((frame.as_ptr(), &frame[..]), (start, &[b'm'; 100][..]));
        task.await.unwrap();
    }
}
