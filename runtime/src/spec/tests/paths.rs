//! Paths confined to the media roots.

use super::*;

struct Fixture {
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
    roots: MediaRoots,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("in.mp4"), b"x").expect("write");
    std::fs::create_dir(root.path().join("sub")).expect("mkdir");
    std::fs::write(root.path().join("sub/clip.mkv"), b"x").expect("write");
    std::fs::write(outside.path().join("secret.mp4"), b"x").expect("write");
    let roots = MediaRoots::new(&[root.path().to_path_buf()]).expect("roots");
    Fixture {
        root,
        outside,
        roots,
    }
}

impl Fixture {
    fn canon(&self, rel: &str) -> PathBuf {
        std::fs::canonicalize(self.root.path())
            .expect("canon")
            .join(rel)
    }
}

fn file_in(path: &str) -> Value {
    with(base(), "input", json!({"type": "file", "path": path}))
}

fn file_out(v: Value, path: &str) -> Value {
    with(v, "output", json!({"type": "file", "path": path}))
}

#[test]
fn media_roots_are_canonical_and_must_be_dirs() {
    let f = fixture();
    let link = f.outside.path().join("link-to-root");
    std::os::unix::fs::symlink(f.root.path(), &link).expect("symlink");
    let roots = MediaRoots::new(&[link]).expect("roots");
    assert_eq!(
        roots.roots(),
        &[f.canon("")].map(|p| p.components().collect::<PathBuf>())
    );
    assert!(MediaRoots::new(&[f.root.path().join("missing")]).is_err());
    assert!(MediaRoots::new(&[f.root.path().join("in.mp4")]).is_err());
}

#[test]
fn input_files_resolve_inside_roots() {
    let f = fixture();
    for (given, rel) in [
        ("in.mp4".to_string(), "in.mp4"),
        ("./sub/clip.mkv".to_string(), "sub/clip.mkv"),
        (f.root.path().join("in.mp4").display().to_string(), "in.mp4"),
    ] {
        let spec = parse_in(&file_in(&given), &f.roots).expect("valid");
        assert_eq!(spec.input, Input::File { path: f.canon(rel) }, "{given}");
        assert_eq!(spec.expected_duration_s(), None);
    }
}

#[test]
fn input_path_rejections() {
    let f = fixture();
    let secret = f.outside.path().join("secret.mp4").display().to_string();
    let cases = [
        (secret.as_str(), codes::PATH_OUTSIDE_MEDIA_ROOT),
        ("../secret.mp4", codes::INVALID_FIELD),
        ("sub/../in.mp4", codes::INVALID_FIELD),
        ("in\0.mp4", codes::INVALID_FIELD),
        ("in\n.mp4", codes::INVALID_FIELD),
        ("", codes::INVALID_FIELD),
        ("missing.mp4", codes::FILE_NOT_FOUND),
        ("sub", codes::INVALID_FIELD),
    ];
    for (p, code) in cases {
        assert_err(parse_in(&file_in(p), &f.roots), code, Some("input.path"));
    }
    let long = "a/".repeat(MAX_PATH_LEN);
    assert_err(
        parse_in(&file_in(&long), &f.roots),
        codes::INVALID_FIELD,
        Some("input.path"),
    );
}

#[test]
fn a_symlink_inside_a_root_pointing_outside_is_rejected() {
    let f = fixture();
    let secret = f.outside.path().join("secret.mp4");
    std::os::unix::fs::symlink(&secret, f.root.path().join("escape.mp4")).expect("symlink");
    assert_err(
        parse_in(&file_in("escape.mp4"), &f.roots),
        codes::PATH_OUTSIDE_MEDIA_ROOT,
        Some("input.path"),
    );
    // A directory symlink escaping the root, used as a path prefix.
    std::os::unix::fs::symlink(f.outside.path(), f.root.path().join("outdir")).expect("symlink");
    assert_err(
        parse_in(&file_in("outdir/secret.mp4"), &f.roots),
        codes::PATH_OUTSIDE_MEDIA_ROOT,
        Some("input.path"),
    );
    // A symlink that stays inside resolves to its target.
    std::os::unix::fs::symlink(
        f.root.path().join("in.mp4"),
        f.root.path().join("alias.mp4"),
    )
    .expect("symlink");
    assert_eq!(
        parse_in(&file_in("alias.mp4"), &f.roots).map(|s| s.input),
        Ok(Input::File {
            path: f.canon("in.mp4")
        })
    );
}

#[test]
fn relative_paths_try_roots_in_order() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    std::fs::write(a.path().join("both.mp4"), b"a").expect("write");
    std::fs::write(b.path().join("both.mp4"), b"b").expect("write");
    std::fs::write(b.path().join("only_b.mp4"), b"b").expect("write");
    let roots = MediaRoots::new(&[a.path().into(), b.path().into()]).expect("roots");
    let canon =
        |d: &tempfile::TempDir, n: &str| std::fs::canonicalize(d.path().join(n)).expect("c");
    assert_eq!(
        parse_in(&file_in("both.mp4"), &roots).map(|s| s.input),
        Ok(Input::File {
            path: canon(&a, "both.mp4")
        })
    );
    assert_eq!(
        parse_in(&file_in("only_b.mp4"), &roots).map(|s| s.input),
        Ok(Input::File {
            path: canon(&b, "only_b.mp4")
        })
    );
    // Output: the first root whose directory exists.
    let v = file_out(base(), "new.mkv");
    assert_eq!(
        parse_in(&v, &roots).map(|s| s.output),
        Ok(Output::File {
            path: std::fs::canonicalize(a.path()).expect("c").join("new.mkv")
        })
    );
}

