//! The file layout of the PKI (the names below; the table is in [the module
//! docs](super)) and the careful reads and writes of those files: atomic
//! replacement, create-never-replace, private modes for keys.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::crypto::{hex, random_bytes};
use super::error::{io_err, PkiError};

/// CA certificate file name, in the master's PKI directory and in a node's
/// data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file name (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// Master certificate file name.
pub const MASTER_CERT_FILE: &str = "master.pem";
/// Master private key file name (mode 0600).
pub const MASTER_KEY_FILE: &str = "master.key";
/// Join token store file name.
pub const TOKENS_FILE: &str = "tokens.json";
/// Node certificate file name in a node's data directory.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Node private key file name in a node's data directory (mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";

/// Reads a file to a string; a missing file is [`PkiError::MissingFile`].
pub(super) fn read_to_string(path: &Path) -> Result<String, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PkiError::MissingFile {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Creates `dir` (and parents) if needed; a directory we create gets mode 0700.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes `path` atomically: a temporary file in the same directory, created
/// with `mode`, written and synced, then moved into place. With
/// `overwrite == false` an existing `path` is an error
/// ([`PkiError::AlreadyInitialized`]) and is left untouched.
pub(super) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: [u8; 8] = random_bytes()?;
    let tmp = dir.join(format!(".{file_name}.tmp-{}", hex(&suffix)));

    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        if overwrite {
            fs::rename(&tmp, path).map_err(io_err(path))?;
        } else {
            // link(2) fails if the target exists: an atomic "create, never replace".
            match fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(PkiError::AlreadyInitialized {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => return Err(io_err(path)(e)),
            }
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable; failure to sync a directory is not fatal.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
pub(super) fn warn_if_key_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "private key file is accessible by group or others; it should be mode 0600"
            );
        }
    }
}

#[cfg(not(unix))]
pub(super) fn warn_if_key_readable_by_others(_path: &Path) {}
