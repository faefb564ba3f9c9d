//! What the package's two binaries share: the demo (`ffrtmp demo`, and its
//! alias `ffrtmp-node demo`) and finding FFmpeg.
#![forbid(unsafe_code)]

pub mod demo;
pub mod ffmpeg_check;
