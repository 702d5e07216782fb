//! The example application's two small HTTP services, as the demo runs them (tokio tasks on
//! real loopback sockets): the colorteller answers its color; the colorgateway answers with
//! the color it gets from `colorteller.colorapp.local`, asked through its own agent's egress
//! listener in explicit mode (a plain HTTP request to the agent, routed by `Host`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How long the gateway waits for the colorteller (through its agent).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain HTTP/1.1 client with keep-alive, as both the gateway and the demo's load use.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A new [`HttpClient`].
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves HTTP/1.1 on `listener` with `handle` until the task is aborted.
fn serve<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        // Connections live in this set: aborting the server drops it, which ends them too.
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                Some(_) = connections.join_next() => continue,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The colorteller: `GET /ping` answers `pong`, anything else its `color`.
pub fn colorteller(listener: TcpListener, color: String) -> JoinHandle<()> {
    let color = Bytes::from(color);
    serve(listener, move |req| {
        let body = if req.uri().path() == "/ping" {
            Bytes::from_static(b"pong")
        } else {
            color.clone()
        };
        async move { text(StatusCode::OK, body) }
    })
}

/// The colorgateway: each request asks `backend` (the colorteller's virtual service) for a
/// color through the agent's egress listener at `egress`, and answers with that color; `502`
/// with the reason when the colorteller could not be reached.
pub fn colorgateway(listener: TcpListener, egress: SocketAddr, backend: String) -> JoinHandle<()> {
    let client = http_client();
    let backend = Arc::new(backend);
    serve(listener, move |_req| {
        let (client, backend) = (client.clone(), backend.clone());
        async move {
            match ask(&client, egress, &backend).await {
                Ok((StatusCode::OK, color)) => text(StatusCode::OK, color),
                Ok((status, body)) => text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{backend} answered {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ),
                ),
                Err(why) => text(StatusCode::BAD_GATEWAY, format!("{backend}: {why}")),
            }
        }
    })
}

/// `GET /` with `Host: backend`, sent to `egress`.
async fn ask(
    client: &HttpClient,
    egress: SocketAddr,
    backend: &str,
) -> Result<(StatusCode, Bytes), String> {
    let request = Request::get(format!("http://{egress}{}", super::layout::REQUEST_PATH))
        .header(header::HOST, backend)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    get(client, request).await
}

/// Sends `request` and reads the whole answer, within [`UPSTREAM_TIMEOUT`].
pub async fn get(
    client: &HttpClient,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {UPSTREAM_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    #[tokio::test]
    async fn the_teller_answers_its_color_and_the_gateway_relays_it() {
        let (tl, teller_addr) = bound().await;
        let teller = colorteller(tl, "blue".into());
        // Without an agent in between, the teller itself plays the egress listener.
        let (gl, gateway_addr) = bound().await;
        let gateway = colorgateway(gl, teller_addr, "colorteller.colorapp.local".into());
        let client = http_client();
        let req = |addr: SocketAddr, path: &str| {
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .expect("request")
        };
        let (s, b) = get(&client, req(teller_addr, "/ping")).await.expect("ping");
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"pong"[..]));
        let (s, b) = get(&client, req(gateway_addr, "/")).await.expect("gateway");
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"blue"[..]));
        teller.abort();
        let _ = teller.await;
        let (s, b) = get(&client, req(gateway_addr, "/")).await.expect("gateway");
        assert_eq!(
            s,
            StatusCode::BAD_GATEWAY,
            "{}",
            String::from_utf8_lossy(&b)
        );
        gateway.abort();
    }
}
