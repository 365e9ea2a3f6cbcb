//! Property tests: the lane's own readings against hyper's and the general path's, on
//! arbitrary input, in the normal suite (a fixed seed and a bounded number of cases).
//!
//! - [`ChunkedScan`], fed valid and broken chunked bodies in arbitrary pieces, must accept
//!   exactly what hyper's client accepts and end each body where hyper ends it.
//! - `rewrite_response_head` (the lane) and [`headers::apply_to_response`] (the general
//!   path) must make the same headers of the same response head.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chunked::ChunkedScan;
use crate::headers;
use crate::lane::{Parsed, PlainGet, rewrite_response_head};
use crate::values::LocationRewrite;
use crate::{ClientInfo, ProxySettings, Route, RouteKey, RouteTable, Scheme};

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, rng_seed: RngSeed::Fixed(0x1ab0b), ..Config::default() }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime");
}

/// The body hyper's HTTP/1.1 client reads from a chunked response whose body is `body`
/// followed by the end of the connection; `None` when it refuses it.
fn hyper_reads(body: &[u8]) -> Option<Bytes> {
    let body = body.to_vec();
    RUNTIME.with(|rt| {
        rt.block_on(async move {
            let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match server_io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = server_io.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let _ = server_io.write_all(&body).await;
            });
            let read = async {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await.ok()?;
                tokio::spawn(conn);
                let req =
                    http::Request::get("/").header("host", "h").body(http_body_util::Empty::<Bytes>::new()).ok()?;
                let resp = sender.send_request(req).await.ok()?;
                Some(resp.into_body().collect().await.ok()?.to_bytes())
            };
            tokio::time::timeout(Duration::from_secs(10), read).await.expect("hyper never finished reading")
        })
    })
}

/// What the scan makes of `body` fed in the pieces `cuts` make: where it ended, or `None`
/// when it refused it or it never ended.
fn scan_reads(body: &[u8], cuts: &[Index]) -> Option<usize> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    at.push(body.len());
    at.sort_unstable();
    let mut scan = ChunkedScan::new();
    let (mut from, mut taken) = (0, 0);
    for to in at {
        let n = scan.feed(&body[from..to]).ok()?;
        taken += n;
        if n < to - from {
            break;
        }
        from = to;
    }
    scan.is_done().then_some(taken)
}

/// One chunk as sent (its size written with leading zeros, in either case, with blanks and an
/// extension or not) and its data.
fn chunk() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let blanks = prop_oneof![Just(""), Just(" "), Just("\t "), Just("  ")];
    (prop::collection::vec(any::<u8>(), 1..24), 0..3usize, any::<bool>(), blanks, prop::option::of("[a-z=\"]{0,6}"))
        .prop_map(|(data, zeros, upper, blanks, ext)| {
            let size = if upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
            let ext = ext.map(|e| format!(";{e}")).unwrap_or_default();
            let mut wire = format!("{}{size}{blanks}{ext}\r\n", "0".repeat(zeros)).into_bytes();
            wire.extend_from_slice(&data);
            wire.extend_from_slice(b"\r\n");
            (wire, data)
        })
}

/// A whole chunked body as sent, and the data it carries.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let trailer = ("[A-Za-z][A-Za-z-]{0,7}", "[ -~]{0,10}").prop_map(|(n, v)| format!("{n}: {v}\r\n"));
    (prop::collection::vec(chunk(), 0..5), prop::collection::vec(trailer, 0..3)).prop_map(|(chunks, trailers)| {
        let (mut wire, mut data) = (Vec::new(), Vec::new());
        for (w, d) in chunks {
            wire.extend_from_slice(&w);
            data.extend_from_slice(&d);
        }
        wire.extend_from_slice(b"0\r\n");
        wire.extend_from_slice(trailers.concat().as_bytes());
        wire.extend_from_slice(b"\r\n");
        (wire, data)
    })
}

