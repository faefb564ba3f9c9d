use super::*;
use proptest::prelude::*;

fn params(codec: Codec) -> EncodeParams {
    EncodeParams::new(
        1280,
        720,
        30,
        codec,
        3000,
        crate::spec::default_preset(codec).to_string(),
    )
}

fn with_encoder(name: &str) -> EncodeParams {
    let e = lookup(name).expect("known encoder");
    EncodeParams {
        encoder: Some(name.into()),
        ..params(e.codec)
    }
}

fn after(a: &[String], flag: &str) -> Option<String> {
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1))
        .cloned()
}

#[test]
fn every_codec_has_one_software_encoder_and_it_is_the_codecs() {
    for codec in Codec::ALL {
        let sw: Vec<_> = ENCODERS
            .iter()
            .filter(|e| e.family == Family::Software && e.codec == codec)
            .collect();
        assert_eq!(sw.len(), 1, "{codec:?}");
        assert_eq!(software(codec).name, codec.encoder());
    }
    // Hardware for each codec but vp9, one per family.
    for codec in [Codec::H264, Codec::H265, Codec::Av1] {
        let families: Vec<Family> = hardware(codec).map(|e| e.family).collect();
        assert_eq!(families, [Family::Nvenc, Family::Qsv, Family::Vaapi]);
    }
    assert_eq!(hardware(Codec::Vp9).count(), 0);
}

/// (encoder, rate control) → the exact arguments after `-c:v <name>`.
#[test]
fn argv_for_every_family_and_rate_control() {
    let cases: [(&str, Option<u32>, &[&str]); 10] = [
        (
            "libx264",
            None,
            &[
                "-preset", "veryfast", "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "6000k",
                "-pix_fmt", "yuv420p",
            ],
        ),
        (
            "libx264",
            Some(23),
            &["-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"],
        ),
        (
            "libvpx-vp9",
            Some(31),
            &[
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-row-mt",
                "1",
                "-crf",
                "31",
                "-b:v",
                "0",
                "-pix_fmt",
                "yuv420p",
            ],
        ),
        (
            "libsvtav1",
            Some(35),
            &["-preset", "10", "-crf", "35", "-pix_fmt", "yuv420p"],
        ),
        (
            "h264_nvenc",
            None,
            &[
                "-preset", "p2", "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "6000k",
                "-pix_fmt", "yuv420p",
            ],
        ),
        (
            "hevc_nvenc",
            Some(28),
            &[
                "-preset", "p2", "-rc", "vbr", "-cq", "28", "-b:v", "0", "-pix_fmt", "yuv420p",
            ],
        ),
        (
            "h264_qsv",
            None,
            &[
                "-preset", "veryfast", "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "6000k",
            ],
        ),
        (
            "hevc_qsv",
            Some(25),
            &["-preset", "veryfast", "-global_quality", "25"],
        ),
        (
            "h264_vaapi",
            None,
            &[
                "-compression_level",
                "6",
                "-b:v",
                "3000k",
                "-maxrate",
                "3000k",
                "-bufsize",
                "6000k",
            ],
        ),
        (
            "av1_vaapi",
            Some(120),
            &["-compression_level", "6", "-rc_mode", "CQP", "-qp", "120"],
        ),
    ];
    for (name, crf, want) in cases {
        let mut e = with_encoder(name);
        e.crf = crf;
        let a = chosen(&e).video_args(&e, None);
        assert_eq!(a[..2], ["-c:v", name]);
        assert_eq!(a[2..], *want, "{name} crf {crf:?}");
    }
}

#[test]
fn device_setup_and_upload_per_family() {
    let nv = lookup("h264_nvenc").expect("nvenc");
    assert!(nv.device_args().is_empty());
    assert_eq!(nv.upload_filter("yuv420p"), None);
    let qsv = lookup("hevc_qsv").expect("qsv");
    assert_eq!(
        qsv.device_args(),
        ["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"]
    );
    assert_eq!(
        qsv.upload_filter("yuv420p10le").as_deref(),
        Some("format=p010le,hwupload=extra_hw_frames=64")
    );
    let va = lookup("av1_vaapi").expect("vaapi");
    assert_eq!(va.device_args(), ["-vaapi_device", VAAPI_DEVICE]);
    assert_eq!(
        va.upload_filter("yuv420p").as_deref(),
        Some("format=nv12,hwupload")
    );
    // Uploaded frames carry no -pix_fmt; others do.
    let a = va.video_args(&with_encoder("av1_vaapi"), None);
    assert_eq!(after(&a, "-pix_fmt"), None);
    let mut e = with_encoder("hevc_nvenc");
    e.pix_fmt = Some("yuv420p10le".into());
    let a = chosen(&e).video_args(&e, Some("mp4"));
    assert_eq!(after(&a, "-pix_fmt").as_deref(), Some("p010le"));
    assert_eq!(after(&a, "-tag:v").as_deref(), Some("hvc1"));
    assert_eq!(after(&a, "-x265-params"), None);
    let mut e = with_encoder("libx265");
    e.pix_fmt = Some("yuv420p10le".into());
    let a = chosen(&e).video_args(&e, Some("mp4"));
    assert_eq!(after(&a, "-pix_fmt").as_deref(), Some("yuv420p10le"));
    assert_eq!(after(&a, "-tag:v").as_deref(), Some("hvc1"));
    assert_eq!(
        after(&a, "-x265-params").as_deref(),
        Some("log-level=error")
    );
}

