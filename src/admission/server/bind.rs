//! Stage 3: both ports bound. A [`Bound`] server has its listeners and their real
//! addresses (port 0 picks one), and nothing running yet.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::config::ServerConfig;
use super::error::BindError;

pub(super) struct Bound {
    pub(super) webhook: TcpListener,
    pub(super) webhook_addr: SocketAddr,
    pub(super) admin: TcpListener,
    pub(super) admin_addr: SocketAddr,
}

/// Binds the webhook port, then the admin port.
pub(super) async fn bind(config: &ServerConfig) -> Result<Bound, BindError> {
    let webhook = listen(config.listen).await?;
    let admin = listen(config.admin_listen).await?;
    Ok(Bound {
        webhook_addr: local_addr(&webhook, config.listen)?,
        admin_addr: local_addr(&admin, config.admin_listen)?,
        webhook,
        admin,
    })
}

/// Connections waiting to be accepted (the kernel caps it at somaxconn).
const BACKLOG: i32 = 1024;

/// Binds `addr`. The unspecified IPv6 address (`[::]`, the default) is dual-stack: it also
/// accepts IPv4, whatever the host's `net.ipv6.bindv6only`, so probes and the Service work
/// on IPv4, IPv6-only and dual-stack clusters alike. On a host without IPv6 it falls back
/// to `0.0.0.0` with a warning. Any other address is bound as given (`0.0.0.0`: IPv4 only).
async fn listen(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let bind_error = |error| BindError { addr, error };
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind_dual_stack(addr) {
            Ok(listener) => Ok(listener),
            Err(error) if no_ipv6(&error) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                tracing::warn!(%addr, fallback = %v4, error = %error, "no IPv6 on this host; listening on IPv4 only");
                TcpListener::bind(v4).await.map_err(bind_error)
            }
            Err(error) => Err(bind_error(error)),
        },
        _ => TcpListener::bind(addr).await.map_err(bind_error),
    }
}

fn bind_dual_stack(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    // As tokio's own bind does: a restarted server rebinds while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The host has no IPv6 at all (the kernel built or booted without it).
fn no_ipv6(error: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when the family is missing, EADDRNOTAVAIL (99) when IPv6 is
    // disabled on every interface.
    matches!(error.raw_os_error(), Some(97 | 99))
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, BindError> {
    listener
        .local_addr()
        .map_err(|error| BindError { addr, error })
}
