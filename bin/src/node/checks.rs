//! The checks run on the flags before anything starts: operator mistakes
//! (kill grace, media roots under system directories) refused with a clear
//! error, the power configuration checked, and the open-file limit raised
//! for the HTTP connections.

use std::path::PathBuf;

use super::{NodeFlags, PowerSourceFlag, Role};

pub(super) fn check_kill_grace(f: &NodeFlags) -> anyhow::Result<()> {
    if !(0.0..=600.0).contains(&f.kill_grace_s) {
        anyhow::bail!("--kill-grace-s must be between 0 and 600");
    }
    // The standalone's own worker holds the lease it grants; a cluster
    // worker learns the lease from its master and refuses jobs if it is too
    // short for its kill grace.
    if matches!(f.role, Role::Standalone) && f.kill_grace_s * 1000.0 * 2.0 > f.lease_ms as f64 {
        anyhow::bail!(
            "--kill-grace-s ({}) must be at most half of --lease-ms ({} ms): a worker stops its jobs one grace before its lease ends",
            f.kill_grace_s,
            f.lease_ms
        );
    }
    Ok(())
}

/// Operator mistakes refused at start, each naming its flag, variable and
/// key: an empty API key (an unset secret in a template would leave the API
/// open), and media roots that would hand the host or the node's own files
/// to API clients (`check_media_roots`).
pub(super) fn check_operator_mistakes(f: &NodeFlags) -> anyhow::Result<()> {
    if f.api_key.as_deref().is_some_and(str::is_empty) {
        anyhow::bail!(
            "--api-key is empty (FFRTMP_API_KEY, `api_key` in the config file): an empty key \
             would leave the HTTP API open to anyone. Set a key, or leave it out entirely to \
             run without one"
        );
    }
    check_media_roots(f)
}

/// Directories no media root may be or contain; no media root may lie in
/// one either, but for `/var/lib` (whose subdirectories hold applications'
/// data, a node's data dir and its `media` folder among them).
pub(super) const SYSTEM_DIRS: [&str; 7] =
    ["/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/var/lib"];

/// Refuses a media root that is `/`, is, contains or (but for `/var/lib`)
/// lies in a system directory, or is, contains or lies in the data dir (but
/// for `<data-dir>/media`, the default root), unless
/// `--allow-system-media-root`. Paths are compared with symlinks resolved.
pub(super) fn check_media_roots(f: &NodeFlags) -> anyhow::Result<()> {
    use std::path::Path;
    if f.allow_system_media_root {
        return Ok(());
    }
    let data = resolved(&f.data_dir);
    let data_media = data.join("media");
    for root in &f.media_roots {
        let r = resolved(root);
        let system = SYSTEM_DIRS.iter().map(Path::new);
        let why = if r == Path::new("/") {
            "it is `/`, the whole file system".to_string()
        } else if let Some(sys) = system.clone().find(|sys| sys.starts_with(&r)) {
            format!("it is or contains the system directory {}", sys.display())
        } else if let Some(sys) = system
            .filter(|sys| *sys != Path::new("/var/lib"))
            .find(|sys| r.starts_with(sys))
        {
            format!("it lies in the system directory {}", sys.display())
        } else if data.starts_with(&r) {
            format!(
                "it is or contains the node's data directory {} (--data-dir: the job store, \
                 the node's keys and secret)",
                data.display()
            )
        } else if r.starts_with(&data) && !r.starts_with(&data_media) {
            format!(
                "it lies in the node's data directory {} (only {} is meant for media)",
                data.display(),
                data_media.display()
            )
        } else {
            continue;
        };
        anyhow::bail!(
            "--media-root {} (FFRTMP_MEDIA_ROOT, `media_root` in the config file) is refused: \
             {why}. Every file in a media root can be read and overwritten through the API; \
             name a directory of media files, or pass --allow-system-media-root if you mean it",
            root.display()
        );
    }
    Ok(())
}

/// `p` absolute, with symlinks resolved as far as it exists.
pub(super) fn resolved(p: &std::path::Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(mut real) = existing.canonicalize() {
            real.extend(missing.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// Raise the soft limit on open files to the hard one and log both: the
/// HTTP API's connections, the store, QUIC and every job's pipes share them
/// (docs/OPERATIONS.md, "Open files").
pub(super) fn raise_open_file_limit(max_http_connections: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    let now = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(soft_was = soft, soft = hard, hard, "open-file limit raised");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        }
    } else {
        tracing::info!(soft, hard, "open-file limit");
        soft
    };
    if max_http_connections.saturating_mul(2) > now {
        tracing::warn!(
            max_http_connections,
            open_file_limit = now,
            "--max-http-connections is not well under the open-file limit: a flood of \
             connections could leave jobs without descriptors"
        );
    }
}

/// The checks of a node's flags that need nothing outside this process (no
/// FFmpeg; the disk only to resolve paths): before a node starts, and for
/// `--print-config`.
pub(super) fn check_flags(f: &NodeFlags) -> anyhow::Result<()> {
    check_operator_mistakes(f)?;
    match f.role {
        Role::Master if f.pki.is_none() => anyhow::bail!(
            "--role master needs --pki DIR (create it with: ffrtmp-node pki init --dir DIR)"
        ),
        Role::Worker if f.master.is_none() => {
            anyhow::bail!("--role worker needs --master HOST:PORT")
        }
        _ => {}
    }
    check_kill_grace(f)?;
    power_config(f)?;
    Ok(())
}

/// The worker's power configuration from the flags (checked).
pub(super) fn power_config(f: &NodeFlags) -> anyhow::Result<ffrtmp_actors::power::PowerConfig> {
    use ffrtmp_actors::power::{PowerChoice, PowerConfig};
    let mut p = PowerConfig::new(ffrtmp_actors::node::cores());
    p.choice = match f.power_source {
        PowerSourceFlag::Auto => PowerChoice::Auto,
        PowerSourceFlag::Rapl => PowerChoice::Rapl,
        PowerSourceFlag::Nvml => PowerChoice::Nvml,
        PowerSourceFlag::Estimate => PowerChoice::Estimate,
    };
    p.powercap_root = f.powercap_root.clone();
    p.sample_hz = f.power_sample_hz;
    if let Some(w) = f.estimate_idle_watts {
        p.estimate.idle_watts = w;
    }
    if let Some(w) = f.estimate_max_watts {
        p.estimate.max_watts = w;
    }
    p.validate().map_err(anyhow::Error::msg)?;
    Ok(p)
}
