//! Small valid specs and argv helpers for the unit tests of this crate and
//! of the crates above it (feature `test-util`; never in a binary).

use std::collections::BTreeMap;

use crate::ffmpeg::{FfmpegCommand, ProgressParser, ProgressUpdate};
use crate::model::{Codec, EncodeParams, Input, JobSpec, Output, Priority, ResourceLimits};

/// A small valid spec (640x360 H.264, 1 s of testsrc to `-f null`); tests
/// adjust the fields they care about.
pub fn test_spec() -> JobSpec {
    JobSpec {
        scenario: None,
        encode: EncodeParams::new(640, 360, 30, Codec::H264, 800, "veryfast".into()),
        input: Input::Testsrc { duration_s: 1.0 },
        output: Output::Null,
        priority: Priority::Medium,
        resource_limits: ResourceLimits::default(),
        max_retries: 3,
        overwrite: false,
        quality: None,
        labels: BTreeMap::new(),
        experiment: None,
    }
}

/// A tiny spec (160x90, 10 fps, 200 kb/s, the codec's default preset) for
/// runs of real FFmpeg.
pub fn small_spec(codec: Codec, input: Input, output: Output) -> JobSpec {
    JobSpec {
        encode: EncodeParams::new(
            160,
            90,
            10,
            codec,
            200,
            crate::spec::default_preset(codec).to_string(),
        ),
        input,
        output,
        ..test_spec()
    }
}

/// Half a second of testsrc.
pub fn testsrc() -> Input {
    Input::Testsrc { duration_s: 0.5 }
}

/// A command's argv as strings.
pub fn args(cmd: &FfmpegCommand) -> Vec<String> {
    cmd.args_lossy()
}

/// The value following `flag` (first occurrence).
pub fn after(a: &[String], flag: &str) -> Option<String> {
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1))
        .cloned()
}

/// Feeds `text` to `p` line by line; the updates it completes.
pub fn feed(p: &mut ProgressParser, text: &str) -> Vec<ProgressUpdate> {
    text.lines().filter_map(|l| p.push_line(l)).collect()
}
