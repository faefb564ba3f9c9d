//! `ffrtmp-vmaf` for the tests that need VMAF: built from `runtime/vmaf/`
//! (a package outside the workspace: libvmaf builds with meson, ninja and
//! nasm) the first time a test asks for it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static BUILT: OnceLock<PathBuf> = OnceLock::new();

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The path of a release build of `ffrtmp-vmaf` (built now if needed).
/// Panics, naming the packages, when meson, ninja or nasm is missing.
pub fn vmaf_bin() -> PathBuf {
    BUILT
        .get_or_init(|| {
            let missing: Vec<&str> = ["meson", "ninja", "nasm"]
                .into_iter()
                .filter(|t| !have(t))
                .collect();
            assert!(
                missing.is_empty(),
                "{} not found: building ffrtmp-vmaf (libvmaf) needs them. Install them with: \
                 sudo apt-get install -y meson ninja-build nasm",
                missing.join(", ")
            );
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/vmaf");
            let target = dir.join("target");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .stdin(Stdio::null())
                .status()
                .expect("run cargo to build ffrtmp-vmaf");
            assert!(status.success(), "building ffrtmp-vmaf failed");
            let bin = target.join("release/ffrtmp-vmaf");
            assert!(bin.is_file(), "no {}", bin.display());
            bin
        })
        .clone()
}
