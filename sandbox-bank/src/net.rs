//! The sandbox's listener: every accepted connection can be dropped from the outside, one at a
//! time (a reply lost after commit) or all at once (a crash).

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Every live connection, so that a crash can drop them all. A std `Mutex`: held only to push or
/// walk the list, never across an `.await`.
pub type Registry = Arc<Mutex<Vec<Weak<std::net::TcpStream>>>>;

pub struct KillableListener {
    inner: TcpListener,
    registry: Registry,
}

impl KillableListener {
    pub fn new(inner: TcpListener, registry: Registry) -> KillableListener {
        KillableListener { inner, registry }
    }
}

/// An accepted connection and a second handle on its socket, to shut it down from elsewhere.
pub struct Conn {
    io: TcpStream,
    handle: Arc<std::net::TcpStream>,
}

fn split(tcp: TcpStream) -> io::Result<(TcpStream, Arc<std::net::TcpStream>)> {
    tcp.set_nodelay(true)?;
    let std = tcp.into_std()?;
    let handle = Arc::new(std.try_clone()?);
    Ok((TcpStream::from_std(std)?, handle))
}

impl axum::serve::Listener for KillableListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => match split(tcp) {
                    Ok((io, handle)) => {
                        let mut live = self.registry.lock().expect("registry lock");
                        live.retain(|w| w.strong_count() > 0);
                        live.push(Arc::downgrade(&handle));
                        return (Conn { io, handle }, addr);
                    }
                    Err(e) => tracing::warn!(error = %e, "preparing an accepted connection"),
                },
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Shut down every live connection (a crash, as the clients see it).
pub fn drop_all(registry: &Registry) {
    let live: Vec<_> = registry.lock().expect("registry lock").drain(..).filter_map(|w| w.upgrade()).collect();
    for socket in live {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

/// The connection a request came on, as a request extension (`ConnectInfo<ConnHandle>`).
#[derive(Clone, Debug)]
pub struct ConnHandle(Arc<std::net::TcpStream>);

impl ConnHandle {
    /// Close the connection without a reply.
    pub fn drop_connection(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> ConnHandle {
        ConnHandle(stream.io().handle.clone())
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
