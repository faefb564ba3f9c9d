//! The scenario presets (`1080p60-h265`, ...) and the per-codec presets and
//! default bitrates they and requests without a scenario take.

use super::*;

pub(super) const X26X_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];
pub(super) const VP9_PRESETS: &[&str] = &["realtime", "good", "best"];
pub(super) const AV1_PRESETS: &[&str] = &[
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13",
];

/// Resolution/rate parts of the scenario names: (name, width, height, fps).
pub(super) const RESOLUTIONS: [(&str, u32, u32, u32); 5] = [
    ("480p30", 854, 480, 30),
    ("720p30", 1280, 720, 30),
    ("1080p30", 1920, 1080, 30),
    ("1080p60", 1920, 1080, 60),
    ("2160p30", 3840, 2160, 30),
];

/// Scenario bitrates in kbit/s, indexed like [`RESOLUTIONS`], per codec.
pub(super) fn scenario_bitrates(codec: Codec) -> [u32; 5] {
    match codec {
        Codec::H264 => [1500, 3000, 5000, 7500, 16000],
        Codec::H265 => [900, 1800, 3000, 4500, 10000],
        Codec::Vp9 => [1100, 2200, 3800, 5600, 12000],
        Codec::Av1 => [800, 1600, 2700, 4000, 9000],
    }
}

/// The encoder presets accepted for `codec`, fastest first for x264/x265 and vp9.
pub fn presets(codec: Codec) -> &'static [&'static str] {
    match codec {
        Codec::H264 | Codec::H265 => X26X_PRESETS,
        Codec::Vp9 => VP9_PRESETS,
        Codec::Av1 => AV1_PRESETS,
    }
}

/// The preset used when a request names none.
pub fn default_preset(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 | Codec::H265 => "veryfast",
        Codec::Vp9 => "realtime",
        Codec::Av1 => "10",
    }
}

/// The bitrate (kbit/s) used when a request names none: the scenario table for
/// scenario shapes, otherwise scaled from 1080p30 by pixel count^0.75 and
/// (fps/30)^0.6, times a per-codec efficiency factor, rounded to 100 kbit/s.
pub fn default_bitrate_kbps(codec: Codec, width: u32, height: u32, fps: u32) -> u32 {
    if let Some(i) = RESOLUTIONS
        .iter()
        .position(|&(_, w, h, f)| (w, h, f) == (width, height, fps))
    {
        return scenario_bitrates(codec)[i];
    }
    let factor = match codec {
        Codec::H264 => 1.0,
        Codec::Vp9 => 0.75,
        Codec::H265 => 0.6,
        Codec::Av1 => 0.55,
    };
    let pixels = f64::from(width) * f64::from(height) / (1920.0 * 1080.0);
    let kbps = 5000.0 * factor * pixels.powf(0.75) * (f64::from(fps) / 30.0).powf(0.6);
    let rounded = (kbps / 100.0).round() * 100.0;
    // `as` saturates on out-of-range floats; the clamp keeps it in the valid range.
    (rounded as u32).clamp(100, BITRATE_KBPS_RANGE.1)
}

/// Every scenario preset name, e.g. `"1080p60-h265"`.
pub fn scenario_names() -> Vec<String> {
    RESOLUTIONS
        .iter()
        .flat_map(|(res, ..)| {
            Codec::ALL
                .iter()
                .map(move |codec| format!("{res}-{}", codec.as_str()))
        })
        .collect()
}

/// Resolve a preset name to encode parameters.
pub fn scenario(name: &str) -> Option<EncodeParams> {
    let (res, codec) = name.split_once('-')?;
    let codec = Codec::ALL.into_iter().find(|c| c.as_str() == codec)?;
    let &(_, width, height, fps) = RESOLUTIONS.iter().find(|(r, ..)| *r == res)?;
    Some(EncodeParams::new(
        width,
        height,
        fps,
        codec,
        default_bitrate_kbps(codec, width, height, fps),
        default_preset(codec).to_string(),
    ))
}