#[test]
fn presets_map_across_families() {
    let nv = lookup("h264_nvenc").expect("nvenc");
    let qsv = lookup("h264_qsv").expect("qsv");
    let va = lookup("h264_vaapi").expect("vaapi");
    for (x264, p, q, level) in [
        ("ultrafast", "p1", "veryfast", "7"),
        ("veryfast", "p2", "veryfast", "6"),
        ("medium", "p4", "medium", "4"),
        ("veryslow", "p7", "veryslow", "1"),
    ] {
        assert_eq!(nv.preset_arg(x264), ("-preset", p.to_string()));
        assert_eq!(qsv.preset_arg(x264), ("-preset", q.to_string()));
        assert_eq!(
            va.preset_arg(x264),
            ("-compression_level", level.to_string())
        );
    }
    // A family's own names pass as they are.
    assert_eq!(nv.preset_arg("p5"), ("-preset", "p5".to_string()));
    // SVT-AV1 0 (slowest) … 13 (fastest).
    let av1 = lookup("av1_nvenc").expect("av1 nvenc");
    assert_eq!(av1.preset_arg("0").1, "p7");
    assert_eq!(av1.preset_arg("13").1, "p1");
    assert!(nv.presets().contains(&"p3") && nv.presets().contains(&"slow"));
    assert!(!va
        .presets()
        .iter()
        .any(|p| p.starts_with('p') && p.len() == 2));
}

