//! The FFmpeg encoders a job may use, by family, and how each is driven.
//!
//! Four families: software (the codec's own library encoder, what
//! [`Codec::encoder`] names), NVIDIA NVENC, Intel Quick Sync (QSV) and
//! VAAPI. For each encoder this module knows the codec it encodes, the
//! presets it accepts (the codec's software presets, mapped, plus the
//! family's own names), its CRF (constant quality) range, the pixel formats
//! it takes, and the argv that drives it: device setup before the inputs,
//! filters that upload frames to the device, rate control after `-c:v`.
//!
//! It also decides which encoder a job uses on a node ([`resolve`]) and what
//! placement needs of a node for that ([`requirement`], [`satisfies`]); the
//! two agree by construction (a property test checks it).
//!
//! Pure: no I/O, no clock. `crate::ffmpeg` builds its argv through it and
//! probes the encoders it lists.

use crate::model::{Codec, EncodeParams, HardwarePref};

/// An encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// libx264, libx265, libvpx-vp9, libsvtav1: the CPU.
    Software,
    /// NVIDIA NVENC (`*_nvenc`): needs the NVIDIA driver (`libcuda`).
    Nvenc,
    /// Intel Quick Sync Video (`*_qsv`): needs oneVPL/Media SDK and an Intel GPU.
    Qsv,
    /// VAAPI (`*_vaapi`): needs a DRM render node and a VA driver.
    Vaapi,
}

impl Family {
    /// Every family, software first.
    pub const ALL: [Family; 4] = [Family::Software, Family::Nvenc, Family::Qsv, Family::Vaapi];

    /// The family's name in docs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Software => "software",
            Family::Nvenc => "nvenc",
            Family::Qsv => "qsv",
            Family::Vaapi => "vaapi",
        }
    }

    /// Whether the family runs on a hardware device.
    pub fn is_hardware(self) -> bool {
        self != Family::Software
    }

    /// The family's own preset names, accepted as they are with an explicit
    /// encoder of the family (beside the codec's software presets, which are
    /// mapped). VAAPI has none: it has a compression level.
    pub fn native_presets(self) -> &'static [&'static str] {
        match self {
            Family::Software | Family::Vaapi => &[],
            Family::Nvenc => NVENC_PRESETS,
            Family::Qsv => QSV_PRESETS,
        }
    }
}

/// One encoder FFmpeg may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoder {
    /// FFmpeg's name for it (`-c:v`).
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// The codec it encodes.
    pub codec: Codec,
}

/// Every encoder a job may name, software first, then by family (NVENC, QSV,
/// VAAPI): the order hardware is chosen in.
pub const ENCODERS: [Encoder; 13] = [
    enc("libx264", Family::Software, Codec::H264),
    enc("libx265", Family::Software, Codec::H265),
    enc("libvpx-vp9", Family::Software, Codec::Vp9),
    enc("libsvtav1", Family::Software, Codec::Av1),
    enc("h264_nvenc", Family::Nvenc, Codec::H264),
    enc("hevc_nvenc", Family::Nvenc, Codec::H265),
    enc("av1_nvenc", Family::Nvenc, Codec::Av1),
    enc("h264_qsv", Family::Qsv, Codec::H264),
    enc("hevc_qsv", Family::Qsv, Codec::H265),
    enc("av1_qsv", Family::Qsv, Codec::Av1),
    enc("h264_vaapi", Family::Vaapi, Codec::H264),
    enc("hevc_vaapi", Family::Vaapi, Codec::H265),
    enc("av1_vaapi", Family::Vaapi, Codec::Av1),
];

const fn enc(name: &'static str, family: Family, codec: Codec) -> Encoder {
    Encoder {
        name,
        family,
        codec,
    }
}

/// NVENC's presets, fastest first.
const NVENC_PRESETS: &[&str] = &["p1", "p2", "p3", "p4", "p5", "p6", "p7"];
/// QSV's presets, fastest first.
const QSV_PRESETS: &[&str] = &[
    "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
];

/// The VAAPI render node the `*_vaapi` encoders open.
pub const VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// The output pixel formats a job may ask for (`pix_fmt`). 8-bit and 10-bit
/// 4:2:0: what every family here encodes (bar 10-bit H.264 on hardware).
pub const PIX_FMTS: [&str; 2] = ["yuv420p", "yuv420p10le"];

