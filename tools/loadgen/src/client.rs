//! The client side: rustls (ring) trusting the server's CA, HTTP/1.1 keep-alive or h2
//! through hyper, one `Conn` per TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long connecting (TCP + TLS + HTTP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    H1,
    /// HTTP/2: concurrent streams multiplexed over few connections, as the API server does.
    H2,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// A TLS client configuration trusting the CAs in `ca_pem`, offering only `proto` by ALPN.
pub fn tls_config(ca_pem: &[u8], proto: Proto) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.context("CA file: not a PEM certificate")?)
            .context("CA file: unusable certificate")?;
    }
    if roots.is_empty() {
        bail!("CA file: no certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    Ok(Arc::new(config))
}

pub type ReqBody = Full<Bytes>;

/// One open connection.
pub enum Conn {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Conn {
    /// Another handle on the same h2 connection (streams multiplex); h1 cannot share.
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
        }
    }

    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> anyhow::Result<Conn> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(addr, tls, proto))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
    }

    async fn connect_inner(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        // By IP, like the API server for an IP URL: no SNI, the certificate names the IP.
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let selected = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(stream);
        match proto {
            Proto::H1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Ok(Conn::H1(sender))
            }
            Proto::H2 => {
                if selected.as_deref() != Some(b"h2") {
                    bail!("the server did not select h2 by ALPN");
                }
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Ok(Conn::H2(sender))
            }
        }
    }

    pub async fn send(&mut self, req: Request<ReqBody>) -> anyhow::Result<Response<Incoming>> {
        Ok(match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        })
    }

    /// POSTs `body` and returns the status and the whole response body.
    pub async fn post(
        &mut self,
        authority: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::post(format!("https://{authority}{path}"))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One plain-HTTP GET (the server's admin port): status and body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))?
}
