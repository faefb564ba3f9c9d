use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("sub/in.mp4"), b"inside").unwrap();
    std::fs::write(outside.join("secret.mp4"), b"outside").unwrap();
    Fixture {
        _tmp: tmp,
        root,
        outside,
    }
}

const METHODS: [Method; 2] = [Method::Auto, Method::Walk];

fn read(f: &mut File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn inputs_open_beneath_the_root() {
    let fx = fixture();
    for m in METHODS {
        let r = Resolver::with_method(std::slice::from_ref(&fx.root), m);
        let mut f = r.open_input(&fx.root.join("sub/in.mp4")).unwrap();
        assert_eq!(read(&mut f), "inside", "{m:?}");
    }
}

#[test]
fn a_symlinked_directory_component_is_refused() {
    let fx = fixture();
    std::fs::write(fx.outside.join("in.mp4"), b"outside").unwrap();
    std::fs::rename(fx.root.join("sub"), fx.root.join("was-sub")).unwrap();
    symlink(&fx.outside, fx.root.join("sub")).unwrap();
    for m in METHODS {
        let r = Resolver::with_method(std::slice::from_ref(&fx.root), m);
        let e = r.open_input(&fx.root.join("sub/in.mp4")).unwrap_err();
        assert!(matches!(e, ConfineError::Outside { .. }), "{m:?}: {e:?}");
        assert_eq!(e.reason(), FailureReason::PathOutsideMediaRoot);
        let e = r
            .create_output(&fx.root.join("sub/out.mp4"), "j-1", false)
            .unwrap_err();
        assert!(matches!(e, ConfineError::Outside { .. }), "{m:?}: {e:?}");
        assert!(
            std::fs::read_dir(&fx.outside).unwrap().count() == 2,
            "{m:?}"
        );
    }
}

#[test]
fn a_symlinked_leaf_is_refused_even_pointing_inside() {
    let fx = fixture();
    symlink(fx.outside.join("secret.mp4"), fx.root.join("evil.mp4")).unwrap();
    symlink(fx.root.join("sub/in.mp4"), fx.root.join("alias.mp4")).unwrap();
    symlink("sub/in.mp4", fx.root.join("relative.mp4")).unwrap();
    for m in METHODS {
        let r = Resolver::with_method(std::slice::from_ref(&fx.root), m);
        for name in ["evil.mp4", "alias.mp4", "relative.mp4"] {
            let e = r.open_input(&fx.root.join(name)).unwrap_err();
            assert!(
                matches!(e, ConfineError::Outside { .. }),
                "{m:?} {name}: {e:?}"
            );
        }
        // An output whose final name is a symlink: refused, the target untouched.
        let e = r
            .create_output(&fx.root.join("evil.mp4"), "j-2", true)
            .unwrap_err();
        assert!(matches!(e, ConfineError::Outside { .. }), "{m:?}: {e:?}");
        let e = r
            .create_output(&fx.root.join("sub/deeper"), "j-3", true)
            .unwrap_err();
        assert!(matches!(e, ConfineError::InTheWay { .. }), "{m:?}: {e:?}");
        assert_eq!(
            std::fs::read(fx.outside.join("secret.mp4")).unwrap(),
            b"outside"
        );
    }
}

#[test]
fn paths_outside_every_root_and_odd_components_are_refused() {
    let fx = fixture();
    let r = Resolver::new(std::slice::from_ref(&fx.root));
    for p in [
        fx.outside.join("secret.mp4"),
        fx.root.clone(),
        fx.root.join("sub/../sub/in.mp4"),
        PathBuf::from("relative/in.mp4"),
    ] {
        let e = r.open_input(&p).unwrap_err();
        assert_eq!(
            e.reason(),
            FailureReason::PathOutsideMediaRoot,
            "{p:?}: {e:?}"
        );
    }
    // A root that is a prefix by string but not by component.
    let sibling = fx.root.with_file_name("rootx");
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(sibling.join("a.mp4"), b"x").unwrap();
    assert!(matches!(
        r.open_input(&sibling.join("a.mp4")),
        Err(ConfineError::Outside { .. })
    ));
}

#[test]
fn inputs_must_be_regular_files_and_a_fifo_does_not_block() {
    let fx = fixture();
    let fifo = fx.root.join("pipe.mp4");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
    for m in METHODS {
        let r = Resolver::with_method(std::slice::from_ref(&fx.root), m);
        assert!(matches!(
            r.open_input(&fifo),
            Err(ConfineError::NotRegular { .. })
        ));
        assert!(matches!(
            r.open_input(&fx.root.join("sub")),
            Err(ConfineError::NotRegular { .. })
        ));
        assert!(matches!(
            r.open_input(&fx.root.join("missing.mp4")),
            Err(ConfineError::NotFound { .. })
        ));
    }
}

#[test]
fn outputs_appear_only_when_published() {
    let fx = fixture();
    for (i, m) in METHODS.into_iter().enumerate() {
        let r = Resolver::with_method(std::slice::from_ref(&fx.root), m);
        let path = fx.root.join(format!("sub/deeper/out{i}.mp4"));
        let out = r
            .create_output(&path, &format!("job/1-{i}"), false)
            .unwrap();
        out.file().write_all(b"encoded").unwrap();
        let tmp = fx.root.join("sub/deeper").join(out.temp_name());
        assert!(tmp.exists(), "{m:?}");
        assert!(out.temp_name().as_bytes().starts_with(b".ffrtmp-job_1-"));
        assert!(!path.exists(), "{m:?}: visible before publishing");
        assert_eq!(out.len(), Some(7));
        out.publish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"encoded");
        assert!(!tmp.exists(), "{m:?}");

        // Dropped unpublished (a failed attempt): nothing is left.
        let failed = fx.root.join(format!("sub/failed{i}.mp4"));
        let out = r.create_output(&failed, "job-2", false).unwrap();
        let tmp = fx.root.join("sub").join(out.temp_name());
        out.file().write_all(b"partial").unwrap();
        drop(out);
        assert!(!tmp.exists() && !failed.exists(), "{m:?}");
    }
}