/// The pixel format when a job names none.
pub const DEFAULT_PIX_FMT: &str = "yuv420p";

/// The encoder called `name`, if it is one of [`ENCODERS`].
pub fn lookup(name: &str) -> Option<&'static Encoder> {
    ENCODERS.iter().find(|e| e.name == name)
}

/// The codec's software encoder.
pub fn software(codec: Codec) -> &'static Encoder {
    // Every codec has exactly one software entry (a unit test checks it).
    ENCODERS
        .iter()
        .find(|e| e.family == Family::Software && e.codec == codec)
        .unwrap_or(&ENCODERS[0])
}

/// The hardware encoders for `codec`, in the order they are preferred.
pub fn hardware(codec: Codec) -> impl Iterator<Item = &'static Encoder> {
    ENCODERS
        .iter()
        .filter(move |e| e.family.is_hardware() && e.codec == codec)
}

/// The encoder a job's encode runs with: the one named in
/// [`EncodeParams::encoder`] (set by the request, or by the worker through
/// [`resolve`]), else the codec's software encoder.
pub fn chosen(e: &EncodeParams) -> Encoder {
    e.encoder
        .as_deref()
        .and_then(lookup)
        .copied()
        .unwrap_or(*software(e.codec))
}

impl Encoder {
    /// The presets this encoder accepts: the codec's software presets
    /// (mapped, [`Encoder::preset_arg`]), then the family's own.
    pub fn presets(&self) -> Vec<&'static str> {
        let mut all = crate::spec::presets(self.codec).to_vec();
        for p in self.family.native_presets() {
            if !all.contains(p) {
                all.push(p);
            }
        }
        all
    }

    /// The CRF (constant-quality) values this encoder takes, inclusive:
    /// `-crf` for software, NVENC's `-cq`, QSV's `-global_quality`,
    /// VAAPI's `-qp`.
    pub fn crf_range(&self) -> (u32, u32) {
        match (self.family, self.codec) {
            (Family::Software, Codec::H264 | Codec::H265) => (0, 51),
            (Family::Software, Codec::Vp9 | Codec::Av1) => (0, 63),
            // `-cq 0` means "automatic", not a quality.
            (Family::Nvenc, _) => (1, 51),
            (Family::Qsv, _) => (1, 51),
            (Family::Vaapi, Codec::Av1) => (0, 255),
            (Family::Vaapi, _) => (0, 52),
        }
    }

    /// Whether the encoder takes `pix_fmt` (one of [`PIX_FMTS`]): every one
    /// does 8-bit; 10-bit except H.264 on hardware.
    pub fn takes_pix_fmt(&self, pix_fmt: &str) -> bool {
        match pix_fmt {
            "yuv420p" => true,
            "yuv420p10le" => !(self.family.is_hardware() && self.codec == Codec::H264),
            _ => false,
        }
    }

    /// The preset argument for `preset` (validated against
    /// [`Encoder::presets`]): the flag and its value. x264/x265 presets map
    /// to NVENC `p1`…`p7` (`veryfast` → `p2`), to the QSV preset of the same
    /// name (`ultrafast`/`superfast` → `veryfast`) and to a VAAPI
    /// compression level (7 fastest … 1 best); SVT-AV1's 0…13 and vp9's
    /// deadlines map on the same scale. vp9 in software is driven by
    /// `-deadline`/`-cpu-used` instead ([`Encoder::video_args`]).
    pub fn preset_arg(&self, preset: &str) -> (&'static str, String) {
        if self.family.native_presets().contains(&preset) {
            return ("-preset", preset.to_string());
        }
        // Speed on a 1 (slowest, best) … 7 (fastest) scale.
        let speed = speed(self.codec, preset);
        match self.family {
            Family::Software => ("-preset", preset.to_string()),
            Family::Nvenc => ("-preset", format!("p{}", 8 - speed)),
            Family::Qsv => ("-preset", QSV_PRESETS[usize::from(7 - speed)].to_string()),
            Family::Vaapi => ("-compression_level", speed.to_string()),
        }
    }

    /// Device setup that goes before the inputs (global options).
    pub fn device_args(&self) -> &'static [&'static str] {
        match self.family {
            Family::Software | Family::Nvenc => &[],
            Family::Qsv => &["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"],
            Family::Vaapi => &["-vaapi_device", VAAPI_DEVICE],
        }
    }

    /// Filters appended to the video filter chain: QSV and VAAPI encode
    /// frames in device memory, uploaded as NV12 (8-bit) or P010 (10-bit).
    pub fn upload_filter(&self, pix_fmt: &str) -> Option<String> {
        let sw = if pix_fmt == "yuv420p10le" {
            "p010le"
        } else {
            "nv12"
        };
        match self.family {
            Family::Software | Family::Nvenc => None,
            Family::Qsv => Some(format!("format={sw},hwupload=extra_hw_frames=64")),
            Family::Vaapi => Some(format!("format={sw},hwupload")),
        }
    }

    /// `-c:v` and everything after it that drives this encoder for `e`:
    /// preset, rate control (bitrate: `-b:v/-maxrate/-bufsize`; CRF:
    /// `-crf`, `-rc vbr -cq N`, `-global_quality N`, `-rc_mode CQP -qp N`)
    /// and pixel format (`-pix_fmt`, except where frames are uploaded).
    /// `container` is the output muxer (HEVC is tagged `hvc1` in MP4/MOV).
    pub fn video_args(&self, e: &EncodeParams, container: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = vec!["-c:v".into(), self.name.into()];
        let kbps = u64::from(e.bitrate_kbps);
        let bitrate = |a: &mut Vec<String>, capped: bool| {
            a.extend(["-b:v".into(), format!("{kbps}k")]);
            if capped {
                a.extend([
                    "-maxrate".into(),
                    format!("{kbps}k"),
                    "-bufsize".into(),
                    format!("{}k", kbps * 2),
                ]);
            }
        };
        if self.family == Family::Software && self.codec == Codec::Vp9 {
            let (deadline, cpu_used) = vp9_speed(&e.preset);
            a.extend(
                ["-deadline", deadline, "-cpu-used", cpu_used, "-row-mt", "1"].map(String::from),
            );
        } else {
            let (flag, value) = self.preset_arg(&e.preset);
            a.extend([flag.to_string(), value]);
        }
        match (e.crf, self.family) {
            (None, Family::Software) => {
                bitrate(&mut a, matches!(self.codec, Codec::H264 | Codec::H265))
            }
            (None, _) => bitrate(&mut a, true),
            (Some(q), Family::Software) => {
                a.extend(["-crf".into(), q.to_string()]);
                if self.codec == Codec::Vp9 {
                    // libvpx-vp9's constant-quality mode.
                    a.extend(["-b:v".into(), "0".into()]);
                }
            }
            (Some(q), Family::Nvenc) => a.extend(
                ["-rc", "vbr", "-cq", q.to_string().as_str(), "-b:v", "0"].map(String::from),
            ),
            (Some(q), Family::Qsv) => a.extend(["-global_quality".into(), q.to_string()]),
            (Some(q), Family::Vaapi) => {
                a.extend(["-rc_mode", "CQP", "-qp", q.to_string().as_str()].map(String::from))
            }
        }
        if self.name == "libx265" {
            a.extend(["-x265-params", "log-level=error"].map(String::from));
        }
        // Apple players want `hvc1` in MP4/MOV.
        if self.codec == Codec::H265 && matches!(container, Some("mp4" | "mov")) {
            a.extend(["-tag:v", "hvc1"].map(String::from));
        }
        let pix_fmt = e.pix_fmt.as_deref().unwrap_or(DEFAULT_PIX_FMT);
        if self.upload_filter(pix_fmt).is_none() {
            a.extend(["-pix_fmt".into(), self.encoder_pix_fmt(pix_fmt).to_string()]);
        }
        a
    }

    /// The pixel format handed to an encoder that takes system-memory
    /// frames: NVENC takes 10-bit 4:2:0 as P010, not planar.
    pub fn encoder_pix_fmt<'a>(&self, pix_fmt: &'a str) -> &'a str {
        match (self.family, pix_fmt) {
            (Family::Nvenc, "yuv420p10le") => "p010le",
            _ => pix_fmt,
        }
    }
}

