use super::*;
use crate::model::Codec;

fn encode() -> EncodeParams {
    EncodeParams::new(160, 90, 10, Codec::H264, 100, "veryfast".into())
}

fn after(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn testsrc_reference_is_the_same_source_regenerated() {
    let cmd = build_command(
        Path::new("/usr/bin/ffmpeg"),
        &encode(),
        3,
        &Reference::Testsrc { duration_s: 0.5 },
        &[QualityMetric::Psnr, QualityMetric::Ssim],
    )
    .expect("psnr and ssim");
    let a = cmd.args_lossy();
    assert_eq!(
        after(&a, "-i"),
        vec![
            "file:/proc/self/fd/3".to_string(),
            "testsrc2=size=160x90:rate=10:duration=0.5".to_string()
        ]
    );
    assert_eq!(after(&a, "-f"), vec!["lavfi", "null"]);
    let graph = after(&a, "-filter_complex").concat();
    assert!(graph.contains("psnr=stats_file=-:shortest=1"), "{graph}");
    assert!(graph.contains("ssim=stats_file=-:shortest=1"), "{graph}");
    // The synthetic reference is already at the output's size.
    assert!(!graph.contains("scale="), "{graph}");
    // Frames paired by index at the output's rate, not by timestamp.
    assert!(graph.starts_with("[0:v]settb=1/10,setpts=N,"), "{graph}");
    assert!(graph.contains("[1:v]settb=1/10,setpts=N,"), "{graph}");
    assert_eq!(a.last().map(String::as_str), Some("-"));
    assert_eq!(after(&a, "-protocol_whitelist"), vec!["file"]);
}

#[test]
fn file_reference_is_scaled_like_the_encode_and_whitelisted() {
    let cmd = build_command(
        Path::new("ffmpeg"),
        &encode(),
        4,
        &Reference::File {
            fd: 3,
            format: Some("matroska".into()),
        },
        &[QualityMetric::Ssim],
    )
    .expect("ssim");
    let a = cmd.args_lossy();
    assert_eq!(
        after(&a, "-i"),
        vec!["file:/proc/self/fd/4", "file:/proc/self/fd/3"]
    );
    assert_eq!(after(&a, "-format_whitelist"), vec!["matroska"]);
    let graph = after(&a, "-filter_complex").concat();
    assert!(graph.contains("[1:v]scale=160:90,fps=10,"), "{graph}");
    assert!(
        graph.contains("ssim=") && !graph.contains("psnr="),
        "{graph}"
    );
}

#[test]
fn vmaf_alone_needs_no_ffmpeg_pass() {
    let r = Reference::Testsrc { duration_s: 1.0 };
    assert!(build_command(
        Path::new("ffmpeg"),
        &encode(),
        3,
        &r,
        &[QualityMetric::Vmaf]
    )
    .is_none());
    let cmd = build_command(
        Path::new("ffmpeg"),
        &encode(),
        3,
        &r,
        &[QualityMetric::Vmaf, QualityMetric::Psnr],
    )
    .expect("psnr");
    let graph = after(&cmd.args_lossy(), "-filter_complex").concat();
    assert!(
        graph.contains("psnr=") && !graph.contains("ssim="),
        "{graph}"
    );
}

#[test]
fn stats_lines_are_parsed_and_pooled() {
    // As FFmpeg 5.1's psnr and ssim filters print them (stats_file=-).
    let out = "\
n:1 mse_avg:12.90 mse_y:13.06 mse_u:12.79 mse_v:12.41 psnr_avg:37.02 psnr_y:36.97 psnr_u:37.06 psnr_v:37.19 
n:1 Y:0.977618 U:0.981862 V:0.990765 All:0.980517 (17.103383)
n:2 mse_avg:17.75 mse_y:16.97 mse_u:18.48 mse_v:20.18 psnr_avg:35.64 psnr_y:35.84 psnr_u:35.46 psnr_v:35.08 
n:2 Y:0.972121 U:0.978179 V:0.984929 All:0.975265 (16.066930)
n:3 mse_avg:0.00 mse_y:0.00 mse_u:0.00 mse_v:0.00 psnr_avg:inf psnr_y:inf psnr_u:inf psnr_v:inf 
n:3 Y:1.000000 U:1.000000 V:1.000000 All:1.000000 (inf)
garbage line
n:4 mse_avg:x psnr_avg:nan
";
    let mut s = FrameStats::default();
    for line in out.lines() {
        s.push_line(line);
    }
    assert_eq!(s.psnr, vec![37.02, 35.64, PSNR_IDENTICAL_DB]);
    assert_eq!(s.ssim, vec![0.980517, 0.975265, 1.0]);
    let (psnr, ssim) = s.scores();
    let psnr = psnr.expect("psnr frames");
    assert_eq!(psnr.frames, 3);
    assert!((psnr.mean - (37.02 + 35.64 + 100.0) / 3.0).abs() < 1e-9);
    assert_eq!(psnr.min, Some(35.64));
    let ssim = ssim.expect("ssim frames");
    assert_eq!(ssim.min, Some(0.975265));
    assert_eq!(ssim.frames, 3);
    assert_eq!(FrameStats::default().scores(), (None, None));
}

#[test]
fn vmaf_is_looked_up_by_flag_then_beside_the_node_then_on_path() {
    let path = OsString::from("/a:/b/c");
    assert_eq!(
        vmaf_candidates(
            Some(Path::new("/x/v")),
            Some(Path::new("/bin/n")),
            Some(&path)
        ),
        vec![PathBuf::from("/x/v")]
    );
    assert_eq!(
        vmaf_candidates(None, Some(Path::new("/opt/f/ffrtmp-node")), Some(&path)),
        vec![
            PathBuf::from("/opt/f/ffrtmp-vmaf"),
            PathBuf::from("/a/ffrtmp-vmaf"),
            PathBuf::from("/b/c/ffrtmp-vmaf")
        ]
    );
    assert!(vmaf_candidates(None, None, None).is_empty());
}

#[test]
fn vmaf_decoders_write_raw_frames_to_the_pipe() {
    let e = encode();
    let d = decoder_command(
        Path::new("ffmpeg"),
        &e,
        Some(3),
        &Reference::Testsrc { duration_s: 2.0 },
        5,
    )
    .args_lossy();
    assert_eq!(after(&d, "-i"), vec!["file:/proc/self/fd/3"]);
    assert_eq!(after(&d, "-pix_fmt"), vec!["yuv420p"]);
    assert_eq!(after(&d, "-f"), vec!["rawvideo"]);
    assert_eq!(d.last().map(String::as_str), Some("pipe:5"));
    let r = decoder_command(
        Path::new("ffmpeg"),
        &e,
        None,
        &Reference::Testsrc { duration_s: 2.0 },
        6,
    )
    .args_lossy();
    assert_eq!(
        after(&r, "-i"),
        vec!["testsrc2=size=160x90:rate=10:duration=2"]
    );
    let f = decoder_command(
        Path::new("ffmpeg"),
        &e,
        None,
        &Reference::File {
            fd: 4,
            format: None,
        },
        6,
    )
    .args_lossy();
    assert!(after(&f, "-vf")
        .concat()
        .starts_with("scale=160:90,fps=10,"));
    assert_eq!(
        after(&f, "-format_whitelist"),
        vec![INPUT_FORMATS.join(",")]
    );
    let v = vmaf_command(Path::new("/v"), &e, 3, 4).args_lossy();
    assert_eq!(
        v,
        [
            "--width",
            "160",
            "--height",
            "90",
            "--reference",
            "/proc/self/fd/3",
            "--distorted",
            "/proc/self/fd/4"
        ]
    );
}

#[test]
fn filter_listing_names_the_metrics() {
    // As `ffmpeg -hide_banner -filters` (5.1) prints them.
    let listing = "\
Filters:
  T.. = Timeline support
 ... psnr              VV->V      Calculate the PSNR between two video streams.
 TS. ssim              VV->V      Calculate the SSIM between two video streams.
 ... ssim360           VV->V      Calculate the SSIM between two 360 video streams.
";
    assert_eq!(
        filter_metrics(listing),
        vec![QualityMetric::Psnr, QualityMetric::Ssim]
    );
    let no_psnr = listing.replace(" psnr ", " xpsnr ");
    assert_eq!(filter_metrics(&no_psnr), vec![QualityMetric::Ssim]);
    assert!(filter_metrics("").is_empty());
}

#[test]
fn vmaf_output_is_checked() {
    assert_eq!(
        parse_vmaf_output("{\"model\":\"vmaf_v0.6.1\",\"frames\":[97.5,100.0]}\n"),
        Ok(vec![97.5, 100.0])
    );
    for bad in [
        "",
        "{\"model\":\"vmaf_4k\",\"frames\":[1.0]}",
        "{\"model\":\"vmaf_v0.6.1\",\"frames\":[101.0]}",
        "{\"model\":\"vmaf_v0.6.1\",\"frames\":[-1]}",
    ] {
        assert!(parse_vmaf_output(bad).is_err(), "{bad}");
    }
}

#[test]
fn pooling_takes_the_nearest_rank_fifth_percentile() {
    assert_eq!(pool(&[]), None);
    let one = pool(&[42.0]).expect("one frame");
    assert_eq!(
        (one.mean, one.p5, one.min, one.frames),
        (42.0, Some(42.0), Some(42.0), 1)
    );
    // 1..=100: the 5th percentile is the 5th smallest.
    let frames: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let s = pool(&frames).expect("frames");
    assert_eq!(s.p5, Some(5.0));
    assert_eq!(s.min, Some(1.0));
    assert!((s.mean - 50.5).abs() < 1e-9);
    // 30 frames: ceil(1.5) = 2nd smallest.
    let frames: Vec<f64> = (0..30).map(f64::from).collect();
    assert_eq!(pool(&frames).and_then(|s| s.p5), Some(1.0));
}
