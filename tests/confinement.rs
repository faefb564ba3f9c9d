//! Confinement where the file is opened, against the real `ffrtmp-node`
//! binary and real FFmpeg (issue 15, findings 1, 2 and 5).
//!
//! Paths are checked at submission; these tests change the file system
//! *after* the `201`, while the job waits for the node's only slot (held by
//! a long job, cancelled once the change is made), and check what the
//! worker does when it opens the files.
//!
//! | check | test |
//! |---|---|
//! | a directory of the input, or the input itself, swapped for a symlink leading outside: the job fails `path_outside_media_root` naming the path, the outside file is never read | [`symlink_swaps_after_the_201_read_and_write_nothing_outside`] |
//! | the same for the output's directory and the output's name: nothing is written outside, an outside file is not overwritten | [`symlink_swaps_after_the_201_read_and_write_nothing_outside`] |
//! | an HLS playlist saved as `.mp4` whose segment is outside: refused at submission (`input_format_not_allowed`); a valid input rewritten into one after the `201` fails `input_refused`; the outside content never reaches the root | [`an_hls_playlist_named_mp4_is_refused_and_nothing_comes_in`] |
//! | a cancelled or timed-out file job leaves nothing under the output's name, nor its temporary file | [`failed_attempts_leave_nothing_under_the_final_name`] |
//! | an existing output is refused at submission; one that appears while the job waits is kept and the job fails `output_exists`; `"overwrite": true` replaces it | [`an_existing_output_is_never_replaced_unless_asked`] |
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

/// A standalone node with one slot, so a job can be held queued.
fn one_slot(name: &str) -> Node {
    Node::start(
        name,
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    )
}

/// A real 1 s MP4 at `path` (`size` picks its picture, so two files differ).
fn make_mp4(path: &Path, size: &str) {
    let source = format!("testsrc2=size={size}:rate=10:duration=1");
    lavfi_clip(
        path,
        &source,
        &["-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4"],
    );
}

/// The width of the first video stream of a media file, by ffprobe.
fn width_of(path: &Path) -> Option<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A job over a file input (or testsrc with `None`) to `output`.
fn job(input: Option<&str>, output: Value) -> Value {
    let input = match input {
        Some(p) => json!({"type": "file", "path": p}),
        None => json!({"type": "testsrc", "duration_s": 1}),
    };
    json!({
        "scenario": "480p30-h264", "width": 160, "height": 90, "preset": "ultrafast",
        "input": input, "output": output
    })
}

fn file_out(path: &str) -> Value {
    json!({"type": "file", "path": path})
}

/// Takes the node's only slot with a long job and waits until it runs.
fn hold_slot(node: &Node) -> String {
    let id = node.submit(long_job(3600.0));
    node.wait_state(&id, &["running"], LONG);
    id
}

/// Cancels the job holding the slot; the queued ones start.
fn release_slot(node: &Node, id: &str) {
    let (status, body) = node.post(&format!("/v1/jobs/{id}/cancel"));
    assert!(status == 200 || status == 202, "cancel: {status} {body}");
    node.wait_state(id, &["cancelled"], LONG);
}

/// The job's terminal record.
fn finished(node: &Node, id: &str) -> Value {
    node.wait_state(id, &["succeeded", "failed", "cancelled", "timed_out"], LONG)
}

fn assert_failed(job: &Value, reason: &str, names: &Path) {
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["failure"]["reason"], reason, "{job}");
    let msg = job["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(&names.display().to_string()),
        "the reason names {}: {job}",
        names.display()
    );
    assert_eq!(job["attempt"], 1, "terminal, not retried: {job}");
}

/// Names in `dir` (sorted).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// No temporary output file anywhere under `dir`.
fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".ffrtmp-"),
            "a temporary output is left: {}",
            e.path().display()
        );
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            no_temporaries(&e.path());
        }
    }
}

/// Swaps the directory `dir` for a symlink to `to` (the original kept aside).
fn swap_dir(dir: &Path, to: &Path) {
    std::fs::rename(dir, dir.with_extension("orig")).expect("move the directory aside");
    std::os::unix::fs::symlink(to, dir).expect("symlink");
}

