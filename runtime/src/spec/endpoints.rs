//! A job's input and output: test sources, files confined to the media
//! roots (symlinks resolved), containers and RTMP URLs.

use super::*;

pub(super) fn parse_input(raw: Option<RawInput>, roots: &MediaRoots) -> Result<Input, FieldError> {
    let raw = raw.ok_or_else(|| missing("input"))?;
    let kind = raw.kind.ok_or_else(|| missing("input.type"))?;
    match kind.as_str() {
        "testsrc" => {
            if raw.path.is_some() {
                return Err(not_allowed("input.path", "input type testsrc"));
            }
            let d = raw.duration_s.ok_or_else(|| missing("input.duration_s"))?;
            if !(d.is_finite() && d > 0.0 && d <= MAX_TESTSRC_DURATION_S) {
                return Err(invalid(
                    "input.duration_s",
                    format!(
                        "`input.duration_s` must be > 0 and <= {MAX_TESTSRC_DURATION_S}, got {d}"
                    ),
                ));
            }
            Ok(Input::Testsrc { duration_s: d })
        }
        "file" => {
            if raw.duration_s.is_some() {
                return Err(not_allowed("input.duration_s", "input type file"));
            }
            let path = raw.path.ok_or_else(|| missing("input.path"))?;
            Ok(Input::File {
                path: resolve_input_path(&path, roots)?,
            })
        }
        other => Err(invalid(
            "input.type",
            format!("input type {other:?} is not one of testsrc, file"),
        )),
    }
}

/// File extension → (FFmpeg muxer, codecs FFmpeg 5.1 can put in it).
pub fn container_for_extension(ext: &str) -> Option<(&'static str, &'static [Codec])> {
    use Codec::*;
    Some(match ext.to_ascii_lowercase().as_str() {
        "mp4" => ("mp4", &[H264, H265, Vp9, Av1]),
        "mkv" => ("matroska", &[H264, H265, Vp9, Av1]),
        "mov" => ("mov", &[H264, H265]),
        "webm" => ("webm", &[Vp9, Av1]),
        "ts" => ("mpegts", &[H264, H265]),
        "flv" => ("flv", &[H264]),
        _ => return None,
    })
}

pub(super) fn parse_output(
    raw: Option<RawOutput>,
    codec: Codec,
    overwrite: bool,
    roots: &MediaRoots,
) -> Result<Output, FieldError> {
    let raw = raw.ok_or_else(|| missing("output"))?;
    let kind = raw.kind.ok_or_else(|| missing("output.type"))?;
    match kind.as_str() {
        "null" => {
            if raw.path.is_some() {
                return Err(not_allowed("output.path", "output type null"));
            }
            if raw.url.is_some() {
                return Err(not_allowed("output.url", "output type null"));
            }
            Ok(Output::Null)
        }
        "file" => {
            if raw.url.is_some() {
                return Err(not_allowed("output.url", "output type file"));
            }
            let path = raw.path.ok_or_else(|| missing("output.path"))?;
            Ok(Output::File {
                path: resolve_output_path(&path, codec, overwrite, roots)?,
            })
        }
        "rtmp" => {
            if raw.path.is_some() {
                return Err(not_allowed("output.path", "output type rtmp"));
            }
            let url = raw.url.ok_or_else(|| missing("output.url"))?;
            let url = check_rtmp_url(&url)?;
            if !rtmp_takes(codec) {
                return Err(invalid(
                    "output.url",
                    format!(
                        "rtmp output is FLV, which FFmpeg 5.1 supports only with codec h264 (got {})",
                        codec.as_str()
                    ),
                ));
            }
            Ok(Output::Rtmp { url })
        }
        other => Err(invalid(
            "output.type",
            format!("output type {other:?} is not one of null, file, rtmp"),
        )),
    }
}

/// Whether an RTMP output (FLV) can carry `codec` in FFmpeg 5.1.
pub(super) fn rtmp_takes(codec: Codec) -> bool {
    codec == Codec::H264
}

