//! Finding FFmpeg (and `ffrtmp-vmaf`), and installing them for the demo
//! where we may.

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
    apt_install(&["ffmpeg"]).map_err(|e| {
        anyhow::anyhow!(
            "FFmpeg is not installed ({e}). Run:  sudo apt-get update && sudo apt-get install -y ffmpeg  and try again"
        )
    })
}

/// `apt-get update && apt-get install -y PACKAGES`, when we are root and
/// apt-get exists; `Err` says which of those failed.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root, so not installing it".into());
    }
    let apt = find(Path::new("apt-get")).ok_or("no apt-get on this machine")?;
    eprintln!(
        "{} missing: installing with apt-get (a minute or two)...",
        packages.join(" ")
    );
    let ok = Command::new(&apt)
        .arg("update")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new(&apt)
            .arg("install")
            .arg("-y")
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("apt-get could not install {}", packages.join(" ")))
    }
}

/// The packages building `ffrtmp-vmaf` (libvmaf) needs.
const VMAF_BUILD_PACKAGES: [&str; 3] = ["meson", "ninja-build", "nasm"];

/// The `ffrtmp-vmaf` package in this source tree, when the binary runs from
/// one (`cargo run`).
fn vmaf_source() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtime/vmaf");
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// The exact commands that give a node VMAF.
pub fn vmaf_commands() -> String {
    format!(
        "sudo apt-get install -y {}  &&  cargo build --release --manifest-path runtime/vmaf/Cargo.toml  \
         (then put target/release/ffrtmp-vmaf beside ffrtmp-node, on PATH, or pass --vmaf-bin)",
        VMAF_BUILD_PACKAGES.join(" ")
    )
}

/// An `ffrtmp-vmaf` for the demo: one beside this executable or on PATH, or
/// this source tree's release build; else, as root with apt-get and in a
/// source tree, the build packages installed and the binary built now
/// (a minute or two, once). `Err` says why there is none.
pub fn ensure_vmaf() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    let mut candidates =
        ffrtmp_runtime::quality::vmaf_candidates(None, exe.as_deref(), path.as_deref());
    let source = vmaf_source();
    let built = source.as_ref().map(|d| {
        d.join("target/release")
            .join(ffrtmp_runtime::quality::VMAF_BIN)
    });
    candidates.extend(built.clone());
    if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
        return Ok(found);
    }
    let (Some(dir), Some(built)) = (source, built) else {
        return Err("no ffrtmp-vmaf found, and no source tree to build it from".into());
    };
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find(Path::new("cargo")))
        .ok_or("no cargo to build ffrtmp-vmaf with")?;
    let tools_missing = ["meson", "ninja", "nasm"]
        .iter()
        .any(|t| find(Path::new(t)).is_none());
    if tools_missing {
        apt_install(&VMAF_BUILD_PACKAGES).map_err(|e| {
            format!("meson, ninja or nasm is missing, and they were not installed: {e}")
        })?;
    }
    eprintln!("VMAF: building ffrtmp-vmaf (Netflix libvmaf; once, a minute or two)...");
    let status = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() || !built.is_file() {
        return Err("building ffrtmp-vmaf failed".into());
    }
    Ok(built)
}
