//! [`PkiError`]: everything that can go wrong in the PKI.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the PKI: files, certificates, keys, CSRs and join tokens.
///
/// Token errors never include the token's secret. The distinct token variants
/// are meant for the master's log; a reply to an unauthenticated peer should
/// say no more than "join token rejected".
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `init` found an existing CA (or master) file and will not overwrite it.
    #[error("refusing to overwrite the existing PKI: {path} already exists")]
    AlreadyInitialized {
        /// The file that exists.
        path: PathBuf,
    },
    /// A file that must exist does not.
    #[error("missing file {path}")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A node data directory holds some identity files but not all of them.
    #[error("incomplete node identity in {dir}: {missing} is missing (remove the identity files and join again)")]
    IncompleteIdentity {
        /// The data directory.
        dir: PathBuf,
        /// Name of the missing file.
        missing: &'static str,
    },
    /// A certificate could not be read or parsed.
    #[error("invalid certificate ({what}): {reason}")]
    InvalidCertificate {
        /// Which certificate (usually its file).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A private key could not be read or parsed.
    #[error("invalid private key ({what}): {reason}")]
    InvalidKey {
        /// Which key (usually its file).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A private key does not belong to the certificate next to it.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The key.
        key: String,
        /// The certificate.
        cert: String,
    },
    /// A certificate signing request was refused.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A node id is not a safe name.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The offending id (truncated to 80 chars).
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An extra SAN for the master certificate is neither a DNS name nor an IP address.
    #[error("invalid subject alternative name {0:?}: not a DNS name or IP address")]
    InvalidSan(String),
    /// A join token string is malformed.
    #[error("malformed join token: {0}")]
    MalformedToken(&'static str),
    /// No token with this id is known (or it was pruned after expiring).
    #[error("unknown join token id {id}")]
    UnknownToken {
        /// The presented token id.
        id: String,
    },
    /// The token id is known but the secret is wrong.
    #[error("wrong secret for join token {id}")]
    TokenSecretMismatch {
        /// The presented token id.
        id: String,
    },
    /// The token has expired.
    #[error("join token {id} expired at {expires_ms} ms since the epoch")]
    TokenExpired {
        /// The token id.
        id: String,
        /// Its expiry, milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// The token names another CA than this cluster's.
    #[error(
        "join token {id} is for CA {token_fingerprint}, this cluster's CA is {ca_fingerprint}"
    )]
    TokenFingerprintMismatch {
        /// The token id.
        id: String,
        /// The fingerprint in the token.
        token_fingerprint: String,
        /// This cluster's CA fingerprint.
        ca_fingerprint: String,
    },
    /// The token store file is corrupt.
    #[error("corrupt token store {path}: {reason}")]
    TokenStore {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

/// Maps an I/O error on `path` to [`PkiError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}
