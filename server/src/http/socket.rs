//! The plumbing both WebSockets share: a writer task fed by the hub's bounded channel, and a
//! reader that yields text frames until the peer closes or the hub drops the connection.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A socket whose outgoing frames come from a channel.
pub struct Connection {
    stream: SplitStream<WebSocket>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Split `socket`: frames queued on `rx` are encoded and sent by a writer task. When the hub
    /// drops the sender (connection replaced, revoked or too slow) the writer closes the socket.
    pub fn new<T: serde::Serialize + Send + 'static>(socket: WebSocket, mut rx: mpsc::Receiver<T>) -> Connection {
        let (mut sink, stream) = socket.split();
        let writer = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if sink.send(Message::Text(protocol::encode(&message).into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        Connection { stream, writer }
    }

    /// The next text frame; `None` once the peer closed, the socket failed, or the writer ended.
    pub async fn next_text(&mut self) -> Option<Utf8Bytes> {
        loop {
            let frame = tokio::select! {
                frame = self.stream.next() => frame,
                _ = &mut self.writer => return None,
            };
            match frame {
                Some(Ok(Message::Text(text))) => return Some(text),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.writer.abort();
    }
}