/// `-deadline` and `-cpu-used` for a validated vp9 preset.
fn vp9_speed(preset: &str) -> (&'static str, &'static str) {
    match preset {
        "best" => ("best", "0"),
        "good" => ("good", "4"),
        _ => ("realtime", "8"),
    }
}

/// A software preset's speed on a 1 (slowest, best) … 7 (fastest) scale.
/// Unknown names are the middle (4).
fn speed(codec: Codec, preset: &str) -> u8 {
    match codec {
        Codec::H264 | Codec::H265 => match preset {
            "ultrafast" | "superfast" => 7,
            "veryfast" => 6,
            "faster" | "fast" => 5,
            "slow" => 3,
            "slower" => 2,
            "veryslow" => 1,
            _ => 4,
        },
        Codec::Vp9 => match preset {
            "realtime" => 6,
            "best" => 1,
            _ => 4,
        },
        // SVT-AV1 0 (slowest) … 13 (fastest).
        Codec::Av1 => preset
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 13)
            .map_or(4, |n| 1 + n / 2),
    }
}

/// The encoders a job with these settings may run with, best first:
/// the one it names; else, for `required`, the codec's hardware encoders
/// that take its pixel format; for `preferred`, those and then software;
/// for `none`, software.
pub fn candidates(e: &EncodeParams) -> Vec<&'static Encoder> {
    if let Some(name) = e.encoder.as_deref() {
        return lookup(name).into_iter().collect();
    }
    let pix_fmt = e.pix_fmt.as_deref().unwrap_or(DEFAULT_PIX_FMT);
    let hw = || hardware(e.codec).filter(|h| h.takes_pix_fmt(pix_fmt));
    match e.hardware {
        HardwarePref::None => vec![software(e.codec)],
        HardwarePref::Required => hw().collect(),
        HardwarePref::Preferred => hw().chain([software(e.codec)]).collect(),
    }
}