#[test]
fn symlink_swaps_after_the_201_read_and_write_nothing_outside() {
    let node = one_slot("confine-swap");
    let media = node.media.clone();
    let outside = node.dir.path().join("outside");
    let outside_out = node.dir.path().join("outside-out");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::create_dir_all(&outside_out).expect("outside-out");
    // Inside: 64 px wide inputs; outside: 96 px wide, so an output made
    // from an outside file would show it.
    for d in ["in-dir", "out-dir"] {
        std::fs::create_dir_all(media.join(d)).expect("dir");
    }
    make_mp4(&media.join("in-dir/in.mp4"), "64x64");
    make_mp4(&media.join("leaf.mp4"), "64x64");
    make_mp4(&outside.join("in.mp4"), "96x64");
    make_mp4(&outside.join("secret.mp4"), "96x64");
    std::fs::write(outside.join("victim.mp4"), b"precious").expect("victim");

    let holder = hold_slot(&node);
    let jobs = [
        // 0: a directory of the input swapped.
        node.submit(job(Some("in-dir/in.mp4"), file_out("from-dir.mkv"))),
        // 1: the input itself swapped.
        node.submit(job(Some("leaf.mp4"), file_out("from-leaf.mkv"))),
        // 2: the output's directory swapped.
        node.submit(job(None, file_out("out-dir/o.mp4"))),
        // 3: the output's name made a symlink to an outside file.
        node.submit(job(None, file_out("victim.mp4"))),
    ];
    swap_dir(&media.join("in-dir"), &outside);
    std::fs::rename(media.join("leaf.mp4"), media.join("leaf.orig")).expect("aside");
    std::os::unix::fs::symlink(outside.join("secret.mp4"), media.join("leaf.mp4"))
        .expect("leaf symlink");
    swap_dir(&media.join("out-dir"), &outside_out);
    std::os::unix::fs::symlink(outside.join("victim.mp4"), media.join("victim.mp4"))
        .expect("victim symlink");
    release_slot(&node, &holder);

    let canon = std::fs::canonicalize(&media).expect("canonical media");
    let names = [
        canon.join("in-dir/in.mp4"),
        canon.join("leaf.mp4"),
        canon.join("out-dir/o.mp4"),
        canon.join("victim.mp4"),
    ];
    for (id, path) in jobs.iter().zip(&names) {
        assert_failed(&finished(&node, id), "path_outside_media_root", path);
    }
    // Nothing read from outside came in, nothing was written outside.
    assert!(!media.join("from-dir.mkv").exists() && !media.join("from-leaf.mkv").exists());
    assert_eq!(listing(&outside_out), Vec::<String>::new());
    assert_eq!(
        std::fs::read(outside.join("victim.mp4")).expect("victim"),
        b"precious"
    );
    assert_eq!(
        listing(&outside),
        ["in.mp4", "secret.mp4", "victim.mp4"].map(String::from)
    );
    no_temporaries(&media);

    // The same paths without the swaps run (and the output is the inside
    // picture): the refusals above were the symlinks'.
    std::fs::remove_file(media.join("in-dir")).expect("unlink");
    std::fs::rename(media.join("in-dir.orig"), media.join("in-dir")).expect("back");
    let ok = node.submit(job(Some("in-dir/in.mp4"), file_out("from-dir.mkv")));
    assert_eq!(finished(&node, &ok)["state"], "succeeded");
    assert_eq!(width_of(&media.join("from-dir.mkv")), Some(160));
}

#[test]
fn an_hls_playlist_named_mp4_is_refused_and_nothing_comes_in() {
    let node = one_slot("confine-hls");
    let media = node.media.clone();
    let outside = node.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    // The outside segment: real MPEG-TS video, which FFmpeg would happily
    // transcode into the root if it followed the playlist.
    let segment = outside.join("secret.ts");
    lavfi_clip(
        &segment,
        "testsrc2=size=96x64:rate=10:duration=1",
        &["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"],
    );
    let playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
        segment.display()
    );
    std::fs::write(media.join("evil.mp4"), &playlist).expect("playlist");
    let file_url = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\nfile:{}\n#EXT-X-ENDLIST\n",
        segment.display()
    );
    std::fs::write(media.join("evil2.mp4"), &file_url).expect("playlist");

    // At submission: refused, naming the input.
    for name in ["evil.mp4", "evil2.mp4"] {
        let (status, err) = node.post_json("/v1/jobs", &job(Some(name), file_out("got.mkv")));
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "input_format_not_allowed", "{err}");
        assert_eq!(err["error"]["field"], "input.path", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("hls"),
            "{err}"
        );
    }

    // A valid input rewritten into a playlist after the 201: refused when
    // the worker opens it.
    make_mp4(&media.join("in.mp4"), "64x64");
    let holder = hold_slot(&node);
    let id = node.submit(job(Some("in.mp4"), file_out("got.mkv")));
    std::fs::write(media.join("in.mp4"), &playlist).expect("rewrite");
    release_slot(&node, &holder);
    let done = finished(&node, &id);
    let canon = std::fs::canonicalize(media.join("in.mp4")).expect("canon");
    assert_failed(&done, "input_refused", &canon);
    assert!(
        done["failure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("hls"),
        "{done}"
    );
    assert!(!media.join("got.mkv").exists(), "outside content came in");
    no_temporaries(&media);
}

