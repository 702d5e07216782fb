//! The HTTP/1.1 upstream pool (`proxy::pool::Http1Pool`) against real upstream sockets:
//! connection reuse, return only once a response body has ended, no reuse of a connection whose
//! body was abandoned, the idle timeout, upstreams that close idle connections, connect errors,
//! the request as written on the wire (origin form, Host kept), and which requests go out again
//! when a reused connection turns out closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use taskmesh_agent::cluster::replay::ReplayBody;
use taskmesh_agent::proxy::pool::{Http1Pool, UpstreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections a backend accepted, and how many of them have ended.
#[derive(Default)]
struct Conns {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl Conns {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A hyper HTTP/1.1 backend: `/slow` streams "a", waits 300 ms, then "b"; anything else answers
/// "ok" at once.
async fn backend() -> (SocketAddr, Arc<Conns>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    type Chunk = Result<Frame<Bytes>, Infallible>;
                    let body = if req.uri().path() == "/slow" {
                        let chunks = futures::stream::unfold(0u8, |i| async move {
                            let chunk: Chunk = match i {
                                0 => Ok(Frame::data(Bytes::from_static(b"a"))),
                                1 => {
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                    Ok(Frame::data(Bytes::from_static(b"b")))
                                }
                                _ => return None,
                            };
                            Some((chunk, i + 1))
                        });
                        Either::Left(StreamBody::new(chunks))
                    } else {
                        Either::Right(http_body_util::Full::new(Bytes::from_static(b"ok")))
                    };
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, conns)
}

fn get(addr: SocketAddr, path: &str) -> Request<UpstreamBody> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", "svc.example.local:8080")
        .body(UpstreamBody::replay(ReplayBody::empty()))
        .unwrap()
}

async fn body_of(resp: Response<taskmesh_agent::proxy::pool::UpstreamResponseBody>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, conns) = backend().await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    for _ in 0..20 {
        let resp = pool.send(get(addr, "/")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(resp).await, "ok");
    }
    assert_eq!(conns.accepted(), 1);
    let s = pool.stats();
    assert_eq!((s.opened, s.reused, s.idle), (1, 19, 1));
}

#[tokio::test]
async fn a_connection_is_reused_only_after_its_response_body_ended() {
    let (addr, conns) = backend().await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    let slow = pool.send(get(addr, "/slow")).await.unwrap();
    assert_eq!(slow.status(), 200);
    // The slow body is still streaming: its connection is busy, so this takes a second one.
    let fast = pool.send(get(addr, "/")).await.unwrap();
    assert_eq!(body_of(fast).await, "ok");
    assert_eq!(conns.accepted(), 2);
    assert_eq!(body_of(slow).await, "ab");
    // Both are idle now and both still open: two requests at once use them and open nothing.
    let (a, b) = tokio::join!(pool.send(get(addr, "/")), pool.send(get(addr, "/")));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(body_of(a).await, "ok");
    assert_eq!(body_of(b).await, "ok");
    for _ in 0..5 {
        assert_eq!(
            body_of(pool.send(get(addr, "/")).await.unwrap()).await,
            "ok"
        );
    }
    assert_eq!(conns.accepted(), 2);
    assert_eq!(conns.closed(), 0);
    assert_eq!(pool.stats().opened, 2);
}

#[tokio::test]
async fn a_connection_goes_back_with_the_last_frame_of_its_body() {
    let (addr, conns) = backend().await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    let mut body = pool.send(get(addr, "/")).await.unwrap().into_body();
    let last = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(last, "ok");
    // Not polled to its end yet (a proxy is still writing that frame to its client), and the
    // connection is already idle: the next request reuses it.
    assert_eq!(pool.stats().idle, 1);
    assert_eq!(
        body_of(pool.send(get(addr, "/")).await.unwrap()).await,
        "ok"
    );
    assert!(body.frame().await.is_none());
    assert_eq!(conns.accepted(), 1);
    let s = pool.stats();
    assert_eq!((s.opened, s.reused, s.idle), (1, 1, 1));
    // A streamed body's connection stays busy until its last frame.
    let mut slow = pool.send(get(addr, "/slow")).await.unwrap().into_body();
    assert_eq!(
        slow.frame().await.unwrap().unwrap().into_data().unwrap(),
        "a"
    );
    assert_eq!(pool.stats().idle, 0);
    assert_eq!(
        slow.frame().await.unwrap().unwrap().into_data().unwrap(),
        "b"
    );
    // hyper ends a streamed body with the zero chunk after "b": read with it or in a poll
    // of its own.
    if pool.stats().idle == 0 {
        assert!(slow.frame().await.is_none());
    }
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test]
async fn an_abandoned_body_takes_its_connection_with_it() {
    let (addr, conns) = backend().await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    let slow = pool.send(get(addr, "/slow")).await.unwrap();
    drop(slow);
    // The half-read connection is not handed out again: the next request gets a new one,
    // and the abandoned one is closed.
    assert_eq!(
        body_of(pool.send(get(addr, "/")).await.unwrap()).await,
        "ok"
    );
    assert_eq!(conns.accepted(), 2);
    eventually("the abandoned connection closed", || conns.closed() == 1).await;
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let (addr, conns) = backend().await;
    let pool = Http1Pool::new(Duration::from_millis(300));
    assert_eq!(
        body_of(pool.send(get(addr, "/")).await.unwrap()).await,
        "ok"
    );
    assert_eq!(pool.stats().idle, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conns.closed(), 0, "closed before the idle timeout");
    eventually("the idle connection closed", || conns.closed() == 1).await;
    assert_eq!(pool.stats().idle, 0);
    // And a later request connects again.
    assert_eq!(
        body_of(pool.send(get(addr, "/")).await.unwrap()).await,
        "ok"
    );
    assert_eq!(conns.accepted(), 2);
}