/// The encoder a node whose working encoders are `available` runs the job
/// with ([`candidates`], first one available), or `None` if it cannot run
/// it.
pub fn resolve<'a>(e: &EncodeParams, available: &'a [String]) -> Option<&'a str> {
    candidates(e)
        .into_iter()
        .find_map(|c| available.iter().find(|a| *a == c.name))
        .map(String::as_str)
}

/// What placement needs of a node for this job, as one short key (jobs with
/// the same key wait in the same queue): an encoder name where exactly one
/// encoder will do, else `hw:<codec>[:<pix_fmt>]` (`required`) or
/// `hw?:<codec>[:<pix_fmt>]` (`preferred`; any of those, or software).
/// [`satisfies`] reads it back.
pub fn requirement(e: &EncodeParams) -> String {
    let pix_fmt = e.pix_fmt.as_deref().unwrap_or(DEFAULT_PIX_FMT);
    let suffix = if pix_fmt == DEFAULT_PIX_FMT {
        String::new()
    } else {
        format!(":{pix_fmt}")
    };
    match (e.encoder.as_deref(), e.hardware) {
        (Some(name), _) => name.to_string(),
        (None, HardwarePref::None) => software(e.codec).name.to_string(),
        (None, HardwarePref::Required) => format!("hw:{}{suffix}", e.codec.as_str()),
        (None, HardwarePref::Preferred) => {
            if hardware(e.codec).any(|h| h.takes_pix_fmt(pix_fmt)) {
                format!("hw?:{}{suffix}", e.codec.as_str())
            } else {
                software(e.codec).name.to_string()
            }
        }
    }
}

/// Whether a node with working encoders `available` meets `requirement`
/// (made by [`requirement`]): exactly when [`resolve`] finds it an encoder.
pub fn satisfies(requirement: &str, available: &[String]) -> bool {
    let has = |name: &str| available.iter().any(|a| a == name);
    let (fallback, rest) = if let Some(rest) = requirement.strip_prefix("hw?:") {
        (true, rest)
    } else if let Some(rest) = requirement.strip_prefix("hw:") {
        (false, rest)
    } else {
        return has(requirement);
    };
    let (codec, pix_fmt) = rest.split_once(':').unwrap_or((rest, DEFAULT_PIX_FMT));
    let Some(codec) = Codec::ALL.into_iter().find(|c| c.as_str() == codec) else {
        return false;
    };
    hardware(codec).any(|h| h.takes_pix_fmt(pix_fmt) && has(h.name))
        || (fallback && has(software(codec).name))
}

#[cfg(test)]
mod tests;
