//! A simulated card in a real PC/SC reader: the card side of vsmartcard's vpcd, over TCP
//!
//! vpcd is a pcscd reader driver that listens on TCP (127.0.0.1:35963 for reader
//! `Virtual PCD 00 00`, 35964 for `Virtual PCD 00 01`). A card connects as a client: a connected
//! socket is an inserted card, a closed socket a removed one.
//!
//! # Wire format
//!
//! Every frame in both directions is a 2-byte big-endian length, then the payload. A 1-byte
//! payload from vpcd is a control message: `00` power off, `01` power on, `02` reset (none of
//! them answered), `04` get ATR (answered with the ATR). pcscd's presence check every ~400 ms is
//! a get ATR. Any other payload is a command APDU, answered with data ‖ SW1 SW2.
//!
//! # Latency
//!
//! With Nagle's algorithm on our side and delayed ACKs on both, each APDU costs ~44 ms. The
//! bridge sets `TCP_NODELAY`, writes length and payload in one `write`, and re-arms
//! `TCP_QUICKACK` before every read (Linux clears it again by itself). [`Options::latency_fix`]
//! turns this off, only to measure the difference.
//!
//! # Vanishing
//!
//! A [`SimCard`] that answers a command with an empty response has vanished (see
//! [`super::Misbehave`]): the bridge closes the socket instead of answering, as a card pulled out
//! mid-command would. vpcd then reports success with an empty response to that command, and the
//! next command fails; the caller cannot know whether the command took effect.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::SimCard;

/// vpcd's port for slot 0; slot `n` listens on `VPCD_PORT + n`.
pub const VPCD_PORT: u16 = 35963;
/// How long [`insert`] waits for vpcd to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_ATR: u8 = 0x04;

/// Where vpcd listens for the card of `slot` (0 or 1 in the stock configuration).
pub fn slot_addr(slot: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        VPCD_PORT + u16::from(slot),
    ))
}

/// The PC/SC reader name pcscd gives the vpcd reader of `slot`.
pub fn reader_name(slot: u8) -> String {
    format!("Virtual PCD 00 {slot:02}")
}

#[derive(Debug, thiserror::Error)]
pub enum VpcdError {
    #[error(
        "vpcd is not listening on {addr}: is pcscd running with vsmartcard-vpcd installed? \
         (apt-get install pcscd vsmartcard-vpcd; pcscd -f -a)"
    )]
    NotListening { addr: SocketAddr },
    #[error("cannot connect to vpcd on {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the vpcd socket: {0}")]
    Socket(#[source] io::Error),
    #[error("vpcd connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("response of {0} bytes does not fit a vpcd frame")]
    ResponseTooLong(usize),
    #[error("card thread panicked")]
    Panicked,
}

/// How a served card left the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// [`InsertedCard::remove`] or a [`Remover`] took it out.
    Removed,
    /// vpcd closed the connection (pcscd stopped, or it gave up on the card).
    ReaderClosed,
    /// The card answered a command with nothing; the bridge closed the socket mid-command.
    Vanished,
}

/// Transport settings of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `TCP_NODELAY`, one write per frame, `TCP_QUICKACK` before every read. Without it every APDU
    /// waits ~44 ms on Nagle and delayed ACKs; off only to measure that.
    pub latency_fix: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { latency_fix: true }
    }
}

/// A card inserted into a vpcd reader, answering on its own thread. Dropping it removes the card.
pub struct InsertedCard {
    remover: Remover,
    served: Arc<AtomicUsize>,
    ended: Receiver<()>,
    thread: Option<JoinHandle<Result<Ended, VpcdError>>>,
}

/// Removes an [`InsertedCard`] from another thread (the card's own handle can then [`wait`]).
///
/// [`wait`]: InsertedCard::wait
#[derive(Clone)]
pub struct Remover {
    stream: Arc<TcpStream>,
    removed: Arc<AtomicBool>,
}

impl Remover {
    /// Close the card's socket: pcscd sees the reader empty at its next presence check.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        // Wakes the card thread out of its read; fails only if the socket is already gone.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Insert `card` into vpcd slot `slot` on this machine, with the latency fix.
pub fn insert(card: Box<dyn SimCard>, slot: u8) -> Result<InsertedCard, VpcdError> {
    insert_at(card, slot_addr(slot), Options::default())
}

/// Insert `card` into the vpcd reader listening on `addr`.
pub fn insert_at(
    card: Box<dyn SimCard>,
    addr: SocketAddr,
    options: Options,
) -> Result<InsertedCard, VpcdError> {
    let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(VpcdError::NotListening { addr })
        }
        Err(source) => return Err(VpcdError::Connect { addr, source }),
    };
    if options.latency_fix {
        stream.set_nodelay(true).map_err(VpcdError::Socket)?;
    }
    let stream = Arc::new(stream);
    let remover = Remover {
        stream: Arc::clone(&stream),
        removed: Arc::new(AtomicBool::new(false)),
    };
    let served = Arc::new(AtomicUsize::new(0));
    let (ended_tx, ended) = mpsc::channel();
    let mut bridge = Bridge {
        card,
        stream,
        options,
        served: Arc::clone(&served),
    };
    let removed = Arc::clone(&remover.removed);
    let thread = std::thread::Builder::new()
        .name(format!("vpcd-card-{}", addr.port()))
        .spawn(move || {
            let outcome = bridge.serve().map(|ended| {
                if ended == Ended::ReaderClosed && removed.load(Ordering::SeqCst) {
                    Ended::Removed
                } else {
                    ended
                }
            });
            // An io error after our own shutdown is the removal, not a failure.
            let outcome = match outcome {
                Err(VpcdError::Io(_)) if removed.load(Ordering::SeqCst) => Ok(Ended::Removed),
                other => other,
            };
            let _ = bridge.stream.shutdown(Shutdown::Both);
            let _ = ended_tx.send(());
            outcome
        })
        .map_err(VpcdError::Socket)?;
    Ok(InsertedCard {
        remover,
        served,
        ended,
        thread: Some(thread),
    })
}

