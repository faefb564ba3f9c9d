//! What the package's two binaries share: the demo of `ffrtmp-node demo`
//! (the demo itself is `ffrtmp_cli::demo`, shared with `ffrtmp demo`) and
//! finding FFmpeg (`ffrtmp_cli::ffmpeg_check`, re-exported).
#![forbid(unsafe_code)]

pub mod demo;
pub use ffrtmp_cli::ffmpeg_check;
