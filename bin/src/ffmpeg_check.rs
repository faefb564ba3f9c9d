//! Finding FFmpeg, and installing it for the demo where we may.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Resolve a program name through `PATH` (or accept an explicit path).
pub fn find(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The program's path, or an error that says exactly what to run.
pub fn locate(program: &Path) -> anyhow::Result<PathBuf> {
    find(program).ok_or_else(|| {
        anyhow::anyhow!(
            "{} not found. Install FFmpeg with:  sudo apt-get install -y ffmpeg  (or pass --ffmpeg/--ffprobe PATH)",
            program.display()
        )
    })
}

/// Install FFmpeg with apt-get when it is missing and we are root; otherwise
/// say what to run.
pub fn ensure_installed() -> anyhow::Result<()> {
    if find(Path::new("ffmpeg")).is_some() && find(Path::new("ffprobe")).is_some() {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    let apt = find(Path::new("apt-get"));
    match (root, apt) {
        (true, Some(apt)) => {
            eprintln!("FFmpeg is missing: installing it with apt-get (this takes a minute)...");
            let ok = Command::new(&apt)
                .arg("update")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
                && Command::new(&apt)
                    .args(["install", "-y", "ffmpeg"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
            if !ok {
                anyhow::bail!("apt-get could not install ffmpeg; run: apt-get update && apt-get install -y ffmpeg");
            }
            Ok(())
        }
        _ => anyhow::bail!(
            "FFmpeg is not installed. Run:  sudo apt-get update && sudo apt-get install -y ffmpeg  and try again"
        ),
    }
}
