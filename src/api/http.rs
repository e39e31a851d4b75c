//! The HTTP/1.1 layer under [`Client`](super::Client): hyper's connections over
//! rustls, kept open between requests in a list of idle ones, and nothing else.
//!
//! A run sends hundreds of requests a second, and each was spending as much CPU in the
//! general-purpose client around hyper (re-parsing the address, merging default
//! headers, boxing the body, a task spawned per request to hand its connection back)
//! as in hyper and the socket together. This layer keeps what the API client needs and
//! no more: connections kept alive across the run (one taken per request, given back
//! once its answer is read to the end), TLS with the Mozilla roots, no redirects
//! followed, and the failure told apart the way the sending stage must know it: a
//! connection never made (nothing reached the server) from one lost after the request
//! may have left.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service as _;

use super::error::Error;

/// Sent with every request. The public client sends a JSON content type on every call;
/// so do we, so the API sees the request shapes it already knows.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const AGENT: HeaderValue =
    HeaderValue::from_static(concat!("bbinvite/", env!("CARGO_PKG_VERSION")));

/// An idle connection older than this is closed rather than used: servers close theirs
/// after a while, and one closed as a request leaves on it fails that request.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// Connections kept open between requests, and how they are made.
pub(crate) struct Http {
    connector: HttpsConnector<Route>,
    idle: Arc<Idle>,
}

/// The connections waiting for a request, the latest back first.
struct Idle {
    connections: Mutex<Vec<Kept>>,
    /// How many are kept at most; one more coming back is closed.
    most: usize,
}

/// A connection with no request on it, and where it goes.
struct Kept {
    to: Destination,
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// What a connection is to: scheme and authority.
#[derive(Clone, PartialEq, Eq)]
struct Destination {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
}

impl Destination {
    fn of(uri: &Uri) -> Destination {
        Destination {
            scheme: uri.scheme().cloned(),
            authority: uri.authority().cloned(),
        }
    }
}

impl Idle {
    /// The latest connection to `to` still open and not idle too long; the ones past
    /// that are closed on the way.
    fn take(&self, to: &Destination) -> Option<SendRequest<Full<Bytes>>> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(at) = connections.iter().rposition(|k| k.to == *to) {
            let kept = connections.remove(at);
            if !kept.sender.is_closed() && kept.since.elapsed() < IDLE_FOR {
                return Some(kept.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `to`, unless as many are kept already.
    fn put(&self, to: Destination, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if connections.len() < self.most {
            connections.push(Kept {
                to,
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// What came back: the status and headers, and the body still to read. Once the body
/// is read to its end, its connection serves the next request.
pub(crate) struct Answer {
    response: Response<Incoming>,
    /// The connection it came on, where it goes, and the list it goes back to.
    to: Destination,
    sender: SendRequest<Full<Bytes>>,
    idle: Arc<Idle>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Answer {
    pub(crate) fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The length the answer's head announces (its `Content-Length`), if any.
    pub(super) fn announced_length(&self) -> Option<u64> {
        self.response.body().size_hint().exact()
    }

    /// Reads the body up to `cap` bytes: the bytes, and whether more followed (then
    /// left unread, and the connection closed). A connection lost on the way is
    /// [`Error::Transport`].
    pub(super) async fn read_capped(self, cap: usize) -> Result<(Vec<u8>, bool), Error> {
        let mut body = self.response.into_body();
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
        self.idle.put(self.to, self.sender);
        Ok((bytes, false))
    }
}

impl Http {
    /// Keeps up to `idle` connections open between requests, and gives up on a
    /// connection not made within `connect_timeout`; through the proxy the environment
    /// names, if any.
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
        let connector = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::Connect(format!("cannot set up TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(Route {
                direct: tcp,
                proxies: Arc::new(proxies),
            });
        let idle = Arc::new(Idle {
            connections: Mutex::new(Vec::new()),
            most: idle.max(1),
        });
        Ok(Http { connector, idle })
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

    /// Sends `req` on an idle connection (or a new one) and waits for the answer's
    /// head. A request an idle connection could not take (closed as it was picked) goes
    /// on another; one that may have left is never sent twice. A redirect is an answer
    /// like any other: no call of this API is answered with one, and following it would
    /// send an invitation again, elsewhere.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer, Error> {
        let uri = req.uri().clone();
        let to = Destination::of(&uri);
        let mut req = on_the_wire(req)?;
        loop {
            let (mut sender, kept) = match self.idle.take(&to) {
                Some(sender) => (sender, true),
                None => (self.connect(&uri).await?, false),
            };
            if sender.ready().await.is_err() {
                if kept {
                    continue;
                }
                return Err(Error::Connect("the connection closed before use".into()));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Answer {
                        response,
                        to,
                        sender,
                        idle: self.idle.clone(),
                    });
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: nothing of it left, so it may go on another.
                    Some(back) if kept => req = back,
                    Some(_) => return Err(Error::Connect(causes(failed.error()))),
                    None => return Err(Error::Transport(causes(failed.error()))),
                },
            }
        }
    }

    /// A new connection to `uri`'s host, ready for a request. Any failure is a
    /// connection never made.
    async fn connect(&self, uri: &Uri) -> Result<SendRequest<Full<Bytes>>, Error> {
        let mut connector = self.connector.clone();
        let stream = connector
            .call(uri.clone())
            .await
            .map_err(|e| Error::Connect(causes(e.as_ref())))?;
        let (sender, connection) = http1::handshake(stream)
            .await
            .map_err(|e| Error::Connect(causes(&e)))?;
        // Runs the connection until its last request is answered and it is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// `req` as it goes on the wire: its target path and query alone, and its host (and
/// port, unless the scheme's own) in a `Host` header.
fn on_the_wire(mut req: Request<Full<Bytes>>) -> Result<Request<Full<Bytes>>, Error> {
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return Err(Error::Connect("the address has no host".into()));
    };
    let host = match authority.port_u16() {
        // What follows the credentials, if the address carries any.
        Some(port) if Some(port) != default_port(uri) => {
            let text = authority.as_str();
            text.rsplit('@').next().unwrap_or(text)
        }
        _ => authority.host(),
    };
    let host =
        HeaderValue::from_str(host).map_err(|_| Error::Connect("the host is not valid".into()))?;
    let target = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    req.headers_mut().insert(HOST, host);
    *req.uri_mut() = Uri::from(target);
    Ok(req)
}

/// The port a scheme uses when the address names none.
fn default_port(uri: &Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
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

/// The chain of causes under `e`, which is what a person can act on ("tcp connect
/// error: Connection refused"); hyper's own error only names a kind.
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `200 OK` with a body of `body` bytes.
    fn ok_with(body: usize) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {body}\r\n\r\n{}",
            "x".repeat(body)
        )
    }

    /// A loopback server that answers every request it reads with `answer`, keeping the
    /// connection open for the next one unless `hang_up`. Gives its address, the heads
    /// it read, and how many connections it took.
    fn server(
        answer: String,
        hang_up: bool,
    ) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", socket.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (heads.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, answer) = (seen.clone(), answer.clone());
                std::thread::spawn(move || {
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if stream.read(&mut byte).unwrap_or(0) != 1 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        if stream.write_all(answer.as_bytes()).is_err() || hang_up {
                            return;
                        }
                    }
                });
            }
        });
        (address, heads, accepted)
    }

