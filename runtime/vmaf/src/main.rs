//! `ffrtmp-vmaf`: VMAF (Netflix libvmaf, its built-in `vmaf_v0.6.1`
//! model) of a distorted video against its reference, both given as raw
//! `yuv420p` 8-bit frames of one size, back to back (what `ffmpeg -f
//! rawvideo -pix_fmt yuv420p` writes).
//!
//! ```text
//! ffrtmp-vmaf --width W --height H --reference PATH --distorted PATH
//! ffrtmp-vmaf --self-test
//! ```
//!
//! PATHs are files or pipes (the worker passes `/proc/self/fd/N`, the read
//! ends of its decoders' pipes). Frames are compared pairwise until either
//! stream ends; the rest of the other is read and dropped so its writer
//! ends cleanly. Prints one JSON line, `{"model":"vmaf_v0.6.1","frames":
//! [score, ...]}` (one score per frame; the worker pools them), and exits
//! 0; on any error a message on stderr and exit status 1. `--self-test`
//! scores a few synthetic frames against themselves and against a noisy
//! copy, and succeeds when the first scores higher: a node runs it at
//! start to learn whether it can compute VMAF.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::ptr;

use vmaf_head_sys::*;

const MODEL: &str = "vmaf_v0.6.1";
/// Largest frame side accepted (the API's own bounds are 7680×4320).
const MAX_SIDE: u32 = 8192;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.iter().any(|a| a == "--self-test") {
        self_test()
    } else {
        parse_args(&args).and_then(|a| run(&a))
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ffrtmp-vmaf: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    width: u32,
    height: u32,
    reference: String,
    distorted: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut width = None;
    let mut height = None;
    let mut reference = None;
    let mut distorted = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        let side = |v: &str| -> Result<u32, String> {
            match v.parse::<u32>() {
                Ok(n) if (2..=MAX_SIDE).contains(&n) && n % 2 == 0 => Ok(n),
                _ => Err(format!("{flag}: an even size 2..={MAX_SIDE}, got {v:?}")),
            }
        };
        match flag.as_str() {
            "--width" => width = Some(side(&value)?),
            "--height" => height = Some(side(&value)?),
            "--reference" => reference = Some(value),
            "--distorted" => distorted = Some(value),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Args {
        width: width.ok_or("--width is required")?,
        height: height.ok_or("--height is required")?,
        reference: reference.ok_or("--reference is required")?,
        distorted: distorted.ok_or("--distorted is required")?,
    })
}

fn run(a: &Args) -> Result<String, String> {
    let open = |p: &str| File::open(p).map_err(|e| format!("{p}: {e}"));
    let mut reference = open(&a.reference)?;
    let mut distorted = open(&a.distorted)?;
    let size = frame_bytes(a.width, a.height);
    let mut session = Session::new(a.width, a.height)?;
    let mut rbuf = vec![0u8; size];
    let mut dbuf = vec![0u8; size];
    loop {
        let r = read_frame(&mut reference, &mut rbuf).map_err(|e| format!("reference: {e}"))?;
        let d = read_frame(&mut distorted, &mut dbuf).map_err(|e| format!("distorted: {e}"))?;
        if !(r && d) {
            // The shorter stream ends the comparison; the other's writer
            // is let finish.
            let _ = io::copy(&mut reference, &mut io::sink());
            let _ = io::copy(&mut distorted, &mut io::sink());
            break;
        }
        session.push(&rbuf, &dbuf)?;
    }
    let scores = session.finish()?;
    if scores.is_empty() {
        return Err("no frames to compare".into());
    }
    Ok(to_json(&scores))
}

fn to_json(scores: &[f64]) -> String {
    let frames: Vec<String> = scores.iter().map(|s| format!("{s:.6}")).collect();
    format!(
        "{{\"model\":\"{MODEL}\",\"frames\":[{}]}}",
        frames.join(",")
    )
}

/// Bytes of one yuv420p frame.
fn frame_bytes(w: u32, h: u32) -> usize {
    let (w, h) = (w as usize, h as usize);
    w * h + 2 * (w / 2) * (h / 2)
}

