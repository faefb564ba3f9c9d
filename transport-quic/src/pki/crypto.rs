//! Small cryptographic helpers: hex, randomness, SHA-256, constant-time
//! comparison.

use rcgen::SerialNumber;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::error::PkiError;

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `N` bytes from the system's secure random number generator.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| PkiError::Random)?;
    Ok(buf)
}

/// A random, positive, non-zero 16-byte serial number.
pub(super) fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes: [u8; 16] = random_bytes()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two byte strings (`subtle`).
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