    /// `GET address/path`, its body read up to `cap` bytes: whether it was cut.
    async fn fetch(http: &Http, address: &str, cap: usize) -> bool {
        let answer = http
            .send(get(&format!("{address}/customer?limit=1")))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.read_capped(cap).await.unwrap().1
    }

    #[test]
    fn on_the_wire_a_request_names_its_path_and_its_host_never_the_credentials() {
        let wire = |uri: &str| {
            let req = on_the_wire(get(uri)).unwrap();
            let host = req.headers()[HOST].to_str().unwrap().to_string();
            (req.uri().to_string(), host)
        };
        let cases = [
            (
                "https://ops:pw@api.example:443/customer?x=1",
                "/customer?x=1",
                "api.example",
            ),
            (
                "https://ops:pw@api.example:8443/customer",
                "/customer",
                "api.example:8443",
            ),
            ("http://127.0.0.1:8080/a/b", "/a/b", "127.0.0.1:8080"),
            ("https://[::1]:8443", "/", "[::1]:8443"),
            ("https://api.example", "/", "api.example"),
        ];
        for (uri, target, host) in cases {
            assert_eq!(wire(uri), (target.to_string(), host.to_string()), "{uri}");
        }
    }

    #[tokio::test]
    async fn a_connection_whose_answer_is_read_serves_the_next_request() {
        let (address, heads, accepted) = server(ok_with(2), false);
        let http = http(Matcher::builder().build());
        for _ in 0..5 {
            assert!(!fetch(&http, &address, 1024).await);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // On the wire: the path and query alone, the host in its own header.
        let heads = heads.lock().unwrap();
        let port = address.rsplit(':').next().unwrap();
        assert!(
            heads[0].starts_with("GET /customer?limit=1 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{heads:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_left_unread_closes_its_connection() {
        let (address, _, accepted) = server(ok_with(64), false);
        let http = http(Matcher::builder().build());
        assert!(fetch(&http, &address, 8).await);
        assert!(fetch(&http, &address, 8).await);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
        let (address, _, accepted) = server(ok_with(2), true);
        let http = http(Matcher::builder().build());
        for _ in 0..3 {
            assert!(!fetch(&http, &address, 1024).await);
            // Time for the hang-up to reach this side.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_more_connections_are_kept_than_asked() {
        let (address, _, accepted) = server(ok_with(2), false);
        let http =
            Http::with_proxies(2, Duration::from_secs(5), Matcher::builder().build()).unwrap();
        let answers: Vec<Answer> = futures::future::try_join_all(
            (0..4).map(|_| http.send(get(&format!("{address}/customer")))),
        )
        .await
        .unwrap();
        for answer in answers {
            answer.read_capped(1024).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(http.idle.connections.lock().unwrap().len(), 2);
    }

    fn http(proxies: Matcher) -> Http {
        Http::with_proxies(1, Duration::from_secs(5), proxies).unwrap()
    }

    fn get(uri: &str) -> Request<Full<Bytes>> {
        Http::request(Method::GET, uri.parse().unwrap(), None, None)
    }

    #[tokio::test]
    async fn an_https_address_is_reached_through_the_proxys_tunnel_with_its_credentials() {
        let (proxy, heads, _) = server("HTTP/1.1 200 Connection established\r\n\r\n".into(), true);
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
        let (proxy, heads, _) = server("HTTP/1.1 200 Connection established\r\n\r\n".into(), true);
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
        let (proxy, proxy_heads, _) = server("HTTP/1.1 502 Bad Gateway\r\n\r\n".into(), true);
        let (address, heads, _) = server(
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
            true,
        );
        let http = http(Matcher::builder().all(proxy).build());
        let answer = http
            .send(get(&format!("{address}/customer")))
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
        assert!(proxy_heads.lock().unwrap().is_empty());
        assert!(heads.lock().unwrap()[0].starts_with("GET /customer HTTP/1.1\r\n"));
    }
}
