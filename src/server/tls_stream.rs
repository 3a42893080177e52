//! A client's TLS connection over rustls's unbuffered API, with buffers of
//! our own that a parked connection gives back.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for as long as
//! the connection lives, empty or not, and offers no way to free it: 40 MB
//! for 10,000 idle TLS connections. Here the records read from the socket,
//! the encrypted bytes waiting for it and the decrypted bytes hyper has not
//! read yet are `Vec`s of this type, sized to what they hold while the
//! connection is busy and freed by [`Parkable::rest`] when it is parked.
//! What a parked connection keeps is rustls's session itself: the keys and
//! sequence numbers that must survive.
//!
//! The receive buffer grows to a whole record (rustls decrypts whole
//! records) and, in the handshake, to a whole handshake message, which
//! rustls bounds at 64 KiB; beyond that the client gets an error, never
//! more memory.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Tracked;
use super::http1::Parkable;

/// Bytes asked of the socket at a time when no record says how many.
const READ_SIZE: usize = 4096;
/// The largest receive buffer: a handshake message rustls accepts (64 KiB)
/// with a record header and the start of the next record.
const MAX_RECEIVED: usize = 0x1_0000 + 0x4800;
/// Encrypted bytes queued for the socket beyond which a write waits for
/// the socket instead of encrypting more.
const MAX_QUEUED: usize = 64 * 1024;
/// Room for a record's header, tag and padding beyond its plaintext.
const RECORD_OVERHEAD: usize = 64;

/// One client's TLS connection, after its handshake.
pub struct TlsStream {
    conn: UnbufferedServerConnection,
    io: Tracked,
    /// Bytes from the socket not yet processed by rustls: `received[..filled]`.
    received: Vec<u8>,
    filled: usize,
    /// Encrypted bytes for the socket: `queued[sent..end]`.
    queued: Vec<u8>,
    sent: usize,
    end: usize,
    /// Decrypted bytes the reader has not taken: `plaintext[taken..]`.
    plaintext: Vec<u8>,
    taken: usize,
    /// The client sent close_notify: the reader sees the end of the stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    closing: bool,
}

/// What one step of rustls's state machine asked for.
enum Step {
    /// It did something; ask again.
    Again,
    /// It needs more bytes from the socket.
    NeedBytes,
    /// It encrypted this many bytes of the caller's plaintext (0 for a
    /// close_notify).
    Wrote(usize),
    /// Both sides have closed.
    Closed,
}

