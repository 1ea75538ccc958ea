//! The plumbing both WebSockets share: frame size limits with a proper close (1009), a writer task
//! fed by the hub's bounded channel, and a reader that yields text frames until the peer closes or
//! the hub drops the connection. A connection may also watch its peer's liveness
//! ([`Connection::with_heartbeat`]): every frame (pings included) counts, and a peer silent for
//! longer than its idle limit is closed (`/ws/agent`: the agent pings every 20 s).
//!
//! Size limits: tungstenite's own limit fails the stream (the TCP connection just drops, with no
//! close frame). So tungstenite is given a limit [`HEADROOM`] above ours and we check each frame
//! ourselves: a frame over our limit gets close code 1009 ("message too big") with a reason, and
//! the peer's closing answer is awaited. A frame even over tungstenite's limit (refused from its
//! header, never buffered) still gets the 1009 close frame before the connection drops.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How far above our own limit tungstenite's limit sits.
pub const HEADROOM: usize = 64 * 1024;
/// How long a closing socket waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The read buffer a connection starts with. tungstenite's default (128 KiB) is zero-filled by the
/// first read, so each idle connection kept 128 KiB resident (`cargo xtask bench load`: 143 KiB of
/// server memory per connected agent; 14 KiB with this). Frames are a few hundred bytes; the buffer
/// grows to fit a larger one, up to the frame limit.
const READ_BUFFER: usize = 1024;

/// Apply a frame limit of `limit` bytes to an upgrade (see the module documentation), starting
/// with a small read buffer ([`READ_BUFFER`]).
pub fn limit_frames(ws: WebSocketUpgrade, limit: usize) -> WebSocketUpgrade {
    ws.max_message_size(limit + HEADROOM).max_frame_size(limit + HEADROOM).read_buffer_size(READ_BUFFER)
}

/// One frame from a peer, judged against our limit.
pub enum Incoming {
    Text(Utf8Bytes),
    /// A frame over the limit. `readable`: the stream still works (we can await the peer's close).
    TooBig { size: Option<usize>, readable: bool },
    /// Ping, pong, or a binary frame within the limit: nothing to do.
    Other,
    /// The peer closed or the socket failed.
    End,
}

/// Judge `frame` against `limit`.
pub fn judge(frame: Option<Result<Message, axum::Error>>, limit: usize) -> Incoming {
    match frame {
        Some(Ok(Message::Text(text))) if text.len() > limit => Incoming::TooBig { size: Some(text.len()), readable: true },
        Some(Ok(Message::Binary(data))) if data.len() > limit => {
            Incoming::TooBig { size: Some(data.len()), readable: true }
        }
        Some(Ok(Message::Text(text))) => Incoming::Text(text),
        Some(Ok(Message::Close(_))) | None => Incoming::End,
        Some(Err(error)) if is_too_big(&error) => Incoming::TooBig { size: None, readable: false },
        Some(Err(_)) => Incoming::End,
        Some(Ok(_)) => Incoming::Other,
    }
}

fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error;
    matches!(
        error.source().and_then(|source| source.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

/// The close frame for a frame over `limit`.
pub fn too_big(limit: usize) -> Message {
    Message::Close(Some(CloseFrame { code: close_code::SIZE, reason: format!("frame larger than {limit} bytes").into() }))
}

/// Wait (briefly) for the peer to answer our close, reading and dropping whatever it still sends.
async fn await_peer_close<S>(stream: &mut S)
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Refuse a frame over `limit` on a socket that is not split yet (the handshake): close 1009.
pub async fn close_too_big(socket: &mut WebSocket, limit: usize, size: Option<usize>, readable: bool) {
    tracing::warn!(?size, limit, "frame too big; closing with 1009");
    if socket.send(too_big(limit)).await.is_ok() && readable {
        await_peer_close(socket).await;
    }
}

/// Called for every frame the peer sends.
type Heard = Box<dyn Fn() + Send + Sync>;

/// A socket whose outgoing frames come from a channel.
pub struct Connection {
    stream: SplitStream<WebSocket>,
    writer: Option<JoinHandle<()>>,
    close: Option<oneshot::Sender<Message>>,
    limit: usize,
    /// Close the connection when the peer is silent this long.
    idle: Option<Duration>,
    heard: Option<Heard>,
    went_silent: bool,
}

impl Connection {
    /// Split `socket`: frames queued on `rx` are encoded and sent by a writer task. When the hub
    /// drops the sender (connection replaced, revoked or too slow) the writer closes the socket.
    /// Frames over `limit` bytes close the connection with 1009.
    ///
    /// When `drain` is cancelled (the server is shutting down) the writer closes the socket with
    /// 1012 ("service restart"): the peer reconnects, through the load balancer, to an instance
    /// that is still serving.
    pub fn new<T: serde::Serialize + Send + 'static>(
        socket: WebSocket,
        mut rx: mpsc::Receiver<T>,
        limit: usize,
        drain: tokio_util::sync::CancellationToken,
    ) -> Connection {
        let (mut sink, stream) = socket.split();
        let (close, mut close_rx) = oneshot::channel::<Message>();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = rx.recv() => match message {
                        Some(message) => {
                            if sink.send(Message::Text(protocol::encode(&message).into())).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = drain.cancelled() => {
                        let reason = "the server is shutting down; reconnect";
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: close_code::RESTART, reason: reason.into() }))).await;
                        break;
                    }
                    frame = &mut close_rx => {
                        if let Ok(frame) = frame {
                            let _ = sink.send(frame).await;
                        }
                        break;
                    }
                }
            }
            let _ = sink.close().await;
        });
        Connection { stream, writer: Some(writer), close: Some(close), limit, idle: None, heard: None, went_silent: false }
    }

    /// Call `heard` for every frame the peer sends (pings and pongs included), and end the
    /// connection (close 1001, "going away") when the peer sends nothing for `idle`.
    pub fn with_heartbeat(mut self, idle: Duration, heard: impl Fn() + Send + Sync + 'static) -> Connection {
        self.idle = Some(idle);
        self.heard = Some(Box::new(heard));
        self
    }

    /// The connection ended because the peer went silent for longer than its idle limit.
    pub fn went_silent(&self) -> bool {
        self.went_silent
    }

    /// The next text frame; `None` once the peer closed, the socket failed, a frame was too big
    /// (answered with close 1009), or the writer ended.
    pub async fn next_text(&mut self) -> Option<Utf8Bytes> {
        loop {
            let idle = self.idle;
            let writer = self.writer.as_mut()?;
            let silence = async move {
                match idle {
                    Some(idle) => tokio::time::sleep(idle).await,
                    None => std::future::pending().await,
                }
            };
            let frame = tokio::select! {
                frame = self.stream.next() => Some(Some(frame)),
                _ = writer => Some(None),
                () = silence => None,
            };
            let Some(frame) = frame else {
                self.went_silent = true;
                let reason = "no frame within the heartbeat window";
                self.close_with(Message::Close(Some(CloseFrame { code: close_code::AWAY, reason: reason.into() }))).await;
                return None;
            };
            let Some(frame) = frame else {
                self.writer = None;
                return None;
            };
            if let (Some(heard), Some(Ok(_))) = (&self.heard, &frame) {
                heard();
            }
            match judge(frame, self.limit) {
                Incoming::Text(text) => return Some(text),
                Incoming::Other => continue,
                Incoming::End => return None,
                Incoming::TooBig { size, readable } => {
                    tracing::warn!(?size, limit = self.limit, "frame too big; closing with 1009");
                    self.close_with(too_big(self.limit)).await;
                    if readable {
                        await_peer_close(&mut self.stream).await;
                    }
                    return None;
                }
            }
        }
    }

    /// Have the writer send `frame` (after what it already queued) and wait until it did.
    async fn close_with(&mut self, frame: Message) {
        if let Some(close) = self.close.take() {
            let _ = close.send(frame);
        }
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}