/// A change that may break a body: bytes that matter to the grammar put in, taken out or
/// swapped, and line ends made bare.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, u8),
    Remove(Index),
    Replace(Index, u8),
    BareLf(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop::sample::select(b"\r\n \t;:0aFg-=\x00\x7f".to_vec());
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<Index>().prop_map(Mutation::BareLf),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    if body.is_empty() {
        return;
    }
    match m {
        Mutation::Insert(i, b) => body.insert(i.index(body.len() + 1), *b),
        Mutation::Remove(i) => {
            body.remove(i.index(body.len()));
        }
        Mutation::Replace(i, b) => {
            let i = i.index(body.len());
            body[i] = *b;
        }
        Mutation::BareLf(i) => {
            let crs: Vec<usize> = body.windows(2).enumerate().filter(|(_, w)| w == b"\r\n").map(|(i, _)| i).collect();
            if !crs.is_empty() {
                body.remove(crs[i.index(crs.len())]);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn chunked_bodies_are_read_as_hyper_reads_them(
        (valid, data) in chunked_body(),
        mutations in prop::collection::vec(mutation(), 0..3),
        cuts in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let mut body = valid.clone();
        for m in &mutations {
            mutate(&mut body, m);
        }
        let hyper = hyper_reads(&body);
        match scan_reads(&body, &cuts) {
            None => prop_assert_eq!(hyper, None, "the scan refused what hyper read"),
            Some(end) => {
                prop_assert!(hyper.is_some(), "the scan took what hyper refused");
                // Hyper ends the body where the scan does: not a byte earlier, and the
                // bytes after it are not part of it.
                prop_assert_eq!(&hyper_reads(&body[..end]), &hyper, "hyper read on past the scan's end");
                prop_assert_eq!(hyper_reads(&body[..end - 1]), None, "hyper ended before the scan's end");
            }
        }
        if body == valid {
            prop_assert_eq!(scan_reads(&body, &cuts), Some(body.len()));
            prop_assert_eq!(hyper_reads(&body), Some(Bytes::from(data)));
        }
    }
}

/// The internal address of the route the head tests use.
const INTERNAL: &str = "10.0.0.5:8888";

/// Header names (in either case) the rules treat differently, and some they do not.
const NAMES: [&str; 18] = [
    "Connection",
    "connection",
    "Set-Cookie",
    "set-cookie",
    "Location",
    "X-Request-Id",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Service-Worker-Allowed",
    "X-Hop",
    "x-hop",
    "X-Custom",
    "Trailer",
    "Upgrade",
    "TE",
    "Content-Type",
    "Referer",
    "X-Forwarded-For",
];

/// Values for any of them: `Connection` lists, cookies for the hub and not, locations inside
/// and outside, bytes that are not ASCII or not UTF-8.
const VALUES: [&[u8]; 20] = [
    b"close",
    b"keep-alive",
    b"keep-alive, X-Hop",
    b"x-custom, Set-Cookie",
    b"content-length, transfer-encoding",
    b"Location, x-request-id",
    b"labhub-session=planted; Path=/",
    b"theme=dark; Domain=example.org",
    b"_xsrf=2|x; Path=/user/a/",
    b"http://10.0.0.5:8888/user/a/tree?x=1",
    b"HTTP://10.0.0.5:8888",
    b"http://10.0.0.5:88889/x",
    b"/user/a/x",
    b"https://elsewhere.example/",
    b"//evil.example/",
    b"text/html",
    b"caf\xc3\xa9",
    b"http://10.0.0.5:8888/caf\xc3\xa9",
    b"\xff",
    b"",
];

/// A response head as sent: its status, its headers, and its bytes.
type Head = (u16, Vec<(&'static str, &'static [u8])>, Vec<u8>);

/// A response head: a status, headers drawn from the pools (duplicates and all), and one
/// framing (a length, chunked, or none).
fn response_head() -> impl Strategy<Value = Head> {
    let status = prop::sample::select(vec![200u16, 201, 204, 205, 301, 302, 304, 404, 503]);
    let header = (prop::sample::select(NAMES.to_vec()), prop::sample::select(VALUES.to_vec()));
    let framing = prop_oneof![
        Just(None),
        prop::sample::select(vec!["0", "1", "2", "5"]).prop_map(|n| Some(("Content-Length", n.as_bytes()))),
        Just(Some(("Transfer-Encoding", &b"chunked"[..]))),
    ];
    (status, prop::collection::vec(header, 0..12), framing, any::<Index>()).prop_map(
        |(status, mut headers, framing, at)| {
            let mut head = format!("HTTP/1.1 {status} Whatever\r\n").into_bytes();
            if let Some(f) = framing {
                headers.insert(at.index(headers.len() + 1), f);
            }
            for (name, value) in &headers {
                head.extend_from_slice(format!("{name}: ").as_bytes());
                head.extend_from_slice(value);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            (status, headers, head)
        },
    )
}

/// Header values by lower-case name, in their order, without the ones each path writes for
/// its own framing and connection (`Content-Length`, `Transfer-Encoding`, `Connection`) and
/// the request id.
fn by_name<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "x-request-id") {
            map.entry(name).or_default().push(value.to_vec());
        }
    }
    map
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn the_lane_rewrites_a_response_head_as_the_general_path_does((status, sent, head) in response_head()) {
        let table = RouteTable::new(Arc::new(labhub_core::SystemClock));
        let key = RouteKey::new(labhub_core::UserName::parse("a").unwrap(), None);
        let endpoint = INTERNAL.parse().unwrap();
        let owner = labhub_core::UserId::new(1);
        table.insert(Route::new(key, owner, endpoint, "t".to_string().into(), labhub_core::ImageKind::Jupyter)).unwrap();
        let route = table.get("a", None).unwrap();
        let settings = ProxySettings::new(["labhub-session"]);
        let client = ClientInfo { addr: [127, 0, 0, 1].into(), scheme: Scheme::Http, host: "hub.example".into() };
        let req = PlainGet { route: route.clone(), target: "/user/a/", headers: &[], client: &client, request_id: "id" };

        let mut out = Vec::new();
        let parsed = rewrite_response_head(&head, &mut out, &req, &settings);
        prop_assert!(matches!(parsed, Ok(Parsed::Final(_))), "{:?}", String::from_utf8_lossy(&head));
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut lane = httparse::Response::new(&mut fields);
        prop_assert!(matches!(lane.parse(&out), Ok(httparse::Status::Complete(_))), "{:?}", String::from_utf8_lossy(&out));
        prop_assert_eq!(lane.code, Some(status));

        let mut map = HeaderMap::new();
        for (name, value) in &sent {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        let rewrite = LocationRewrite {
            internal_origin: &route.internal_origin,
            browser_host: &client.host,
            rstudio_prefix: None,
        };
        headers::apply_to_response(&mut map, &settings.strip_cookies, &rewrite);

        let lane_headers = by_name(lane.headers.iter().map(|h| (h.name, h.value)));
        let general = by_name(map.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        prop_assert_eq!(&lane_headers, &general, "{:?}", String::from_utf8_lossy(&head));

        // The lane's framing is what it relays the body by, and its id is the hub's.
        let lane_all = |n: &str| lane.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).map(|h| h.value.to_vec()).collect::<Vec<_>>();
        let sent_all = |n: &str| sent.iter().filter(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.to_vec()).collect::<Vec<_>>();
        prop_assert_eq!(lane_all("content-length"), sent_all("content-length"));
        prop_assert_eq!(lane_all("transfer-encoding"), sent_all("transfer-encoding"));
        prop_assert_eq!(lane_all("x-request-id"), vec![b"id".to_vec()]);
        prop_assert!(map.get("x-request-id").is_none());
        prop_assert!(map.get("transfer-encoding").is_none());
    }
}