type Seen = tokio::sync::mpsc::UnboundedReceiver<String>;

/// A raw upstream: counts the connections it accepts and runs `serve` on each (in a task of
/// its own), with a channel to report what it saw; a connection counts as closed when `serve`
/// has returned (and dropped it).
async fn raw_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<Conns>, Seen)
where
    F: Fn(TcpStream, tokio::sync::mpsc::UnboundedSender<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let served = serve(s, seen_tx.clone());
            let c = c.clone();
            tokio::spawn(async move {
                served.await;
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, conns, seen)
}

/// Reads one request head; `None` when the connection ends first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A raw upstream answering one request per connection with `answer`, then closing it after
/// `linger`. Sends each request line and Host it got on the returned channel.
async fn raw_backend(answer: &'static [u8], linger: Duration) -> (SocketAddr, Arc<Conns>, Seen) {
    raw_upstream(move |mut s, seen| async move {
        let head = read_head(&mut s).await.expect("request cut short");
        let line = head.lines().next().unwrap_or("");
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap_or("");
        let _ = seen.send(format!("{line} | {host}"));
        s.write_all(answer).await.unwrap();
        tokio::time::sleep(linger).await;
    })
    .await
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    // No `Connection: close`: as a server whose keep-alive timeout is shorter than ours.
    let (addr, conns, mut seen) = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Duration::from_millis(20),
    )
    .await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    for i in 1..=3 {
        let resp = pool.send(get(addr, "/items?page=2")).await.unwrap();
        assert_eq!(body_of(resp).await, "ok");
        eventually("the upstream closed", || conns.closed() == i).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.accepted(), 3);
    assert_eq!(pool.stats().reused, 0);
    // Origin form on the wire, the client's Host kept.
    for _ in 0..3 {
        assert_eq!(
            seen.recv().await.unwrap(),
            "GET /items?page=2 HTTP/1.1 | svc.example.local:8080"
        );
    }
}

#[tokio::test]
async fn back_to_back_requests_after_connection_close_each_get_a_connection() {
    let (addr, conns, _seen) = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    // No pause between requests: the connection the upstream is closing may still be in the
    // pool when the next request is made, and must not be used for it.
    for _ in 0..10 {
        let resp = pool.send(get(addr, "/")).await.unwrap();
        assert_eq!(body_of(resp).await, "ok");
    }
    assert_eq!(conns.accepted(), 10);
    let s = pool.stats();
    assert_eq!((s.opened, s.reused), (10, 0));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let pool = Http1Pool::new(Duration::from_secs(60));
    let err = pool.send(get(addr, "/")).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(pool.stats().opened, 0);
}

/// A raw upstream that answers the first request on each connection and closes the connection
/// when the second one arrives, without answering: a keep-alive close racing a request. Sends
/// each request line it read on the returned channel.
async fn closes_on_second_request() -> (SocketAddr, Arc<Conns>, Seen) {
    raw_upstream(|mut s, seen| async move {
        for answer in [true, false] {
            let Some(head) = read_head(&mut s).await else {
                return;
            };
            let _ = seen.send(head.lines().next().unwrap_or("").to_string());
            if answer {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
        }
    })
    .await
}

fn with_method(
    method: http::Method,
    addr: SocketAddr,
    body: &'static [u8],
) -> Request<UpstreamBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}/r"))
        .header("host", "svc.example.local")
        .body(UpstreamBody::new(http_body_util::Full::new(
            Bytes::from_static(body),
        )))
        .unwrap()
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_closed_under_it_goes_out_again() {
    let (addr, conns, mut seen) = closes_on_second_request().await;
    let pool = Http1Pool::new(Duration::from_secs(60));
    assert_eq!(
        body_of(pool.send(get(addr, "/one")).await.unwrap()).await,
        "ok"
    );
    // The reused connection is closed as this request arrives: it is sent again on a new one.
    assert_eq!(
        body_of(pool.send(get(addr, "/two")).await.unwrap()).await,
        "ok"
    );
    assert_eq!(conns.accepted(), 2);
    let mut lines = Vec::new();
    while let Ok(l) = seen.try_recv() {
        lines.push(l);
    }
    assert_eq!(
        lines,
        [
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "GET /two HTTP/1.1"
        ]
    );
    // So is a DELETE...
    let resp = pool
        .send(with_method(http::Method::DELETE, addr, b""))
        .await
        .unwrap();
    assert_eq!(body_of(resp).await, "ok");
    assert_eq!(conns.accepted(), 3);
    // ...but not a POST the upstream may have acted on...
    let err = pool
        .send(with_method(http::Method::POST, addr, b""))
        .await
        .unwrap_err();
    assert!(!err.is_connect(), "{err}");
    assert!(
        err.to_string()
            .contains("closed the connection before responding"),
        "{err}"
    );
    assert_eq!(conns.accepted(), 3);
    // ...nor a request whose body was already taken from the client (it went out with the head).
    assert_eq!(
        body_of(pool.send(get(addr, "/three")).await.unwrap()).await,
        "ok"
    );
    assert_eq!(conns.accepted(), 4);
    let err = pool
        .send(with_method(http::Method::PUT, addr, b"v=1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("before responding"), "{err}");
    assert_eq!(conns.accepted(), 4);
    assert_eq!(pool.stats().opened, 4);
}