/// Fills `buf` with the next frame: `Ok(false)` at a clean end of stream
/// (no byte of a new frame), an error for a frame cut short.
fn read_frame(src: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("a frame cut short ({filled} of {} bytes)", buf.len()),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A libvmaf context with the model loaded.
struct Session {
    context: *mut VmafContext,
    model: *mut VmafModel,
    width: u32,
    height: u32,
    frames: u32,
}

impl Session {
    fn new(width: u32, height: u32) -> Result<Session, String> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get().min(8) as u32)
            .unwrap_or(1);
        let config = VmafConfiguration {
            log_level: VmafLogLevel_VMAF_LOG_LEVEL_NONE,
            n_threads: threads,
            n_subsample: 1,
            cpumask: 0,
            gpumask: 0,
        };
        let mut context = ptr::null_mut();
        // SAFETY: `context` is a valid out-pointer; libvmaf allocates it.
        let rc = unsafe { vmaf_init(&mut context, config) };
        if rc != 0 || context.is_null() {
            return Err(format!("vmaf_init failed ({rc})"));
        }
        let mut session = Session {
            context,
            model: ptr::null_mut(),
            width,
            height,
            frames: 0,
        };
        let name = CString::new("ffrtmp").map_err(|e| e.to_string())?;
        let version = CString::new(MODEL).map_err(|e| e.to_string())?;
        let mut model_config = VmafModelConfig {
            name: name.as_ptr(),
            flags: u64::from(VmafModelFlags_VMAF_MODEL_FLAGS_DEFAULT),
        };
        let mut model = ptr::null_mut();
        // SAFETY: valid out-pointer and config; the strings outlive the
        // call (libvmaf copies what it keeps).
        let rc = unsafe { vmaf_model_load(&mut model, &mut model_config, version.as_ptr()) };
        if rc != 0 || model.is_null() {
            return Err(format!("loading the built-in model {MODEL} failed ({rc})"));
        }
        session.model = model;
        // SAFETY: both were returned by libvmaf above and are live.
        let rc = unsafe { vmaf_use_features_from_model(session.context, session.model) };
        if rc != 0 {
            return Err(format!("vmaf_use_features_from_model failed ({rc})"));
        }
        Ok(session)
    }

    /// Queues one pair of frames (yuv420p, this session's size).
    fn push(&mut self, reference: &[u8], distorted: &[u8]) -> Result<(), String> {
        let mut r = Picture::from_yuv420p(reference, self.width, self.height)?;
        let mut d = Picture::from_yuv420p(distorted, self.width, self.height)?;
        // SAFETY: the context is live; both pictures were allocated by
        // vmaf_picture_alloc and filled; on success libvmaf takes them.
        let rc = unsafe { vmaf_read_pictures(self.context, &mut r.pic, &mut d.pic, self.frames) };
        if rc != 0 {
            return Err(format!(
                "vmaf_read_pictures failed at frame {} ({rc})",
                self.frames
            ));
        }
        r.owned = false;
        d.owned = false;
        self.frames += 1;
        Ok(())
    }

    /// Flushes the extractors and returns each frame's score.
    fn finish(&mut self) -> Result<Vec<f64>, String> {
        if self.frames == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: the context is live; null pictures mean "flush".
        let rc = unsafe { vmaf_read_pictures(self.context, ptr::null_mut(), ptr::null_mut(), 0) };
        if rc != 0 {
            return Err(format!("flushing libvmaf failed ({rc})"));
        }
        (0..self.frames)
            .map(|i| {
                let mut score = f64::NAN;
                // SAFETY: live context and model; valid out-pointer; `i`
                // is below the number of frames read.
                let rc = unsafe { vmaf_score_at_index(self.context, self.model, &mut score, i) };
                if rc != 0 || !score.is_finite() {
                    Err(format!("no VMAF score for frame {i} ({rc})"))
                } else {
                    Ok(score)
                }
            })
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: each was returned by libvmaf, is freed once, and is not
        // used after this.
        unsafe {
            if !self.model.is_null() {
                vmaf_model_destroy(self.model);
            }
            let _ = vmaf_close(self.context);
        }
    }
}

/// A picture allocated by libvmaf; unreferenced on drop unless libvmaf
/// took it.
struct Picture {
    pic: VmafPicture,
    owned: bool,
}

