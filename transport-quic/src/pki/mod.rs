//! The cluster PKI: a cluster CA, the master's certificate, node certificates
//! issued from CSRs, join tokens, and the files that hold them.
//!
//! Layout of the master's PKI directory (`ffrtmp-node pki init --dir ./pki`):
//!
//! | file          | content                                   | mode |
//! |---------------|-------------------------------------------|------|
//! | `ca.pem`      | cluster CA certificate (self-signed)      | 0644 |
//! | `ca.key`      | cluster CA private key (PKCS#8)           | 0600 |
//! | `master.pem`  | master certificate, signed by the CA      | 0644 |
//! | `master.key`  | master private key                        | 0600 |
//! | `tokens.json` | join tokens: id, SHA-256 of secret, expiry | 0600 |
//!
//! A worker's data directory holds `node.pem`, `node.key` (0600) and `ca.pem`
//! once it has joined ([`NodeIdentity`]).
//!
//! Join tokens look like `ffrtmp1.<id>.<secret>.<ca_fingerprint>`. The
//! fingerprint is the lowercase hex SHA-256 of the CA certificate's DER; a
//! joining worker, which has no CA certificate yet, pins it to authenticate
//! the master. The master sends its chain as `[master cert, CA cert]`
//! ([`NodeIdentity::cert_chain`]) so that the worker can find the pinned CA in
//! it ([`find_pinned_ca`]).
//!
//! Validity periods: CA 10 years, master certificate 5 years, node
//! certificates about 1 year. All keys are ECDSA P-256.
//!
//! One file per topic: [`PkiError`] (`error.rs`); the file names and careful
//! writes (`files.rs`); certificate parsing, names and fingerprints
//! (`cert.rs`); the CA, `init` and issuing (`ca.rs`); node and master
//! identities (`identity.rs`); join tokens and their store (`token.rs`);
//! small crypto helpers (`crypto.rs`).

mod ca;
mod cert;
mod crypto;
mod error;
mod files;
mod identity;
mod token;

#[cfg(test)]
mod tests;

pub use ca::{init, new_key_and_csr, CertificateAuthority};
pub use cert::{
    find_pinned_ca, fingerprint_der, fingerprint_pem, node_dns_name, node_id_of_cert,
    root_store_from_pem, validate_node_id, MASTER_SERVER_NAME, NODE_DNS_SUFFIX,
};
pub use error::PkiError;
pub use files::{
    CA_CERT_FILE, CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
    TOKENS_FILE,
};
pub use identity::{master_identity, NodeIdentity};
pub use token::{create_join_token, verify_join_token, JoinToken, TOKEN_PREFIX};
