//! What the package's two binaries share: the demo (`ffrtmp demo`, and its
//! alias `ffrtmp-node demo`) and finding FFmpeg.

pub mod demo;
pub mod ffmpeg_check;
