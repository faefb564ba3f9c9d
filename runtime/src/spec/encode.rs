//! The checks of single request fields: ranges, codec, hardware, named
//! encoder, pixel format, CRF, bitrate, quality metrics.

use super::*;

/// `"quality": {"metrics": [...]}`: known names, at least one, no
/// repeats; stored distinct and sorted. Not on a live (RTMP) output: there
/// is no file to compare afterwards.
pub(super) fn parse_quality(raw: RawQuality, output: &Output) -> Result<QualitySpec, FieldError> {
    if matches!(output, Output::Rtmp { .. }) {
        return Err(not_allowed("quality", "an RTMP output"));
    }
    let names = raw.metrics.ok_or_else(|| missing("quality.metrics"))?;
    if names.is_empty() {
        return Err(invalid(
            "quality.metrics",
            "`quality.metrics` must name at least one of vmaf, psnr, ssim",
        ));
    }
    let mut metrics: Vec<QualityMetric> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("quality.metrics[{i}]");
        let metric = QualityMetric::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                invalid(
                    &field,
                    format!("unknown quality metric {name:?}; known: vmaf, psnr, ssim"),
                )
            })?;
        if metrics.contains(&metric) {
            return Err(invalid(
                &field,
                format!("quality metric {name:?} is named twice"),
            ));
        }
        metrics.push(metric);
    }
    metrics.sort();
    Ok(QualitySpec { metrics })
}

pub(super) fn check_range(field: &str, v: u64, (lo, hi): (u32, u32)) -> Result<u32, FieldError> {
    match u32::try_from(v) {
        Ok(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(invalid(
            field,
            format!("`{field}` must be between {lo} and {hi}, got {v}"),
        )),
    }
}

pub(super) fn check_range_u64(
    field: &str,
    v: u64,
    (lo, hi): (u64, u64),
) -> Result<u64, FieldError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            field,
            format!("`{field}` must be between {lo} and {hi}, got {v}"),
        ))
    }
}

pub(super) fn check_dimension(field: &str, v: u64, range: (u32, u32)) -> Result<u32, FieldError> {
    let x = check_range(field, v, range)?;
    if x % 2 != 0 {
        return Err(invalid(field, format!("`{field}` must be even, got {x}")));
    }
    Ok(x)
}

pub(super) fn parse_codec(s: &str) -> Result<Codec, FieldError> {
    Codec::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            invalid(
                "codec",
                format!("codec {s:?} is not one of h264, h265, vp9, av1"),
            )
        })
}

pub(super) fn parse_hardware(s: &str) -> Result<HardwarePref, FieldError> {
    match s {
        "none" => Ok(HardwarePref::None),
        "preferred" => Ok(HardwarePref::Preferred),
        "required" => Ok(HardwarePref::Required),
        _ => Err(invalid(
            "hardware",
            format!("hardware {s:?} is not one of required, preferred, none"),
        )),
    }
}

/// A named encoder must encode the job's codec and agree with an explicit
/// `hardware`.
pub(super) fn check_named_encoder(
    e: &encoders::Encoder,
    codec: Codec,
    raw_hardware: &Option<String>,
    hardware: HardwarePref,
) -> Result<(), FieldError> {
    if e.codec != codec {
        return Err(invalid(
            "encoder",
            format!(
                "encoder {} encodes {}, not the job's codec {}",
                e.name,
                e.codec.as_str(),
                codec.as_str()
            ),
        ));
    }
    let clash = match hardware {
        HardwarePref::None => e.family.is_hardware(),
        HardwarePref::Required => !e.family.is_hardware(),
        HardwarePref::Preferred => false,
    };
    if raw_hardware.is_some() && clash {
        return Err(invalid(
            "hardware",
            format!(
                "encoder {} is {}, which `hardware` {:?} rules out",
                e.name,
                if e.family.is_hardware() {
                    "a hardware encoder"
                } else {
                    "a software encoder"
                },
                raw_hardware.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

pub(super) fn parse_pix_fmt(s: &str) -> Result<String, FieldError> {
    if encoders::PIX_FMTS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "pix_fmt",
            format!(
                "pix_fmt {s:?} is not one of {}",
                encoders::PIX_FMTS.join(", ")
            ),
        ))
    }
}

/// Some encoder the job may run with takes its pixel format.
pub(super) fn check_pix_fmt(e: &EncodeParams) -> Result<(), FieldError> {
    let pix_fmt = e.pix_fmt.as_deref().unwrap_or(encoders::DEFAULT_PIX_FMT);
    if encoders::candidates(e).is_empty() {
        return Err(invalid(
            "pix_fmt",
            format!(
                "no hardware encoder for codec {} takes pix_fmt {pix_fmt}",
                e.codec.as_str()
            ),
        ));
    }
    match e.encoder.as_deref().and_then(encoders::lookup) {
        Some(enc) if !enc.takes_pix_fmt(pix_fmt) => Err(invalid(
            "pix_fmt",
            format!("encoder {} does not take pix_fmt {pix_fmt}", enc.name),
        )),
        _ => Ok(()),
    }
}

/// The CRF values every encoder the job may run with takes.
pub fn crf_range(e: &EncodeParams) -> (u32, u32) {
    encoders::candidates(e)
        .iter()
        .map(|c| c.crf_range())
        .fold((0, u32::MAX), |(lo, hi), (l, h)| (lo.max(l), hi.min(h)))
}

pub(super) fn parse_bitrate(v: &serde_json::Value) -> Result<u32, FieldError> {
    let (lo, hi) = BITRATE_KBPS_RANGE;
    let bad = || {
        invalid(
            "bitrate",
            format!(
                "`bitrate` must be a whole number of kbit/s between {lo} and {hi}, \
                 as an integer (3000) or a string like \"2500k\" or \"6M\""
            ),
        )
    };
    let kbps = match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        serde_json::Value::String(s) => parse_bitrate_str(s).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    u32::try_from(kbps)
        .ok()
        .filter(|k| (lo..=hi).contains(k))
        .ok_or_else(bad)
}

/// `"2500k"` → 2500, `"6M"` → 6000, `"2.5M"` → 2500; only whole kbit/s.
pub(super) fn parse_bitrate_str(s: &str) -> Option<u64> {
    let (num, mult_digits) = if let Some(n) = s.strip_suffix(['k', 'K']) {
        (n, 0usize)
    } else if let Some(n) = s.strip_suffix(['m', 'M']) {
        (n, 3usize)
    } else {
        return None;
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 9 || frac.len() > 9 || !digits(int) || !digits(frac) {
        return None;
    }
    // Fraction digits beyond the multiplier's precision must be zero.
    let (kept, dropped) = frac.split_at(frac.len().min(mult_digits));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut kbps = int.checked_mul(10u64.pow(mult_digits as u32))?;
    if !kept.is_empty() {
        let kept_val: u64 = kept.parse().ok()?;
        kbps = kbps.checked_add(kept_val * 10u64.pow((mult_digits - kept.len()) as u32))?;
    }
    Some(kbps)
}
