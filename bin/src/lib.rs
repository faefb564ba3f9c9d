//! What the package's two binaries share: the demo of `ffrtmp-node demo`
//! (the demo itself is `ffrtmp_cli::demo`, shared with `ffrtmp demo`) and
//! finding FFmpeg (`ffrtmp_cli::ffmpeg_check`, re-exported).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, unsafe_op_in_unsafe_fn)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
pub use ffrtmp_cli::ffmpeg_check;
