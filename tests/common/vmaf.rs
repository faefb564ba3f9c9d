//! `ffrtmp-vmaf` for the tests that need VMAF, found or built as the demo
//! does (`ffrtmp_shared::ffmpeg_check::ensure_vmaf`): from `runtime/vmaf/`
//! (a package outside the workspace: libvmaf builds with meson, ninja and
//! nasm, installed with apt-get when missing and root) the first time a
//! test asks for it.

use std::path::PathBuf;
use std::sync::OnceLock;

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of a release build of `ffrtmp-vmaf` (built now if needed).
/// Panics with the reason and the commands when there is none.
pub fn vmaf_bin() -> PathBuf {
    match BUILT.get_or_init(ffrtmp_shared::ffmpeg_check::ensure_vmaf) {
        Ok(bin) => bin.clone(),
        Err(e) => panic!(
            "these tests need ffrtmp-vmaf: {e}. Run: {}",
            ffrtmp_shared::ffmpeg_check::vmaf_commands()
        ),
    }
}