/// What the caller of a step is doing, and so what rustls's readiness to
/// exchange application data is used for.
enum Op<'a, 'b> {
    Handshake,
    Read(&'a mut ReadBuf<'b>),
    Write(&'a [u8]),
    Close,
}

impl TlsStream {
    /// The TLS handshake on `io` (the caller bounds how long it may take).
    /// On a failure the alert rustls queued is sent before the error is
    /// returned.
    pub async fn accept(config: Arc<rustls::ServerConfig>, io: Tracked) -> io::Result<Box<Self>> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = Box::new(TlsStream {
            conn,
            io,
            received: Vec::new(),
            filled: 0,
            queued: Vec::new(),
            sent: 0,
            end: 0,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            closing: false,
        });
        loop {
            match tls.step(&mut Op::Handshake) {
                Ok(Step::Again | Step::Wrote(_)) => {}
                // rustls waits for the client, or is done with the
                // handshake and has nothing more to do before it is used.
                Ok(Step::NeedBytes) => {
                    poll_fn(|cx| tls.poll_send(cx)).await?;
                    if !tls.conn.is_handshaking() {
                        return Ok(tls);
                    }
                    if poll_fn(|cx| tls.poll_receive(cx)).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(Step::Closed) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => {
                    // The alert for the failure, if rustls queued one.
                    if let Ok(Step::Again) = tls.step(&mut Op::Handshake) {
                        let _ = poll_fn(|cx| tls.poll_send(cx)).await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The session: ALPN's choice, the client's certificates.
    pub fn session(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// One step of rustls over the bytes received so far.
    fn step(&mut self, op: &mut Op<'_, '_>) -> io::Result<Step> {
        let UnbufferedStatus { discard, state } = self
            .conn
            .process_tls_records(&mut self.received[..self.filled]);
        let step = match state {
            Err(e) => Err(invalid(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut result = Ok(Step::Again);
                while let Some(record) = traffic.next_record() {
                    let mut payload = match record {
                        Ok(record) => record.payload,
                        Err(e) => {
                            result = Err(invalid(e));
                            break;
                        }
                    };
                    if let Op::Read(buf) = op {
                        if self.taken == self.plaintext.len() {
                            let n = payload.len().min(buf.remaining());
                            buf.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                    }
                    if self.taken == self.plaintext.len() {
                        self.plaintext.clear();
                        self.taken = 0;
                    }
                    self.plaintext.extend_from_slice(payload);
                }
                result
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => loop {
                match data.encode(&mut self.queued[self.end..]) {
                    Ok(n) => {
                        self.end += n;
                        break Ok(Step::Again);
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        grow(&mut self.queued, self.end + required_size);
                    }
                    Err(EncodeError::AlreadyEncoded) => break Ok(Step::Again),
                }
            },
            // The records are queued in order; `poll_send` sends them.
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::PeerClosed) => {
                self.peer_closed = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => Ok(Step::Closed),
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedBytes),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match op {
                Op::Write(data) => {
                    let data = &data[..data.len().min(MAX_QUEUED)];
                    grow(&mut self.queued, self.end + data.len() + RECORD_OVERHEAD);
                    loop {
                        match traffic.encrypt(data, &mut self.queued[self.end..]) {
                            Ok(n) => {
                                self.end += n;
                                break Ok(Step::Wrote(data.len()));
                            }
                            Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => grow(&mut self.queued, self.end + required_size),
                            Err(e) => break Err(invalid(e)),
                        }
                    }
                }
                Op::Close => {
                    grow(&mut self.queued, self.end + RECORD_OVERHEAD);
                    loop {
                        match traffic.queue_close_notify(&mut self.queued[self.end..]) {
                            Ok(n) => {
                                self.end += n;
                                self.closing = true;
                                break Ok(Step::Wrote(0));
                            }
                            Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => grow(&mut self.queued, self.end + required_size),
                            Err(e) => break Err(invalid(e)),
                        }
                    }
                }
                // Nothing complete to read: the next record is still on
                // its way.
                Op::Read(_) | Op::Handshake => Ok(Step::NeedBytes),
            },
            // Early data is never enabled.
            Ok(_) => Err(invalid("unexpected TLS state")),
        };
        if discard > 0 {
            self.received.copy_within(discard..self.filled, 0);
            self.filled -= discard;
        }
        step
    }

    /// Reads from the socket into the receive buffer, room made for the
    /// record being received. Ready with 0 at the end of the stream.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let pending = &self.received[..self.filled];
        let record = match pending {
            [_, _, _, hi, lo, ..] => 5 + usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        if self.filled >= MAX_RECEIVED {
            return Poll::Ready(Err(invalid("TLS message too large")));
        }
        let want = (self.filled + READ_SIZE).max(record).min(MAX_RECEIVED);
        grow(&mut self.received, want);
        let mut buf = ReadBuf::new(&mut self.received[self.filled..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.filled += n;
        Poll::Ready(Ok(n))
    }

    /// Sends what is queued.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.end {
            let n =
                ready!(Pin::new(&mut self.io).poll_write(cx, &self.queued[self.sent..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tls = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if tls.taken < tls.plaintext.len() {
                let n = (tls.plaintext.len() - tls.taken).min(buf.remaining());
                buf.put_slice(&tls.plaintext[tls.taken..tls.taken + n]);
                tls.taken += n;
                return Poll::Ready(Ok(()));
            }
            if tls.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // What rustls queued on its own (session tickets, a key
            // update's answer) goes out as the socket takes it.
            if tls.sent < tls.end {
                // A socket that takes none now wakes this task when it does.
                let _ = tls.poll_send(cx)?;
            }
            let before = buf.filled().len();
            match tls.step(&mut Op::Read(&mut *buf))? {
                Step::Again | Step::Wrote(_) => {
                    if buf.filled().len() > before {
                        return Poll::Ready(Ok(()));
                    }
                }
                Step::NeedBytes => {
                    if ready!(tls.poll_receive(cx))? == 0 {
                        return Poll::Ready(if tls.filled == 0 {
                            Ok(())
                        } else {
                            Err(io::ErrorKind::UnexpectedEof.into())
                        });
                    }
                }
                Step::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tls = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if tls.end - tls.sent >= MAX_QUEUED {
            ready!(tls.poll_send(cx))?;
        }
        loop {
            match tls.step(&mut Op::Write(data))? {
                Step::Wrote(n) => {
                    // Sent as far as the socket takes it now; the rest
                    // by the next write or flush.
                    let _ = tls.poll_send(cx)?;
                    return Poll::Ready(Ok(n));
                }
                Step::Again => {}
                Step::NeedBytes | Step::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tls = self.get_mut();
        ready!(tls.poll_send(cx))?;
        Pin::new(&mut tls.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tls = self.get_mut();
        while !tls.closing {
            match tls.step(&mut Op::Close)? {
                Step::Again => {}
                Step::Wrote(_) | Step::NeedBytes | Step::Closed => tls.closing = true,
            }
        }
        ready!(tls.poll_send(cx))?;
        Pin::new(&mut tls.io).poll_shutdown(cx)
    }
}

impl Parkable for TlsStream {
    fn can_park(&self) -> bool {
        true
    }

    /// Nothing is buffered above the socket: no unprocessed bytes from it,
    /// no decrypted bytes the reader has not taken, nothing waiting to be
    /// sent. The next bytes can then only come from the socket.
    fn at_rest(&self) -> bool {
        self.filled == 0 && self.taken == self.plaintext.len() && self.sent == self.end
    }

    /// Gives the buffers back (they grow again when the connection is next
    /// busy).
    fn rest(&mut self) {
        if self.at_rest() {
            self.received = Vec::new();
            self.queued = Vec::new();
            self.plaintext = Vec::new();
            self.taken = 0;
            self.sent = 0;
            self.end = 0;
        }
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.inner.poll_read_ready(cx)
    }
}

/// Makes `buf` at least `len` bytes long (the bytes past what it holds are
/// room to write into).
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
