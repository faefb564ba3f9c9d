//! Join tokens: their string form, and the master's store of them
//! (`tokens.json`, secrets kept only as hashes).

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::ca::CertificateAuthority;
use super::cert::fingerprint_pem;
use super::crypto::{ct_eq, hex, random_bytes, sha256};
use super::error::{io_err, PkiError};
use super::files::{read_to_string, write_atomic, CA_CERT_FILE, TOKENS_FILE};

/// Prefix (and format version) of join tokens.
pub const TOKEN_PREFIX: &str = "ffrtmp1";

/// Largest token string accepted by [`JoinToken::parse`].
const MAX_TOKEN_LEN: usize = 512;
/// Bytes of randomness in a token id and a token secret.
const TOKEN_ID_BYTES: usize = 8;
const TOKEN_SECRET_BYTES: usize = 32;

/// Join tokens: `ffrtmp1.<token_id>.<secret>.<ca_fingerprint>` (one line, URL-safe, no spaces).
///
/// `id`: 16 lowercase hex chars; `secret`: 43 chars of unpadded base64url (32
/// random bytes); `ca_fingerprint`: 64 lowercase hex chars.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Public token id (names the token in `tokens.json` and in logs).
    pub id: String,
    /// The secret; never logged, only its SHA-256 is stored.
    pub secret: String,
    /// Lowercase hex SHA-256 of the cluster CA certificate's DER.
    pub ca_fingerprint: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

impl JoinToken {
    /// Parses a token string. Surrounding whitespace is ignored; the
    /// fingerprint may be given in upper case and is normalized to lower case.
    /// Error messages never contain the secret.
    pub fn parse(s: &str) -> Result<JoinToken, PkiError> {
        let s = s.trim();
        if s.len() > MAX_TOKEN_LEN {
            return Err(PkiError::MalformedToken("too long"));
        }
        let mut parts = s.split('.');
        let (Some(prefix), Some(id), Some(secret), Some(fp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(PkiError::MalformedToken(
                "expected ffrtmp1.<id>.<secret>.<ca_fingerprint>",
            ));
        };
        if prefix != TOKEN_PREFIX {
            return Err(PkiError::MalformedToken(
                "unknown prefix (expected \"ffrtmp1\")",
            ));
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(PkiError::MalformedToken(
                "token id must be 1..=64 chars of a-z0-9",
            ));
        }
        if secret.len() < 16
            || secret.len() > 128
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PkiError::MalformedToken(
                "secret must be 16..=128 chars of base64url",
            ));
        }
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::MalformedToken(
                "CA fingerprint must be 64 hex chars (SHA-256)",
            ));
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    /// Formats the token as `ffrtmp1.<id>.<secret>.<ca_fingerprint>`.
    pub fn to_string_token(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id, self.secret, self.ca_fingerprint
        )
    }
}

/// One token in `tokens.json`. The secret is stored only as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    id: String,
    /// Lowercase hex SHA-256 of the secret.
    secret_sha256: String,
    created_ms: u64,
    expires_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenStore {
    version: u32,
    tokens: Vec<StoredToken>,
}

fn load_token_store(path: &Path) -> Result<TokenStore, PkiError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(TokenStore {
                version: 1,
                tokens: Vec::new(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let store: TokenStore = serde_json::from_str(&text).map_err(|e| PkiError::TokenStore {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if store.version != 1 {
        return Err(PkiError::TokenStore {
            path: path.to_path_buf(),
            reason: format!("unsupported version {}", store.version),
        });
    }
    Ok(store)
}

/// Create a token valid for `ttl` from `now_ms`, record it in `dir/tokens.json` (store only a SHA-256 of the secret, with its expiry; keep other tokens; prune expired ones), return it.
///
/// The CA is loaded from `dir` for its fingerprint. Concurrent calls on the
/// same directory may lose one of the new tokens (last writer wins); the file
/// itself is always replaced atomically.
pub fn create_join_token(dir: &Path, ttl: Duration, now_ms: u64) -> Result<JoinToken, PkiError> {
    let ca = CertificateAuthority::load(dir)?;
    let path = dir.join(TOKENS_FILE);
    let mut store = load_token_store(&path)?;
    store.tokens.retain(|t| t.expires_ms > now_ms);

    let id_bytes: [u8; TOKEN_ID_BYTES] = random_bytes()?;
    let secret_bytes: [u8; TOKEN_SECRET_BYTES] = random_bytes()?;
    let token = JoinToken {
        id: hex(&id_bytes),
        secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes),
        ca_fingerprint: ca.fingerprint(),
    };
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    store.tokens.retain(|t| t.id != token.id);
    store.tokens.push(StoredToken {
        id: token.id.clone(),
        secret_sha256: hex(&sha256(token.secret.as_bytes())),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(ttl_ms),
    });
    store.version = 1;
    let json = serde_json::to_string_pretty(&store).map_err(|e| PkiError::TokenStore {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&path, json.as_bytes(), 0o600, true)?;
    tracing::info!(token_id = %token.id, ttl_ms, "join token created");
    Ok(token)
}

/// Check a presented token against `dir/tokens.json`: known id, secret hash matches (constant-time compare, e.g. `ring::constant_time` or comparing hashes), not expired, fingerprint equals this CA's. Reusable until expiry.
///
/// The hashes are compared in constant time. The fingerprint is compared
/// with that of `dir/ca.pem`.
pub fn verify_join_token(dir: &Path, token: &JoinToken, now_ms: u64) -> Result<(), PkiError> {
    let store = load_token_store(&dir.join(TOKENS_FILE))?;
    let presented = hex(&sha256(token.secret.as_bytes()));
    let Some(stored) = store.tokens.iter().find(|t| t.id == token.id) else {
        return Err(PkiError::UnknownToken {
            id: token.id.clone(),
        });
    };
    if !ct_eq(presented.as_bytes(), stored.secret_sha256.as_bytes()) {
        return Err(PkiError::TokenSecretMismatch {
            id: token.id.clone(),
        });
    }
    if now_ms >= stored.expires_ms {
        return Err(PkiError::TokenExpired {
            id: token.id.clone(),
            expires_ms: stored.expires_ms,
        });
    }
    let ca_pem = read_to_string(&dir.join(CA_CERT_FILE))?;
    let ca_fingerprint = fingerprint_pem(&ca_pem)?;
    if !ct_eq(
        token.ca_fingerprint.to_ascii_lowercase().as_bytes(),
        ca_fingerprint.as_bytes(),
    ) {
        return Err(PkiError::TokenFingerprintMismatch {
            id: token.id.clone(),
            token_fingerprint: token.ca_fingerprint.clone(),
            ca_fingerprint,
        });
    }
    Ok(())
}