fn available(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn which_encoder_a_job_uses() {
    let sw_only = available(&["libx264", "libx265"]);
    let with_gpu = available(&["libx264", "h264_vaapi", "h264_nvenc"]);
    let mut e = params(Codec::H264);
    assert_eq!(resolve(&e, &with_gpu), Some("libx264"));
    e.hardware = HardwarePref::Required;
    assert_eq!(resolve(&e, &sw_only), None);
    // NVENC before VAAPI, whatever the node's order.
    assert_eq!(resolve(&e, &with_gpu), Some("h264_nvenc"));
    e.hardware = HardwarePref::Preferred;
    assert_eq!(resolve(&e, &sw_only), Some("libx264"));
    assert_eq!(resolve(&e, &with_gpu), Some("h264_nvenc"));
    // 10-bit H.264: no hardware takes it, preferred falls to software.
    e.pix_fmt = Some("yuv420p10le".into());
    assert_eq!(resolve(&e, &with_gpu), Some("libx264"));
    assert_eq!(requirement(&e), "libx264");
    e.hardware = HardwarePref::Required;
    assert_eq!(resolve(&e, &with_gpu), None);
    let named = with_encoder("h264_vaapi");
    assert_eq!(resolve(&named, &with_gpu), Some("h264_vaapi"));
    assert_eq!(resolve(&named, &sw_only), None);
}

fn any_params() -> impl Strategy<Value = EncodeParams> {
    (
        prop::sample::select(Codec::ALL.to_vec()),
        prop::sample::select(vec![
            HardwarePref::None,
            HardwarePref::Preferred,
            HardwarePref::Required,
        ]),
        prop::option::of(prop::sample::select(
            ENCODERS.iter().map(|e| e.name).collect::<Vec<_>>(),
        )),
        prop::option::of(prop::sample::select(PIX_FMTS.to_vec())),
    )
        .prop_map(|(codec, hardware, encoder, pix_fmt)| {
            let codec = encoder.and_then(lookup).map_or(codec, |e| e.codec);
            EncodeParams {
                hardware,
                encoder: encoder.map(String::from),
                pix_fmt: pix_fmt.map(String::from),
                ..params(codec)
            }
        })
}

/// Every argument FFmpeg's option parser reads as a flag's value.
fn shape_ok(a: &[String]) -> Result<(), String> {
    if a.len() % 2 != 0 {
        return Err(format!("odd argv {a:?}"));
    }
    for pair in a.chunks(2) {
        let (flag, value) = (&pair[0], &pair[1]);
        if !flag.starts_with('-') || flag.len() < 2 {
            return Err(format!("{flag:?} is not a flag in {a:?}"));
        }
        if value.is_empty() || value.starts_with('-') || value.contains(char::is_whitespace) {
            return Err(format!("bad value {value:?} for {flag} in {a:?}"));
        }
    }
    Ok(())
}

proptest! {
    /// Every (codec, family) pair, every preset the encoder accepts,
    /// both rate controls and every pixel format: an argv of flag/value
    /// pairs with no empty value, a preset the encoder's own vocabulary
    /// has, and a CRF inside its range.
    #[test]
    fn every_encoder_gives_a_well_shaped_argv(
        i in 0..ENCODERS.len(),
        p in any::<prop::sample::Index>(),
        crf in prop::option::of(0u32..=255),
        ten_bit in any::<bool>(),
        container in prop::sample::select(vec![None, Some("mp4"), Some("matroska")]),
    ) {
        let enc = ENCODERS[i];
        let presets = enc.presets();
        let preset = presets[p.index(presets.len())];
        let (lo, hi) = enc.crf_range();
        let pix_fmt = if ten_bit && enc.takes_pix_fmt("yuv420p10le") { "yuv420p10le" } else { "yuv420p" };
        let e = EncodeParams {
            preset: preset.to_string(),
            crf: crf.map(|c| c.clamp(lo, hi)),
            pix_fmt: Some(pix_fmt.into()),
            ..with_encoder(enc.name)
        };
        let a = chosen(&e).video_args(&e, container);
        prop_assert_eq!(&a[..2], &["-c:v".to_string(), enc.name.to_string()]);
        shape_ok(&a).map_err(TestCaseError::fail)?;
        shape_ok(&enc.device_args().iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(TestCaseError::fail)?;
        match enc.family {
            Family::Nvenc => prop_assert!(NVENC_PRESETS.contains(&after(&a, "-preset").unwrap_or_default().as_str())),
            Family::Qsv => prop_assert!(QSV_PRESETS.contains(&after(&a, "-preset").unwrap_or_default().as_str())),
            Family::Vaapi => {
                let level: u8 = after(&a, "-compression_level").unwrap_or_default().parse().map_err(|_| TestCaseError::fail("level"))?;
                prop_assert!((1..=7).contains(&level));
            }
            Family::Software if enc.codec == Codec::Vp9 => prop_assert!(after(&a, "-deadline").is_some()),
            Family::Software => prop_assert!(crate::spec::presets(enc.codec).contains(&after(&a, "-preset").unwrap_or_default().as_str())),
        }
        if let Some(q) = e.crf {
            prop_assert!(a.contains(&q.to_string()), "{:?}", a);
            prop_assert!(!a.contains(&"-maxrate".to_string()));
        } else {
            prop_assert_eq!(after(&a, "-b:v"), Some("3000k".to_string()));
        }
        if let Some(f) = enc.upload_filter(pix_fmt) {
            prop_assert!(f.ends_with("hwupload") || f.contains("hwupload="));
            prop_assert_eq!(after(&a, "-pix_fmt"), None);
        }
    }

    /// Placement and the worker agree: a node meets a job's requirement
    /// exactly when the worker finds the job an encoder there, and that
    /// encoder is one the job may use.
    #[test]
    fn requirement_and_resolve_agree(
        e in any_params(),
        mask in any::<u16>(),
    ) {
        let avail: Vec<String> = ENCODERS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, e)| e.name.to_string())
            .collect();
        let got = resolve(&e, &avail);
        prop_assert_eq!(satisfies(&requirement(&e), &avail), got.is_some());
        if let Some(name) = got {
            let enc = lookup(name).ok_or_else(|| TestCaseError::fail("unknown"))?;
            prop_assert_eq!(enc.codec, e.codec);
            match (e.encoder.as_deref(), e.hardware) {
                (Some(n), _) => prop_assert_eq!(n, name),
                (None, HardwarePref::None) => prop_assert_eq!(enc.family, Family::Software),
                (None, HardwarePref::Required) => prop_assert!(enc.family.is_hardware()),
                (None, HardwarePref::Preferred) => {
                    let hw_there = hardware(e.codec).any(|h| {
                        h.takes_pix_fmt(e.pix_fmt.as_deref().unwrap_or(DEFAULT_PIX_FMT))
                            && avail.iter().any(|a| a == h.name)
                    });
                    prop_assert_eq!(enc.family.is_hardware(), hw_there);
                }
            }
        }
    }
}