#[test]
fn output_files_resolve_inside_roots() {
    let f = fixture();
    let abs = f.root.path().join("sub/out.mp4").display().to_string();
    for (given, rel) in [
        ("out.mp4", "out.mp4"),
        ("sub/out.mkv", "sub/out.mkv"),
        ("./x.MOV", "x.MOV"),
        ("in.mp4.ts", "in.mp4.ts"),
        (abs.as_str(), "sub/out.mp4"),
    ] {
        let spec = parse_in(&file_out(base(), given), &f.roots).expect("valid");
        assert_eq!(spec.output, Output::File { path: f.canon(rel) }, "{given}");
        assert!(!spec.overwrite);
    }
    // An existing regular file: refused unless the request overwrites.
    let e = assert_err(
        parse_in(&file_out(base(), "sub/clip.mkv"), &f.roots),
        codes::OUTPUT_EXISTS,
        Some("output.path"),
    );
    assert!(e.message.contains("overwrite"), "{e:?}");
    let v = with(file_out(base(), "sub/clip.mkv"), "overwrite", json!(true));
    let spec = parse_in(&v, &f.roots).expect("valid");
    assert_eq!(
        spec.output,
        Output::File {
            path: f.canon("sub/clip.mkv")
        }
    );
    assert!(spec.overwrite);
    // `overwrite` only goes with a file output.
    assert_err(
        parse(&with(base(), "overwrite", json!(true))),
        codes::UNKNOWN_FIELD,
        Some("overwrite"),
    );
    parse(&with(base(), "overwrite", json!(false))).expect("false is the default");
    assert_err(
        parse(&with(base(), "overwrite", json!("yes"))),
        codes::INVALID_FIELD,
        Some("overwrite"),
    );
}

#[test]
fn output_path_rejections() {
    let f = fixture();
    std::os::unix::fs::symlink(f.outside.path(), f.root.path().join("outdir")).expect("symlink");
    std::os::unix::fs::symlink(
        f.outside.path().join("new.mp4"),
        f.root.path().join("dangling.mp4"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        f.root.path().join("in.mp4"),
        f.root.path().join("alias.mp4"),
    )
    .expect("symlink");
    std::fs::create_dir(f.root.path().join("dir.mp4")).expect("mkdir");
    let outside_abs = f.outside.path().join("x.mp4").display().to_string();
    let cases = [
        ("outdir/x.mp4", codes::PATH_OUTSIDE_MEDIA_ROOT),
        (outside_abs.as_str(), codes::PATH_OUTSIDE_MEDIA_ROOT),
        ("dangling.mp4", codes::INVALID_FIELD),
        ("alias.mp4", codes::INVALID_FIELD),
        ("dir.mp4", codes::INVALID_FIELD),
        ("nodir/x.mp4", codes::FILE_NOT_FOUND),
        ("../x.mp4", codes::INVALID_FIELD),
        ("x.avi", codes::INVALID_FIELD),
        ("x", codes::INVALID_FIELD),
        ("x.webm", codes::INVALID_FIELD), // h264 in webm
        ("/", codes::INVALID_FIELD),
        ("x\0.mp4", codes::INVALID_FIELD),
    ];
    for (p, code) in cases {
        assert_err(
            parse_in(&file_out(base(), p), &f.roots),
            code,
            Some("output.path"),
        );
    }
    // The output may not overwrite the input.
    let v = with(
        file_out(file_in("in.mp4"), "./in.mp4"),
        "overwrite",
        json!(true),
    );
    assert_err(
        parse_in(&v, &f.roots),
        codes::INVALID_FIELD,
        Some("output.path"),
    );
}

#[test]
fn containers_accept_only_codecs_ffmpeg_can_mux() {
    let f = fixture();
    let ok = [
        ("h264", "mp4"),
        ("h264", "mkv"),
        ("h264", "mov"),
        ("h264", "ts"),
        ("h264", "flv"),
        ("h265", "mp4"),
        ("h265", "mkv"),
        ("h265", "mov"),
        ("h265", "ts"),
        ("vp9", "mp4"),
        ("vp9", "mkv"),
        ("vp9", "webm"),
        ("av1", "mp4"),
        ("av1", "mkv"),
        ("av1", "webm"),
    ];
    for codec in ["h264", "h265", "vp9", "av1"] {
        for ext in ["mp4", "mkv", "mov", "webm", "ts", "flv"] {
            let v = with(file_out(base(), &format!("o.{ext}")), "codec", json!(codec));
            let r = parse_in(&v, &f.roots);
            if ok.contains(&(codec, ext)) {
                assert!(r.is_ok(), "{codec} in {ext}: {r:?}");
            } else {
                assert_err(r, codes::INVALID_FIELD, Some("output.path"));
            }
        }
    }
}