impl InsertedCard {
    /// Command APDUs answered so far (control messages and a command the card vanished on are
    /// not counted).
    pub fn apdus_served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// A handle that removes the card from another thread.
    pub fn remover(&self) -> Remover {
        self.remover.clone()
    }

    /// Wait up to `timeout` for the card to leave the reader (vanished, removed, reader closed).
    /// Returns whether it has.
    pub fn wait_ended(&self, timeout: Duration) -> bool {
        match self.ended.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Block until the card leaves the reader, and say how.
    pub fn wait(mut self) -> Result<Ended, VpcdError> {
        self.join()
    }

    /// Take the card out of the reader and say how it ended (`Vanished` or `ReaderClosed` if it
    /// had left already).
    pub fn remove(mut self) -> Result<Ended, VpcdError> {
        self.remover.remove();
        self.join()
    }

    fn join(&mut self) -> Result<Ended, VpcdError> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| VpcdError::Panicked)?,
            None => Ok(Ended::Removed),
        }
    }
}

impl Drop for InsertedCard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.remover.remove();
            let _ = self.join();
        }
    }
}

/// One card on one vpcd connection.
struct Bridge {
    card: Box<dyn SimCard>,
    stream: Arc<TcpStream>,
    options: Options,
    served: Arc<AtomicUsize>,
}

impl Bridge {
    fn serve(&mut self) -> Result<Ended, VpcdError> {
        // A card is powered up when inserted.
        self.card.reset();
        loop {
            let Some(frame) = self.read_frame()? else {
                return Ok(Ended::ReaderClosed);
            };
            match frame.as_slice() {
                [CTRL_POWER_OFF] | [CTRL_POWER_ON] | [CTRL_RESET] => self.card.reset(),
                [CTRL_ATR] => {
                    let atr = self.card.atr();
                    self.write_frame(&atr)?;
                }
                // No other control messages exist, and an APDU has at least 4 bytes.
                [] | [_] => {}
                apdu => {
                    let response = self.card.transmit(apdu);
                    if response.is_empty() {
                        return Ok(Ended::Vanished);
                    }
                    // Counted before the answer leaves, so whoever reads the answer sees the count.
                    self.served.fetch_add(1, Ordering::SeqCst);
                    self.write_frame(&response)?;
                }
            }
        }
    }

