//! The HTTP/1.1 layer under [`Client`](super::Client): hyper's connection pool over
//! rustls, and nothing else.
//!
//! A run sends hundreds of requests a second, and each was spending as much CPU in the
//! general-purpose client wrapped around this pool (re-parsing the address, merging
//! default headers, boxing the body) as in the pool and the socket together. This
//! layer keeps what the API client needs and no more: one pool kept alive across the
//! run, TLS with the Mozilla roots, no redirects followed, and the failure told apart
//! the way the sending stage must know it: a connection never made (nothing reached
//! the server) from one lost after the request may have left.
//!
//! Behind a proxy, as curl and most HTTP clients do: `HTTPS_PROXY` (or `ALL_PROXY`)
//! names it, `NO_PROXY` the hosts that bypass it, and an https address is reached
//! through a `CONNECT` tunnel, TLS end to end. Plain http goes only to this machine,
//! and never through a proxy.
//!
//! The run's webhook (`report::notify`) sends through it too, so the binary has one
//! HTTP stack; for both, [`parse_address`] and [`is_loopback`] hold the rules an
//! address must meet before anything is sent to it.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::error::Error;

/// Sent with every request. The public client sends a JSON content type on every call;
/// so do we, so the API sees the request shapes it already knows.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const AGENT: HeaderValue =
    HeaderValue::from_static(concat!("bbinvite/", env!("CARGO_PKG_VERSION")));

/// Connections kept open between requests, and how they are made.
pub(crate) struct Http {
    pool: Pool<HttpsConnector<Route>, Full<Bytes>>,
}

/// What came back: the status and headers, and the body still to read.
pub(crate) type Answer = Response<Incoming>;

impl Http {
    /// A pool that keeps up to `idle` connections per host open between requests, and
    /// gives up on a connection not made within `connect_timeout`; through the proxy
    /// the environment names, if any.
    pub(crate) fn new(idle: usize, connect_timeout: Duration) -> Result<Http, Error> {
        Http::with_proxies(idle, connect_timeout, Matcher::from_env())
    }

    /// [`Http::new`], with the proxies `proxies` names.
    fn with_proxies(
        idle: usize,
        connect_timeout: Duration,
        proxies: Matcher,
    ) -> Result<Http, Error> {
        let mut tcp = HttpConnector::new();
        // `https://` is for the TLS layer above to handle; plain http only reaches here
        // for a loopback address, which the settings have already checked.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let tls = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::Connect(format!("cannot set up TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(Route {
                direct: tcp,
                proxies: Arc::new(proxies),
            });
        let pool = Pool::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle)
            .pool_timer(TokioTimer::new())
            .build(tls);
        Ok(Http { pool })
    }

    /// A request to `uri` with the headers every call carries and `body` (JSON) if any.
    pub(crate) fn request(
        method: Method,
        uri: Uri,
        authorization: Option<HeaderValue>,
        body: Option<Vec<u8>>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(ACCEPT, JSON);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(USER_AGENT, AGENT);
        if let Some(value) = authorization {
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        req
    }

    /// Sends `req` on a pooled connection (or a new one) and waits for the answer's
    /// head. A redirect is an answer like any other: no call of this API is answered
    /// with one, and following it would send an invitation again, elsewhere.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer, Error> {
        self.pool.request(req).await.map_err(|e| {
            let message = causes(&e);
            if e.is_connect() {
                Error::Connect(message)
            } else {
                Error::Transport(message)
            }
        })
    }
}

/// How a connection is made: straight to the host, or, for an https address the
/// proxy settings intercept, through a `CONNECT` tunnel opened by the proxy (TLS then
/// runs through it to the host). Any failure here is a connection never made.
#[derive(Clone)]
struct Route {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<TcpStream>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl tower::Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A TCP connector is always ready; each call below works on its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let proxy = match dst.scheme_str() {
            Some("https") => self.proxies.intercept(&dst),
            _ => None,
        };
        match proxy {
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { Ok(tunnel.call(dst).await?) })
            }
            None => {
                let mut direct = self.direct.clone();
                Box::pin(async move { Ok(direct.call(dst).await?) })
            }
        }
    }
}

/// The length an answer's head announces (its `Content-Length`), if any.
pub(super) fn announced_length(answer: &Answer) -> Option<u64> {
    answer.body().size_hint().exact()
}

/// Reads `body` up to `cap` bytes: the bytes, and whether more followed (then left
/// unread). A connection lost on the way is [`Error::Transport`].
pub(super) async fn read_capped(mut body: Incoming, cap: usize) -> Result<(Vec<u8>, bool), Error> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Transport(causes(&e)))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let room = cap - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            return Ok((bytes, true));
        }
    }
    Ok((bytes, false))
}

