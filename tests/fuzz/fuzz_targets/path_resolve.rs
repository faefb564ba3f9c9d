//! `confine::Resolver` (the worker opening a job's files beneath its media
//! root) over a file system the input builds: directories, files and
//! symlinks (to anywhere: inside, outside, absolute, `..`), then paths to
//! open as inputs and outputs, by `openat2` and by the fallback walk.
//! Whatever is opened is inside: an input read never yields the outside
//! file's bytes, and an output never creates or changes anything outside.
//!
//! The input is text, one operation a line:
//! `d NAME` (mkdir), `f NAME` (a file holding `INSIDE`), `l NAME TARGET`
//! (symlink), `r PATH` (open as an input), `w PATH` (create and publish an
//! output), `W PATH` (the same with overwrite). NAMEs are made inside the
//! root only (one component, or below the real directory `sub`).
#![no_main]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ffrtmp_os::confine::{Method, Resolver};
use libfuzzer_sys::fuzz_target;

const OUTSIDE: &[u8] = b"OUTSIDE";
const INSIDE: &[u8] = b"INSIDE";

/// A name the setup may create: one plain component, or `sub/<one>`.
fn setup_name(name: &str) -> Option<&str> {
    let plain =
        |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0');
    match name.strip_prefix("sub/") {
        Some(rest) if plain(rest) => Some(name),
        _ if plain(name) => Some(name),
        _ => None,
    }
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let content = std::fs::read(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), content)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let base: PathBuf = std::env::temp_dir().join(format!(
        "ffrtmp-fuzz-confine-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("sub")).expect("root");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret"), OUTSIDE).expect("secret");
    let before = listing(&outside);

    let text = String::from_utf8_lossy(data);
    for (n, line) in text.lines().take(64).enumerate() {
        let mut parts = line.splitn(3, ' ');
        let (op, a, b) = (parts.next(), parts.next(), parts.next());
        match (op, a.and_then(setup_name), b) {
            (Some("d"), Some(name), _) => {
                let _ = std::fs::create_dir(root.join(name));
            }
            (Some("f"), Some(name), _) => {
                let p = root.join(name);
                // Never through a symlink the input made.
                if std::fs::symlink_metadata(&p).is_err() {
                    let _ = std::fs::write(p, INSIDE);
                }
            }
            (Some("l"), Some(name), Some(target)) => {
                let target = target.replace("@OUT", &outside.to_string_lossy());
                let _ = std::os::unix::fs::symlink(target, root.join(name));
            }
            _ => {}
        }
        let Some(path) = a else { continue };
        let path = root.join(path);
        for method in [Method::Auto, Method::Walk] {
            let r = Resolver::with_method(std::slice::from_ref(&root), method);
            match op {
                Some("r") => {
                    if let Ok(mut f) = r.open_input(&path) {
                        let mut got = Vec::new();
                        let _ = f.read_to_end(&mut got);
                        assert_ne!(got, OUTSIDE, "{method:?} read outside via {path:?}");
                    }
                }
                Some(op @ ("w" | "W")) => {
                    let tag = format!("{n}-{method:?}");
                    if let Ok(out) = r.create_output(&path, &tag, op == "W") {
                        let _ = out.file().write_all(INSIDE);
                        let _ = out.publish();
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(listing(&outside), before, "something outside changed");
    let _ = std::fs::remove_dir_all(&base);
});
