//! Message authentication with a shared cluster secret (HMAC-SHA256), bound to the
//! sender's process, the receiving process and a sequence number so that a captured
//! request cannot be replayed (docs/PROTOCOL.md, "Message authentication and replay").
//!
//! Every authenticated request carries two headers:
//!
//! - [`AUTH_HEADER`]: `v2 <incarnation> <stream> <epoch> <seq>`, a [`Binding`]: the
//!   sender process's random incarnation, the sender's stream to this receiver (one
//!   per send queue), the receiver's epoch as the sender learned it (`0` before it
//!   knows it) and the request's sequence number within the stream;
//! - [`MAC_HEADER`]: the HMAC-SHA256, in lowercase hex, of a domain tag, the request's
//!   [`Purpose`], the binding and the body.
//!
//! The receiver keeps, for its current epoch, a sliding window of the sequence
//! numbers it accepted per stream ([`ReplayGuard`]): a request whose epoch is not the
//! receiver's current one is refused with 421 and the current epoch in
//! [`EPOCH_HEADER`] (signed, so the sender retries at once); a request already seen,
//! or too far behind its stream's newest, is refused as a replay.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;

/// The request header that carries the MAC, in lowercase hex.
pub const MAC_HEADER: &str = "x-cluster-mac";
/// The request header that carries the [`Binding`].
pub const AUTH_HEADER: &str = "x-cluster-auth";
/// The header of a 421 answer that carries the receiver's current epoch and its MAC:
/// `<epoch> <mac>`.
pub const EPOCH_HEADER: &str = "x-cluster-epoch";
/// The authentication scheme's name in [`AUTH_HEADER`]. Scheme 1 (releases up to
/// 0.4.0) signed the body alone.
pub const SCHEME: &str = "v2";

/// How many sequence numbers behind a stream's newest one are still accepted (once
/// each): room for requests overtaking each other on concurrent connections.
pub const REPLAY_WINDOW: u64 = 128;

/// The default most streams a node keeps replay windows for in one epoch; past it
/// the node starts a new epoch (see [`ReplayGuard`]).
pub const DEFAULT_MAX_STREAMS: usize = 4096;

/// What an authenticated request is for: a MAC made for one purpose is never valid
/// for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A protocol message (`POST /cluster/v1/message`).
    Message,
    /// An operator's forced recovery (`POST /cluster/v1/recover`).
    Recover,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Message => b"message",
            Purpose::Recover => b"recover",
        }
    }
}

/// What one authenticated request is bound to, besides its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The sender process's incarnation: random, drawn at every process start.
    pub incarnation: u64,
    /// The sender's stream to this receiver: sequence numbers count within it.
    pub stream: u64,
    /// The receiver's epoch as the sender learned it; `0` when it does not know it.
    pub epoch: u64,
    /// The request's number within its stream, increasing in the order of signing.
    pub seq: u64,
}

impl Binding {
    /// The value of [`AUTH_HEADER`].
    pub fn header(&self) -> String {
        format!(
            "{SCHEME} {:016x} {} {:016x} {}",
            self.incarnation, self.stream, self.epoch, self.seq
        )
    }