/// The chain of causes under `e`, which is what a person can act on ("tcp connect
/// error: Connection refused"); the pool's own wrapper only names a kind.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = e.source().or(Some(e));
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.join(": ")
}

/// `text` as an absolute address (scheme and authority), or why not, in words that do
/// not repeat it. Stricter than the http crate alone, which reads `https://host:abc`
/// and `https://ops:a/b@host` as addresses and would connect to port 443 of `host`
/// and of `ops`: a port must be a number that fits, an IPv6 host a real address.
/// Which schemes, hosts and credentials are acceptable is for the caller to say.
pub(crate) fn parse_address(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
    let (Some(_), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err("no scheme and host: it must begin with https://".into());
    };
    let after_userinfo = authority.as_str().rsplit('@').next().unwrap_or_default();
    let host = authority.host();
    // After the host: nothing, or a colon and the port (none there: the scheme's).
    let port = after_userinfo.strip_prefix(host).unwrap_or_default();
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            digits.is_empty()
                || (digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u16>().is_ok())
        }
    };
    if !port_ok {
        return Err("invalid port number".into());
    }
    if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && ip.parse::<Ipv6Addr>().is_err()
    {
        return Err("invalid IPv6 address".into());
    }
    Ok(uri)
}

/// Why an address is not one to send to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unsafe {
    /// Neither https nor http: the scheme, lowercased.
    Scheme(String),
    NoHost,
    /// Plain http to another machine: anything on the way could read it.
    PlainHttp,
}

/// Whether `uri` may be sent to: https anywhere, plain http only to this machine, and
/// a host either way. The scheme is read in any case.
pub(crate) fn check_destination(uri: &Uri) -> Result<(), Unsafe> {
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(Unsafe::Scheme(scheme));
    }
    let host = uri.host().unwrap_or_default();
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .is_empty()
    {
        return Err(Unsafe::NoHost);
    }
    if scheme == "http" && !is_loopback(host) {
        return Err(Unsafe::PlainHttp);
    }
    Ok(())
}

/// Whether `host` (as [`Uri::host`] gives it: an IPv6 address in brackets) is this
/// machine, the only place plain http may go: nothing on the way can read it.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    /// A loopback listener that keeps the head of each request it reads and answers
    /// it with `answer`, then hangs up.
    fn listener(answer: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", socket.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (address, heads)
    }

    fn http(proxies: Matcher) -> Http {
        Http::with_proxies(1, Duration::from_secs(5), proxies).unwrap()
    }

    fn get(uri: &str) -> Request<Full<Bytes>> {
        Http::request(Method::GET, uri.parse().unwrap(), None, None)
    }

    #[tokio::test]
    async fn an_https_address_is_reached_through_the_proxys_tunnel_with_its_credentials() {
        let (proxy, heads) = listener("HTTP/1.1 200 Connection established\r\n\r\n");
        let proxy = proxy.replace("http://", "http://ops:pw@");
        let http = http(Matcher::builder().https(proxy).build());
        // The proxy hangs up after the tunnel opens, so the TLS handshake fails: a
        // connection never made, and nothing of the request left.
        let sent = http.send(get("https://api.example.invalid/customer")).await;
        assert!(matches!(sent, Err(Error::Connect(_))), "{sent:?}");
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("CONNECT api.example.invalid:443 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        // Basic base64("ops:pw"), to the proxy and not to the API.
        assert!(heads[0].contains("Basic b3BzOnB3"), "{heads:?}");
    }

    #[tokio::test]
    async fn a_host_no_proxy_names_is_reached_directly() {
        let (proxy, heads) = listener("HTTP/1.1 200 Connection established\r\n\r\n");
        let http = http(
            Matcher::builder()
                .https(proxy)
                .no("api.example.invalid")
                .build(),
        );
        let sent = http.send(get("https://api.example.invalid/customer")).await;
        // Straight to a host that does not resolve.
        assert!(matches!(sent, Err(Error::Connect(_))), "{sent:?}");
        assert!(heads.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn plain_http_to_this_machine_never_goes_through_a_proxy() {
        let (proxy, proxy_heads) = listener("HTTP/1.1 502 Bad Gateway\r\n\r\n");
        let (server, heads) = listener("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let http = http(Matcher::builder().all(proxy).build());
        let answer = http.send(get(&format!("{server}/customer"))).await.unwrap();
        assert_eq!(answer.status(), 204);
        assert!(proxy_heads.lock().unwrap().is_empty());
        assert!(heads.lock().unwrap()[0].starts_with("GET /customer HTTP/1.1\r\n"));
    }
}