#[test]
fn failed_attempts_leave_nothing_under_the_final_name() {
    let node = one_slot("confine-partial");
    let media = node.media.clone();
    let long = |path: &str, limits: Value| {
        let mut j = long_job(3600.0);
        j["output"] = file_out(path);
        j["resource_limits"] = limits;
        j
    };
    // Cancelled while writing.
    let id = node.submit(long("cancelled.mkv", json!({})));
    node.wait_state(&id, &["running"], LONG);
    wait_for("the output being written", LONG, || {
        listing(&media)
            .iter()
            .any(|n| n.starts_with(".ffrtmp-") && n.ends_with(".part"))
            .then_some(())
    });
    assert!(
        !media.join("cancelled.mkv").exists(),
        "nothing under the final name while it runs"
    );
    release_slot(&node, &id);
    // Timed out.
    let id = node.submit(long("timed-out.mkv", json!({"timeout_s": 2})));
    let job = finished(&node, &id);
    assert_eq!(job["state"], "timed_out", "{job}");
    assert_eq!(listing(&media), Vec::<String>::new());
}

#[test]
fn an_existing_output_is_never_replaced_unless_asked() {
    let node = one_slot("confine-exists");
    let media = node.media.clone();
    std::fs::write(media.join("taken.mp4"), b"someone's file").expect("taken");

    // At submission: refused, nothing stored.
    let (status, err) = node.post_json("/v1/jobs", &job(None, file_out("taken.mp4")));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "output_exists", "{err}");
    assert_eq!(err["error"]["field"], "output.path", "{err}");

    // Appearing after the 201: kept, the job fails.
    let holder = hold_slot(&node);
    let id = node.submit(job(None, file_out("late.mp4")));
    std::fs::write(media.join("late.mp4"), b"arrived first").expect("late");
    release_slot(&node, &holder);
    let canon: PathBuf = std::fs::canonicalize(&media)
        .expect("canon")
        .join("late.mp4");
    assert_failed(&finished(&node, &id), "output_exists", &canon);
    assert_eq!(
        std::fs::read(media.join("late.mp4")).expect("late"),
        b"arrived first"
    );

    // Asked for: replaced by the encode (an MP4 with +faststart, through
    // the descriptor FFmpeg was given).
    let mut body = job(None, file_out("taken.mp4"));
    body["overwrite"] = json!(true);
    let id = node.submit(body);
    let done = finished(&node, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(width_of(&media.join("taken.mp4")), Some(160));
    assert_eq!(
        done["result"]["output_bytes"].as_u64(),
        std::fs::metadata(media.join("taken.mp4"))
            .ok()
            .map(|m| m.len())
    );
    no_temporaries(&media);
}

#[test]
fn two_live_jobs_never_write_one_output() {
    let node = one_slot("confine-claims");
    let media = node.media.clone();
    let holder = hold_slot(&node);
    // Queued behind the holder: it owns `shared.mkv` until it finishes.
    let first = node.submit(job(None, file_out("shared.mkv")));
    // The same output again (and by another spelling of the path): 409,
    // naming the field and the owner; nothing stored.
    let before = node.get("/v1/jobs").1["jobs"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    let abs = std::fs::canonicalize(&media)
        .expect("canon")
        .join("shared.mkv");
    for path in ["shared.mkv", abs.to_str().expect("utf-8 path")] {
        let (status, err) = node.post_json("/v1/jobs", &job(None, file_out(path)));
        assert_eq!(status, 409, "{err}");
        assert_eq!(err["error"]["code"], "output_in_use", "{err}");
        assert_eq!(err["error"]["field"], "output.path", "{err}");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&first), "names the owner: {err}");
    }
    let after = node.get("/v1/jobs").1["jobs"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    assert_eq!(before, after, "a refused submission stores nothing");
    // Another output is free meanwhile.
    let other = node.submit(job(None, file_out("other.mkv")));
    // Once the owner has finished, the path is free again (its file is
    // there now, so a new job must ask to overwrite it).
    release_slot(&node, &holder);
    assert_eq!(finished(&node, &first)["state"], "succeeded");
    assert_eq!(finished(&node, &other)["state"], "succeeded");
    let mut again = job(None, file_out("shared.mkv"));
    again["overwrite"] = json!(true);
    let id = node.submit(again);
    assert_eq!(finished(&node, &id)["state"], "succeeded");
    no_temporaries(&media);
}