    /// Parses a value of [`AUTH_HEADER`]; `None` if it is not one.
    pub fn parse(value: &str) -> Option<Binding> {
        let mut parts = value.split_ascii_whitespace();
        if parts.next()? != SCHEME {
            return None;
        }
        let hex = |s: &str| (s.len() <= 16).then(|| u64::from_str_radix(s, 16).ok())?;
        let b = Binding {
            incarnation: hex(parts.next()?)?,
            stream: parts.next()?.parse().ok()?,
            epoch: hex(parts.next()?)?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(b)
    }

    fn bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&self.incarnation.to_be_bytes());
        out[8..16].copy_from_slice(&self.stream.to_be_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        out[24..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }
}

/// A shared cluster secret. Every node of a cluster must be given the same one.
#[derive(Clone)]
pub struct Secret(std::sync::Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps secret bytes (any length; 32 random bytes is a good choice).
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Secret(std::sync::Arc::from(bytes.as_ref()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    fn request_mac(&self, purpose: Purpose, b: &Binding, body: &[u8]) -> Hmac<Sha256> {
        let mut m = self.mac();
        m.update(b"cluster-mode request v2\0");
        m.update(purpose.tag());
        m.update(b"\0");
        m.update(&b.bytes());
        m.update(body);
        m
    }

    /// The MAC of a request for `purpose` with binding `b` and `body`, as lowercase
    /// hex: the value of [`MAC_HEADER`].
    pub fn sign_request(&self, purpose: Purpose, b: &Binding, body: &[u8]) -> String {
        hex(&self.request_mac(purpose, b, body).finalize().into_bytes())
    }

    /// Whether `mac_hex` is the MAC of this request (compared in constant time).
    pub fn verify_request(
        &self,
        purpose: Purpose,
        b: &Binding,
        body: &[u8],
        mac_hex: &str,
    ) -> bool {
        let Some(tag) = unhex(mac_hex.trim()) else {
            return false;
        };
        self.request_mac(purpose, b, body)
            .verify_slice(&tag)
            .is_ok()
    }

    fn epoch_mac(&self, b: &Binding, epoch: u64) -> Hmac<Sha256> {
        let mut m = self.mac();
        m.update(b"cluster-mode epoch v2\0");
        m.update(&b.bytes());
        m.update(&epoch.to_be_bytes());
        m
    }

    /// The value of [`EPOCH_HEADER`] in the answer to the request bound by `b`: the
    /// receiver's current `epoch`, signed together with the request's binding (so an
    /// answer cannot be moved to another request).
    pub fn sign_epoch(&self, b: &Binding, epoch: u64) -> String {
        format!(
            "{epoch:016x} {}",
            hex(&self.epoch_mac(b, epoch).finalize().into_bytes())
        )
    }

    /// The epoch in `header` (a value of [`EPOCH_HEADER`] answering the request bound
    /// by `b`), if its MAC is right and it is not `0`.
    pub fn verify_epoch(&self, b: &Binding, header: &str) -> Option<u64> {
        let (epoch, mac) = header.trim().split_once(' ')?;
        if epoch.len() > 16 {
            return None;
        }
        let epoch = u64::from_str_radix(epoch, 16).ok()?;
        let tag = unhex(mac.trim())?;
        self.epoch_mac(b, epoch).verify_slice(&tag).ok()?;
        (epoch != 0).then_some(epoch)
    }
}

/// Why [`ReplayGuard::check`] refused a request (authenticated, so from a key holder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Signed for another epoch of this node (an earlier process at this address, an
    /// epoch this node has left, or `0`: the sender did not know it yet). Answered
    /// with the current epoch; the sender retries at once.
    StaleEpoch {
        /// The epoch the request named.
        named: u64,
        /// The receiver's current epoch.
        current: u64,
    },
    /// This stream's request with this number was accepted before.
    Replayed,
    /// More than [`REPLAY_WINDOW`] behind the newest request of its stream: it cannot
    /// be told from a replay.
    TooOld,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::StaleEpoch { named: 0, .. } => {
                write!(f, "signed before the sender knew this node's epoch")
            }
            Refusal::StaleEpoch { named, current } => write!(
                f,
                "signed for epoch {named:016x} of this node, not the current {current:016x} (a request for an earlier process, or a replay)"
            ),
            Refusal::Replayed => write!(f, "replayed request: this sequence number was accepted before"),
            Refusal::TooOld => write!(
                f,
                "request over {REPLAY_WINDOW} behind its stream's newest: refused as a possible replay"
            ),
        }
    }
}

/// The sequence numbers one stream had accepted: the newest, and which of the
/// [`REPLAY_WINDOW`] below it.
#[derive(Clone, Copy, Debug)]
struct Window {
    top: u64,
    /// Bit `i` set: `top - i` was accepted.
    seen: u128,
}

impl Window {
    fn new(seq: u64) -> Self {
        Window { top: seq, seen: 1 }
    }

