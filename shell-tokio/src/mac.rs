//! HMAC-SHA256 message authentication with a shared cluster secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header that carries the MAC of the body, in lowercase hex.
pub const MAC_HEADER: &str = "x-cluster-mac";

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

    /// The MAC of `body`, as lowercase hex.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut m = self.mac();
        m.update(body);
        hex(&m.finalize().into_bytes())
    }

    /// Whether `mac_hex` is the MAC of `body` (compared in constant time).
    pub fn verify(&self, body: &[u8], mac_hex: &str) -> bool {
        let Some(tag) = unhex(mac_hex.trim()) else {
            return false;
        };
        let mut m = self.mac();
        m.update(body);
        m.verify_slice(&tag).is_ok()
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
    if s.len() % 2 != 0 || s.len() > 128 {
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

    #[test]
    fn sign_and_verify() {
        let s = Secret::new("k");
        let mac = s.sign(b"body");
        assert_eq!(mac.len(), 64);
        assert!(s.verify(b"body", &mac));
        assert!(s.verify(b"body", &mac.to_uppercase()));
        assert!(!s.verify(b"bodz", &mac));
        assert!(!Secret::new("other").verify(b"body", &mac));
        assert!(!s.verify(b"body", "zz"));
        assert!(!s.verify(b"body", ""));
        assert!(!s.verify(b"body", "abc"));
    }
}