impl Picture {
    fn from_yuv420p(frame: &[u8], w: u32, h: u32) -> Result<Picture, String> {
        if frame.len() != frame_bytes(w, h) {
            return Err("frame size mismatch".into());
        }
        let mut pic = MaybeUninit::<VmafPicture>::uninit();
        // SAFETY: a valid out-pointer; libvmaf initialises it on success.
        let rc = unsafe {
            vmaf_picture_alloc(
                pic.as_mut_ptr(),
                VmafPixelFormat_VMAF_PIX_FMT_YUV420P,
                8,
                w,
                h,
            )
        };
        if rc != 0 {
            return Err(format!("vmaf_picture_alloc failed ({rc})"));
        }
        // SAFETY: vmaf_picture_alloc succeeded, so it is initialised.
        let pic = unsafe { pic.assume_init() };
        let out = Picture { pic, owned: true };
        let mut offset = 0usize;
        for plane in 0..3 {
            let pw = out.pic.w[plane] as usize;
            let ph = out.pic.h[plane] as usize;
            let stride = out.pic.stride[plane];
            if stride < pw as isize || out.pic.data[plane].is_null() {
                return Err("libvmaf gave an unusable picture".into());
            }
            let dst = out.pic.data[plane].cast::<u8>();
            for row in 0..ph {
                let src = frame
                    .get(offset + row * pw..offset + (row + 1) * pw)
                    .ok_or("frame size mismatch")?;
                // SAFETY: `dst` has `ph` rows of `stride >= pw` bytes
                // (vmaf_picture_alloc for this plane); `src` is `pw` bytes
                // of our buffer; they do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(src.as_ptr(), dst.offset(row as isize * stride), pw);
                }
            }
            offset += pw * ph;
        }
        Ok(out)
    }
}

impl Drop for Picture {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: allocated by vmaf_picture_alloc and not handed over.
            unsafe {
                let _ = vmaf_picture_unref(&mut self.pic);
            }
        }
    }
}

/// Six 64×64 frames of a moving gradient, scored against themselves and
/// against a copy with noise: the clean pair must score higher.
fn self_test() -> Result<String, String> {
    let (w, h) = (64u32, 64u32);
    let frames: Vec<Vec<u8>> = (0..6u32)
        .map(|t| {
            let mut f = vec![128u8; frame_bytes(w, h)];
            for y in 0..h {
                for x in 0..w {
                    f[(y * w + x) as usize] = ((x * 3 + y * 2 + t * 5) % 256) as u8;
                }
            }
            f
        })
        .collect();
    let noisy: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            f.iter()
                .enumerate()
                .map(|(i, &v)| v.wrapping_add(((i * 7919) % 23) as u8))
                .collect()
        })
        .collect();
    let score = |dist: &[Vec<u8>]| -> Result<f64, String> {
        let mut s = Session::new(w, h)?;
        for (r, d) in frames.iter().zip(dist) {
            s.push(r, d)?;
        }
        let v = s.finish()?;
        Ok(v.iter().sum::<f64>() / v.len().max(1) as f64)
    };
    let (clean, bad) = (score(&frames)?, score(&noisy)?);
    if clean > bad {
        Ok(format!(
            "{{\"model\":\"{MODEL}\",\"self_test\":{{\"identical\":{clean:.3},\"noisy\":{bad:.3}}}}}"
        ))
    } else {
        Err(format!(
            "self-test failed: identical {clean:.3}, noisy {bad:.3}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_whole_or_refused() {
        let mut buf = vec![0u8; 6];
        let mut two = &[1u8; 12][..];
        assert!(read_frame(&mut two, &mut buf).expect("first"));
        assert!(read_frame(&mut two, &mut buf).expect("second"));
        assert!(!read_frame(&mut two, &mut buf).expect("end"));
        let mut short = &[1u8; 4][..];
        assert!(read_frame(&mut short, &mut buf).is_err());
    }

    #[test]
    fn args_are_checked() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(parse_args(&s(&["--width", "3", "--height", "2"])).is_err());
        assert!(parse_args(&s(&["--width", "4"])).is_err());
        let a = parse_args(&s(&[
            "--width",
            "4",
            "--height",
            "2",
            "--reference",
            "r",
            "--distorted",
            "d",
        ]))
        .expect("valid");
        assert_eq!(
            (a.width, a.height, frame_bytes(a.width, a.height)),
            (4, 2, 12)
        );
    }

    #[test]
    fn the_self_test_tells_a_clean_copy_from_a_noisy_one() {
        let line = self_test().expect("libvmaf works");
        assert!(line.contains("\"identical\""), "{line}");
    }
}