    fn accept(&mut self, seq: u64) -> Result<(), Refusal> {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= REPLAY_WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.top = seq;
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= REPLAY_WINDOW {
            return Err(Refusal::TooOld);
        }
        let bit = 1u128 << behind;
        if self.seen & bit != 0 {
            return Err(Refusal::Replayed);
        }
        self.seen |= bit;
        Ok(())
    }
}

/// The receiving side's memory of authenticated requests: a random **epoch** (drawn
/// at start, so a restarted process never accepts a request signed for the previous
/// one) and, within it, a window per stream (sender incarnation, stream).
///
/// Bounded: when a request opens a stream while `max_streams` are kept, the guard
/// starts a new epoch and forgets every window; that request, and the next of
/// every other stream, is refused as [`Refusal::StaleEpoch`] and sent again by its
/// sender with the new epoch. A captured request names an epoch, so it can never be
/// accepted in a later one.
#[derive(Debug)]
pub struct ReplayGuard {
    epoch: u64,
    windows: HashMap<(u64, u64), Window>,
    max_streams: usize,
    draw: fn() -> u64,
}

impl ReplayGuard {
    /// A guard with a fresh epoch from `draw` (never `0`), keeping at most
    /// `max_streams` windows per epoch.
    pub fn new(max_streams: usize, draw: fn() -> u64) -> Self {
        let mut g = ReplayGuard {
            epoch: 0,
            windows: HashMap::new(),
            max_streams: max_streams.max(1),
            draw,
        };
        g.new_epoch();
        g
    }

