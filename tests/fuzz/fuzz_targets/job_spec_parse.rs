//! `spec::parse_job_request` (the `POST /v1/jobs` body) on arbitrary bytes,
//! with one media root holding an input file: refused with a well-formed
//! error, or a spec within the documented bounds and inside the root.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ffrtmp_runtime::model::{Codec, Input, Output};
use ffrtmp_runtime::spec::{self, codes, parse_job_request, MediaRoots};
use libfuzzer_sys::fuzz_target;

fn roots() -> &'static MediaRoots {
    static ROOTS: OnceLock<MediaRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let dir: PathBuf = std::env::temp_dir().join(format!("ffrtmp-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("fuzz media root");
        std::fs::write(dir.join("in.mp4"), b"x").expect("fuzz input file");
        MediaRoots::new(&[dir]).expect("media roots")
    })
}

fn inside(p: &std::path::Path) -> bool {
    p.is_absolute() && roots().roots().iter().any(|r| p.starts_with(r))
}

fuzz_target!(|data: &[u8]| {
    match parse_job_request(data, roots()) {
        Err(e) => {
            assert!(!e.message.is_empty());
            if e.code == codes::INVALID_JSON {
                assert!(e.field.is_none(), "{e:?}");
            } else {
                assert!(e.field.as_deref().is_some_and(|f| !f.is_empty()), "{e:?}");
            }
        }
        Ok(s) => {
            let e = &s.encode;
            let (w, h, f, b) = (
                spec::WIDTH_RANGE,
                spec::HEIGHT_RANGE,
                spec::FPS_RANGE,
                spec::BITRATE_KBPS_RANGE,
            );
            assert!((w.0..=w.1).contains(&e.width) && e.width % 2 == 0);
            assert!((h.0..=h.1).contains(&e.height) && e.height % 2 == 0);
            assert!((f.0..=f.1).contains(&e.fps));
            assert!((b.0..=b.1).contains(&e.bitrate_kbps));
            assert!(spec::presets(e.codec).contains(&e.preset.as_str()));
            assert!(s.max_retries <= spec::MAX_RETRIES);
            match &s.input {
                Input::Testsrc { duration_s } => {
                    assert!(duration_s.is_finite() && *duration_s > 0.0);
                    assert!(*duration_s <= spec::MAX_TESTSRC_DURATION_S);
                }
                Input::File { path } => assert!(inside(path) && path.is_file(), "{path:?}"),
            }
            match &s.output {
                Output::Null => {}
                Output::File { path } => assert!(inside(path), "{path:?}"),
                Output::Rtmp { url } => {
                    assert_eq!(e.codec, Codec::H264);
                    assert!(url.starts_with("rtmp://") || url.starts_with("rtmps://"));
                }
            }
        }
    }
});