#[test]
fn an_existing_output_is_never_replaced_silently() {
    let fx = fixture();
    let r = Resolver::new(std::slice::from_ref(&fx.root));
    let path = fx.root.join("sub/in.mp4");
    // Taken at creation: refused at once.
    assert!(matches!(
        r.create_output(&path, "a", false),
        Err(ConfineError::Exists { .. })
    ));
    // Taken while the job ran: RENAME_NOREPLACE refuses, the temp goes.
    let late = fx.root.join("sub/late.mp4");
    let out = r.create_output(&late, "b", false).unwrap();
    out.file().write_all(b"new").unwrap();
    let tmp = fx.root.join("sub").join(out.temp_name());
    std::fs::write(&late, b"someone else's").unwrap();
    let e = out.publish().unwrap_err();
    assert_eq!(e.reason(), FailureReason::OutputExists);
    assert_eq!(std::fs::read(&late).unwrap(), b"someone else's");
    assert!(!tmp.exists());
    // With overwrite: replaced.
    let out = r.create_output(&path, "c", true).unwrap();
    out.file().write_all(b"replaced").unwrap();
    out.publish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
}

#[test]
fn a_stale_temp_file_or_symlink_in_its_place_is_replaced_not_followed() {
    let fx = fixture();
    let r = Resolver::with_method(std::slice::from_ref(&fx.root), Method::Walk);
    let planted = fx.root.join("sub").join(temp_name("j-9"));
    symlink(fx.outside.join("secret.mp4"), &planted).unwrap();
    let out = r
        .create_output(&fx.root.join("sub/o.mp4"), "j-9", false)
        .unwrap();
    out.file().write_all(b"mine").unwrap();
    out.publish().unwrap();
    assert_eq!(
        std::fs::read(fx.outside.join("secret.mp4")).unwrap(),
        b"outside"
    );
    assert_eq!(std::fs::read(fx.root.join("sub/o.mp4")).unwrap(), b"mine");
}

#[test]
fn the_longest_matching_root_is_used() {
    let fx = fixture();
    let inner = fx.root.join("sub");
    let r = Resolver::new(&[fx.root.clone(), inner.clone()]);
    let path = inner.join("in.mp4");
    let s = r.split(&path).unwrap();
    assert_eq!(s.root, inner.as_path());
    assert!(s.dirs.is_empty());
}