    /// The next frame, or `None` when vpcd closed the connection.
    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, VpcdError> {
        if self.options.latency_fix {
            self.quickack()?;
        }
        let mut stream = self.stream.as_ref();
        let mut len = [0u8; 2];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut payload = vec![0; usize::from(u16::from_be_bytes(len))];
        match stream.read_exact(&mut payload) {
            Ok(()) => Ok(Some(payload)),
            Err(e) if is_closed(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_frame(&mut self, payload: &[u8]) -> Result<(), VpcdError> {
        let len = u16::try_from(payload.len())
            .map_err(|_| VpcdError::ResponseTooLong(payload.len()))?
            .to_be_bytes();
        let mut stream = self.stream.as_ref();
        if self.options.latency_fix {
            stream.write_all(&[&len[..], payload].concat())?;
        } else {
            stream.write_all(&len)?;
            stream.write_all(payload)?;
        }
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn quickack(&self) -> Result<(), VpcdError> {
        socket2::SockRef::from(self.stream.as_ref())
            .set_tcp_quickack(true)
            .or_else(|e| match e.kind() {
                // The socket was shut down under us: the next read reports it.
                io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput => Ok(()),
                _ => Err(VpcdError::Socket(e)),
            })
    }

    #[cfg(not(target_os = "linux"))]
    fn quickack(&self) -> Result<(), VpcdError> {
        Ok(())
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    //! Against a fake vpcd on an ephemeral port: no pcscd needed.

    use std::net::TcpListener;

    use super::*;
    use crate::sim::{self, Misbehave, Vanish};

    /// The reader side of one connection.
    struct FakeVpcd {
        stream: TcpStream,
    }

    impl FakeVpcd {
        fn send(&mut self, payload: &[u8]) {
            let len = (payload.len() as u16).to_be_bytes();
            self.stream
                .write_all(&[&len[..], payload].concat())
                .unwrap();
        }

        /// The next frame, `None` if the card closed the socket.
        fn recv(&mut self) -> Option<Vec<u8>> {
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).ok()?;
            let mut payload = vec![0; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut payload).ok()?;
            Some(payload)
        }

        fn transmit(&mut self, apdu: &[u8]) -> Option<Vec<u8>> {
            self.send(apdu);
            self.recv()
        }
    }

    fn insert_into_fake(card: Box<dyn SimCard>) -> (InsertedCard, FakeVpcd) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inserted = insert_at(card, addr, Options::default()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        (inserted, FakeVpcd { stream })
    }

    const SELECT_PPSE: &str = "00A404000E325041592E5359532E444446303100";

    #[test]
    fn answers_atr_control_messages_and_apdus() {
        let card = sim::load("unionpay-debit").unwrap();
        let atr = card.atr();
        let expected = sim::load("unionpay-debit")
            .unwrap()
            .transmit(&hex::decode(SELECT_PPSE).unwrap());
        let (inserted, mut vpcd) = insert_into_fake(card);

        // Power on and reset have no answer: the ATR request right after gets the ATR.
        vpcd.send(&[CTRL_POWER_ON]);
        vpcd.send(&[CTRL_RESET]);
        assert_eq!(vpcd.transmit(&[CTRL_ATR]), Some(atr));
        let response = vpcd.transmit(&hex::decode(SELECT_PPSE).unwrap());

        assert_eq!(response, Some(expected));
        assert_eq!(inserted.apdus_served(), 1);
        assert_eq!(inserted.remove().unwrap(), Ended::Removed);
        assert_eq!(vpcd.recv(), None, "removal closes the socket");
    }

    #[test]
    fn power_off_resets_the_card() {
        // A card that vanishes on its fourth command answers three more after a power cycle.
        let card =
            Misbehave::new(sim::load("unionpay-debit").unwrap()).vanish(Vanish::AfterCommands(3));
        let (inserted, mut vpcd) = insert_into_fake(Box::new(card));
        let select = hex::decode(SELECT_PPSE).unwrap();
        for _ in 0..3 {
            assert!(vpcd.transmit(&select).is_some());
        }

        vpcd.send(&[CTRL_POWER_OFF]);
        vpcd.send(&[CTRL_POWER_ON]);

        for _ in 0..3 {
            assert!(vpcd.transmit(&select).is_some(), "count restarted at reset");
        }
        assert_eq!(vpcd.transmit(&select), None);
        assert!(inserted.wait_ended(Duration::from_secs(5)));
        assert_eq!(inserted.apdus_served(), 6);
        assert_eq!(inserted.wait().unwrap(), Ended::Vanished);
    }

    #[test]
    fn a_vanishing_card_closes_the_socket_instead_of_answering() {
        let card = Misbehave::new(sim::load("unionpay-debit").unwrap()).vanish(Vanish::OnIns {
            ins: 0xA8,
            executed: false,
        });
        let (inserted, mut vpcd) = insert_into_fake(Box::new(card));

        assert!(vpcd.transmit(&hex::decode(SELECT_PPSE).unwrap()).is_some());
        assert_eq!(
            vpcd.transmit(&hex::decode("80A8000002830000").unwrap()),
            None
        );

        assert!(inserted.wait_ended(Duration::from_secs(5)));
        assert_eq!(inserted.apdus_served(), 1);
        assert_eq!(inserted.remove().unwrap(), Ended::Vanished);
    }

    #[test]
    fn the_reader_closing_ends_the_card() {
        let (inserted, vpcd) = insert_into_fake(sim::load("campus-card").unwrap());

        drop(vpcd);

        assert_eq!(inserted.wait().unwrap(), Ended::ReaderClosed);
    }

    #[test]
    fn a_remover_takes_the_card_out_from_another_thread() {
        let (inserted, _vpcd) = insert_into_fake(sim::load("campus-card").unwrap());
        let remover = inserted.remover();

        std::thread::spawn(move || remover.remove());

        assert_eq!(inserted.wait().unwrap(), Ended::Removed);
    }

    #[test]
    fn no_listener_is_a_clear_error() {
        // Bind then drop: the port is (almost certainly) closed for the moment of the test.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();

        let error = insert_at(sim::load("campus-card").unwrap(), addr, Options::default())
            .err()
            .unwrap();

        assert!(matches!(error, VpcdError::NotListening { .. }), "{error}");
        assert!(error.to_string().contains("pcscd -f -a"));
    }

    #[test]
    fn slots_map_to_vpcd_ports_and_reader_names() {
        assert_eq!(slot_addr(0).port(), 35963);
        assert_eq!(slot_addr(1).port(), 35964);
        assert_eq!(reader_name(1), "Virtual PCD 00 01");
    }
}