    fn new_epoch(&mut self) {
        let old = self.epoch;
        loop {
            let e = (self.draw)();
            if e != 0 && e != old {
                self.epoch = e;
                break;
            }
        }
        self.windows = HashMap::new();
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Streams kept in this epoch.
    pub fn streams(&self) -> usize {
        self.windows.len()
    }

    /// Accepts (and remembers) the request bound by `b`, or says why not. Call it
    /// only for a request whose MAC was verified.
    pub fn check(&mut self, b: &Binding) -> Result<(), Refusal> {
        if b.epoch != self.epoch {
            return Err(Refusal::StaleEpoch {
                named: b.epoch,
                current: self.epoch,
            });
        }
        let key = (b.incarnation, b.stream);
        if let Some(w) = self.windows.get_mut(&key) {
            return w.accept(b.seq);
        }
        if self.windows.len() >= self.max_streams {
            let named = self.epoch;
            self.new_epoch();
            tracing::info!(
                streams = self.max_streams,
                "replay windows full; starting a new epoch (every sender retries once)"
            );
            return Err(Refusal::StaleEpoch {
                named,
                current: self.epoch,
            });
        }
        self.windows.insert(key, Window::new(b.seq));
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(seq: u64) -> Binding {
        Binding {
            incarnation: 7,
            stream: 1,
            epoch: 42,
            seq,
        }
    }

    #[test]
    fn sign_and_verify() {
        let s = Secret::new("k");
        let mac = s.sign_request(Purpose::Message, &b(1), b"body");
        assert_eq!(mac.len(), 64);
        assert!(s.verify_request(Purpose::Message, &b(1), b"body", &mac));
        assert!(s.verify_request(Purpose::Message, &b(1), b"body", &mac.to_uppercase()));
        assert!(!s.verify_request(Purpose::Message, &b(1), b"bodz", &mac));
        assert!(!s.verify_request(Purpose::Recover, &b(1), b"body", &mac));
        assert!(!s.verify_request(Purpose::Message, &b(2), b"body", &mac));
        let other_epoch = Binding { epoch: 43, ..b(1) };
        assert!(!s.verify_request(Purpose::Message, &other_epoch, b"body", &mac));
        let other_sender = Binding {
            incarnation: 8,
            ..b(1)
        };
        assert!(!s.verify_request(Purpose::Message, &other_sender, b"body", &mac));
        assert!(!Secret::new("other").verify_request(Purpose::Message, &b(1), b"body", &mac));
        assert!(!s.verify_request(Purpose::Message, &b(1), b"body", "zz"));
        assert!(!s.verify_request(Purpose::Message, &b(1), b"body", ""));
        assert!(!s.verify_request(Purpose::Message, &b(1), b"body", "abc"));
    }

    #[test]
    fn binding_header_round_trips_and_junk_is_refused() {
        let x = Binding {
            incarnation: u64::MAX,
            stream: 3,
            epoch: 0,
            seq: 99,
        };
        assert_eq!(Binding::parse(&x.header()), Some(x));
        for junk in [
            "",
            "v2",
            "v1 1 2 3 4",
            "v2 1 2 3",
            "v2 1 2 3 4 5",
            "v2 zz 2 3 4",
            "v2 11111111111111111 2 3 4",
            "v2 1 -2 3 4",
        ] {
            assert_eq!(Binding::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn epoch_answers_are_bound_to_the_request() {
        let s = Secret::new("k");
        let h = s.sign_epoch(&b(1), 5);
        assert_eq!(s.verify_epoch(&b(1), &h), Some(5));
        assert_eq!(s.verify_epoch(&b(2), &h), None);
        assert_eq!(Secret::new("j").verify_epoch(&b(1), &h), None);
        assert_eq!(s.verify_epoch(&b(1), &s.sign_epoch(&b(1), 0)), None);
        assert_eq!(s.verify_epoch(&b(1), "junk"), None);
    }

    fn counter() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(100);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn the_window_accepts_each_number_once_in_any_order_within_it() {
        let mut g = ReplayGuard::new(16, counter);
        let e = g.epoch();
        let at = |seq| Binding { epoch: e, ..b(seq) };
        assert_eq!(g.check(&at(10)), Ok(()));
        assert_eq!(g.check(&at(10)), Err(Refusal::Replayed));
        assert_eq!(g.check(&at(12)), Ok(()));
        assert_eq!(g.check(&at(11)), Ok(()), "overtaken, still in the window");
        assert_eq!(g.check(&at(11)), Err(Refusal::Replayed));
        assert_eq!(g.check(&at(12)), Err(Refusal::Replayed));
        assert_eq!(g.check(&at(12 + REPLAY_WINDOW)), Ok(()));
        assert_eq!(g.check(&at(12)), Err(Refusal::TooOld));
        assert_eq!(g.check(&at(13)), Ok(()), "just inside the window");
        assert_eq!(g.check(&at(13)), Err(Refusal::Replayed));
        // Another stream of the same process has its own window.
        assert_eq!(
            g.check(&Binding {
                stream: 2,
                ..at(10)
            }),
            Ok(())
        );
        // Another epoch: refused, the current one named.
        assert_eq!(
            g.check(&Binding {
                epoch: e + 1,
                ..at(500)
            }),
            Err(Refusal::StaleEpoch {
                named: e + 1,
                current: e
            })
        );
    }

    #[test]
    fn a_full_guard_starts_a_new_epoch_and_old_requests_stay_refused() {
        let mut g = ReplayGuard::new(2, counter);
        let e1 = g.epoch();
        let s = |stream, epoch| Binding {
            incarnation: 1,
            stream,
            epoch,
            seq: 0,
        };
        assert_eq!(g.check(&s(1, e1)), Ok(()));
        assert_eq!(g.check(&s(2, e1)), Ok(()));
        let Err(Refusal::StaleEpoch { named, current: e2 }) = g.check(&s(3, e1)) else {
            panic!("a third stream must start a new epoch");
        };
        assert_eq!(named, e1);
        assert_ne!(e2, e1);
        assert_eq!(g.streams(), 0);
        // Requests of the old epoch, seen or not, are refused for good.
        assert!(matches!(
            g.check(&s(1, e1)),
            Err(Refusal::StaleEpoch { .. })
        ));
        assert!(matches!(
            g.check(&s(4, e1)),
            Err(Refusal::StaleEpoch { .. })
        ));
        assert_eq!(g.check(&s(3, e2)), Ok(()));
        assert_eq!(g.check(&s(3, e2)), Err(Refusal::Replayed));
    }
}