pub(super) fn check_rtmp_url(s: &str) -> Result<String, FieldError> {
    const F: &str = "output.url";
    if s.len() > MAX_URL_LEN {
        return Err(invalid(
            F,
            format!("`{F}` is longer than {MAX_URL_LEN} bytes"),
        ));
    }
    // Checked on the raw string: the URL parser silently strips some of these.
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            F,
            format!("`{F}` must not contain whitespace or control characters"),
        ));
    }
    let url = url::Url::parse(s).map_err(|e| invalid(F, format!("`{F}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "rtmp" | "rtmps") {
        return Err(invalid(
            F,
            format!(
                "`{F}` must use rtmp:// or rtmps://, got {}://",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(F, format!("`{F}` must name a host")));
    }
    // Schemes are case-insensitive but FFmpeg's protocol lookup is not:
    // `Rtmp://` reaches it as `rtmp://` (the rest of the URL as sent).
    let rest = s.get(url.scheme().len()..).unwrap_or_default();
    Ok(format!("{}{rest}", url.scheme()))
}

/// Syntax checks shared by input and output paths.
pub(super) fn check_path_syntax<'a>(field: &str, s: &'a str) -> Result<&'a Path, FieldError> {
    if s.is_empty() {
        return Err(invalid(field, format!("`{field}` must not be empty")));
    }
    if s.len() > MAX_PATH_LEN {
        return Err(invalid(
            field,
            format!("`{field}` is longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(field, format!("`{field}` must not contain NUL")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    let p = Path::new(s);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            field,
            format!("`{field}` must not contain a `..` component"),
        ));
    }
    Ok(p)
}

/// Where a user path may live: itself if absolute (and lexically inside a
/// root), else joined to each root in order.
pub(super) fn candidates(
    field: &str,
    p: &Path,
    roots: &MediaRoots,
) -> Result<Vec<PathBuf>, FieldError> {
    if roots.roots().is_empty() {
        return Err(FieldError::new(
            codes::PATH_OUTSIDE_MEDIA_ROOT,
            Some(field),
            "no media roots are configured: file paths are not accepted",
        ));
    }
    if p.is_absolute() {
        if !roots.contains(p) {
            return Err(outside_roots(field, p));
        }
        Ok(vec![p.to_path_buf()])
    } else {
        Ok(roots.roots().iter().map(|r| r.join(p)).collect())
    }
}

pub(super) fn resolve_input_path(s: &str, roots: &MediaRoots) -> Result<PathBuf, FieldError> {
    const F: &str = "input.path";
    let p = check_path_syntax(F, s)?;
    let not_found = || {
        FieldError::new(
            codes::FILE_NOT_FOUND,
            Some(F),
            format!("input file {s:?} does not exist in any media root"),
        )
    };
    let found = candidates(F, p, roots)?
        .into_iter()
        .find(|c| std::fs::metadata(c).is_ok())
        .ok_or_else(not_found)?;
    let canon = std::fs::canonicalize(&found).map_err(|_| not_found())?;
    if !roots.contains(&canon) {
        return Err(outside_roots(F, &canon));
    }
    let meta = std::fs::metadata(&canon).map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(invalid(F, format!("input {s:?} is not a regular file")));
    }
    Ok(canon)
}

pub(super) fn resolve_output_path(
    s: &str,
    codec: Codec,
    overwrite: bool,
    roots: &MediaRoots,
) -> Result<PathBuf, FieldError> {
    const F: &str = "output.path";
    let p = check_path_syntax(F, s)?;
    let name = p
        .file_name()
        .ok_or_else(|| invalid(F, format!("`{F}` must name a file")))?;
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let (_, allowed) = container_for_extension(ext).ok_or_else(|| {
        invalid(
            F,
            format!("`{F}` must end in .mp4, .mkv, .mov, .webm, .ts or .flv"),
        )
    })?;
    if !allowed.contains(&codec) {
        return Err(invalid(
            F,
            format!(
                "a .{ext} file cannot hold codec {} (allowed: {})",
                codec.as_str(),
                allowed
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let parent = p.parent().unwrap_or_else(|| Path::new(""));
    let not_found = || {
        FieldError::new(
            codes::FILE_NOT_FOUND,
            Some(F),
            format!("the directory of output {s:?} does not exist in any media root"),
        )
    };
    let dir = candidates(F, parent, roots)?
        .into_iter()
        .find(|c| std::fs::metadata(c).is_ok_and(|m| m.is_dir()))
        .ok_or_else(not_found)?;
    let canon_dir = std::fs::canonicalize(&dir).map_err(|_| not_found())?;
    if !roots.contains(&canon_dir) {
        return Err(outside_roots(F, &canon_dir));
    }
    let target = canon_dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(invalid(F, format!("output {s:?} exists and is a symlink")))
        }
        Ok(m) if !m.is_file() => Err(invalid(
            F,
            format!("output {s:?} exists and is not a regular file"),
        )),
        Ok(_) if overwrite => Ok(target),
        Ok(_) => Err(FieldError::new(
            codes::OUTPUT_EXISTS,
            Some(F),
            format!("output {s:?} already exists; set \"overwrite\": true to replace it"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(invalid(F, format!("output {s:?} cannot be checked: {e}"))),
    }
}
