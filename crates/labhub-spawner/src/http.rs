//! Minimal HTTP/1.1 GETs: the readiness probe of a starting server, and the one engine
//! endpoint bollard cannot read on older engines (`/system/df`, see `storage`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Why a GET got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GetError {
    #[error("connecting failed: {0}")]
    Connect(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the answer is too large (over {0} bytes)")]
    TooLarge(usize),
}

/// Where the Docker engine listens, from `DOCKER_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineAddr {
    /// `unix:///var/run/docker.sock`
    Unix(PathBuf),
    /// `tcp://host:port` (plain HTTP)
    Tcp(String),
}

impl EngineAddr {
    /// Reads a `DOCKER_HOST` value; `None` for schemes we do not speak.
    pub fn parse(host: &str) -> Option<Self> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Some(Self::Unix(PathBuf::from(path)));
        }
        let rest = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://"))?;
        Some(Self::Tcp(rest.trim_end_matches('/').to_string()))
    }
}

/// The status of `GET path` on a server, with an optional `Authorization: token …`.
pub(crate) async fn probe(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<StatusCode, GetError> {
    let fut = async {
        let stream = TcpStream::connect(addr).await?;
        let (status, _) = get(stream, &addr.to_string(), path, token, None).await?;
        Ok(status)
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| GetError::Timeout(timeout))?
}

/// `GET path` on the engine, returning status and body (at most `limit` bytes).
pub(crate) async fn engine_get(
    engine: &EngineAddr,
    path: &str,
    timeout: Duration,
    limit: usize,
) -> Result<(StatusCode, Bytes), GetError> {
    let fut = async {
        match engine {
            EngineAddr::Unix(socket) => {
                get(UnixStream::connect(socket).await?, "docker", path, None, Some(limit)).await
            }
            EngineAddr::Tcp(host) => get(TcpStream::connect(host.as_str()).await?, host, path, None, Some(limit)).await,
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| GetError::Timeout(timeout))?
}

/// One request on a fresh connection; the body is read only when `limit` is given.
async fn get<S>(
    stream: S,
    host: &str,
    path: &str,
    token: Option<&str>,
    limit: Option<usize>,
) -> Result<(StatusCode, Bytes), GetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends by itself once `sender` is dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "probe connection ended with an error");
        }
    });
    let mut req = Request::get(path).header(HOST, host);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("token {t}"));
    }
    let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await?;
    let status = resp.status();
    let Some(limit) = limit else {
        return Ok((status, Bytes::new()));
    };
    let body = http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(h) => GetError::Http(*h),
            Err(_) => GetError::TooLarge(limit),
        })?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(
            EngineAddr::parse("unix:///var/run/docker.sock"),
            Some(EngineAddr::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(EngineAddr::parse("tcp://127.0.0.1:2375"), Some(EngineAddr::Tcp("127.0.0.1:2375".into())));
        assert_eq!(EngineAddr::parse("ssh://host"), None);
    }
}
