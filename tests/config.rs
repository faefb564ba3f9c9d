//! `ffrtmp-node --config FILE` as an operator runs it: the example files in
//! config/, precedence in a real process (defaults < file < FFRTMP_*
//! environment < flags), and what a bad file says. Everything goes through
//! `--print-config`, which prints the effective configuration and checks it
//! without starting a node.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ffrtmp-node");

/// ffrtmp-node without the FFRTMP_* variables of the test process: each test
/// sets the ones it means.
fn node() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FFRTMP_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run ffrtmp-node")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The printed configuration, which must be a valid TOML config.
fn printed(out: &Output) -> toml::Table {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    toml::from_str(&stdout(out)).expect("--print-config prints TOML")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The printed line of a key (value and source comment).
fn line_of<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{out}"))
}

#[test]
fn each_example_file_loads_checks_and_gives_its_values() {
    for name in ["master.toml", "worker.toml", "standalone.toml"] {
        let path = example(name);
        let text = std::fs::read_to_string(&path).expect("example file");
        let file: toml::Table = toml::from_str(&text).expect("the example is TOML");
        assert!(file.len() >= 8, "{name}: a realistic example sets its keys");
        let out = run(node().arg("--config").arg(&path).arg("--print-config"));
        let effective = printed(&out);
        for (key, value) in &file {
            assert_eq!(effective.get(key), Some(value), "{name}: `{key}`");
            assert!(
                line_of(&stdout(&out), key).ends_with("# file"),
                "{name}: `{key}` from the file"
            );
        }
        assert!(stdout(&out).contains(&format!("# Config file: {}", path.display())));
        assert!(
            !file.contains_key("api_key") && !file.contains_key("join_token"),
            "{name}: secrets come from the environment, not the example"
        );

        // The printed configuration is itself a config file that gives the
        // same configuration.
        let dir = tempfile::tempdir().expect("tempdir");
        let again = write(dir.path(), "again.toml", &stdout(&out));
        let out2 = run(node().arg("--config").arg(&again).arg("--print-config"));
        assert_eq!(printed(&out2), effective, "{name}: round trip");
    }
}

#[test]
fn precedence_is_defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "node.toml",
        r#"
data_dir = "/from/file"
slots = 2
http = "127.0.0.1:9001"
media_root = ["/file/a", "/file/b"]
kill_grace_s = 1.5
lease_ms = 20000
"#,
    );
    for how in ["flag", "env"] {
        let mut cmd = node();
        match how {
            "flag" => cmd.arg("--config").arg(&path),
            _ => cmd.env("FFRTMP_CONFIG", &path),
        };
        let out = run(cmd
            .env("FFRTMP_SLOTS", "3")
            .env("FFRTMP_HTTP", "127.0.0.1:9002")
            .env("FFRTMP_MEDIA_ROOT", "/env/a,/env/b")
            .args(["--http", "127.0.0.1:9003", "--print-config"]));
        let c = printed(&out);
        let text = stdout(&out);
        assert_eq!(c["data_dir"].as_str(), Some("/from/file"), "{how}");
        assert_eq!(c["kill_grace_s"].as_float(), Some(1.5), "{how}");
        assert_eq!(c["lease_ms"].as_integer(), Some(20_000), "{how}");
        assert_eq!(c["slots"].as_integer(), Some(3), "env beats file ({how})");
        assert_eq!(
            c["media_root"],
            toml::Value::Array(vec!["/env/a".into(), "/env/b".into()]),
            "an env list replaces the file's ({how})"
        );
        assert_eq!(
            c["http"].as_str(),
            Some("127.0.0.1:9003"),
            "flag beats env and file ({how})"
        );
        assert_eq!(c["role"].as_str(), Some("standalone"), "default ({how})");
        assert!(line_of(&text, "data_dir").ends_with("# file"), "{text}");
        assert!(
            line_of(&text, "slots").ends_with("# env FFRTMP_SLOTS"),
            "{text}"
        );
        assert!(line_of(&text, "http").ends_with("# flag"), "{text}");
        assert!(line_of(&text, "role").ends_with("# default"), "{text}");
    }

    // --config beats FFRTMP_CONFIG, like every flag beats its variable.
    let other = write(dir.path(), "other.toml", "slots = 6\n");
    let c = printed(&run(node()
        .env("FFRTMP_CONFIG", &path)
        .arg("--config")
        .arg(&other)
        .arg("--print-config")));
    assert_eq!(c["slots"].as_integer(), Some(6));
    assert_eq!(
        c["data_dir"].as_str(),
        Some("./data"),
        "the other file is not read"
    );
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "node.toml", "slots = 2\nbogus_key = 1\n");
    let out = run(node().arg("--config").arg(&path).arg("--print-config"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown key `bogus_key`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(stdout(&out).is_empty(), "nothing printed");

    // The node itself refuses to start with it (it would keep running).
    let mut child = node()
        .arg("--config")
        .arg(&path)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffrtmp-node");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ffrtmp-node started despite an unknown key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let out = child.wait_with_output().expect("stderr");
    assert!(stderr(&out).contains("bogus_key"), "{}", stderr(&out));
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, key, why) in [
        (
            "slots = \"four\"\n",
            "`slots`",
            "expected an integer, found a string",
        ),
        ("lease_ms = 10\n", "`lease_ms`", "1000..=600000"),
        (
            "role = \"boss\"\n",
            "`role`",
            "possible values: standalone, master, worker",
        ),
        (
            "http = \"localhost\"\n",
            "`http`",
            "invalid value \"localhost\"",
        ),
        (
            "media_root = \"/a\"\nkill_grace_s = true\n",
            "`kill_grace_s`",
            "expected a number, found a boolean",
        ),
        (
            "[data_dir]\npath = \"/x\"\n",
            "`data_dir`",
            "expected a string, found a table",
        ),
    ] {
        let path = write(dir.path(), "node.toml", text);
        let out = run(node().arg("--config").arg(&path).arg("--print-config"));
        assert!(!out.status.success(), "{text}");
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(why), "{text}: {err}");
    }
}

#[test]
fn secrets_are_not_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "node.toml", "api_key = \"file-secret\"\n");
    let out = run(node()
        .arg("--config")
        .arg(&path)
        .env("FFRTMP_JOIN_TOKEN", "env-secret")
        .arg("--print-config"));
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !text.contains("file-secret") && !text.contains("env-secret"),
        "{text}"
    );
    assert!(
        line_of(&text, "api_key").contains("is set (not shown)"),
        "{text}"
    );
    assert!(
        line_of(&text, "join_token").contains("is set (not shown)"),
        "{text}"
    );
}

#[test]
fn print_config_checks_what_it_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "node.toml", "role = \"master\"\n");
    let out = run(node().arg("--config").arg(&path).arg("--print-config"));
    assert!(!out.status.success(), "a master needs --pki");
    assert!(stderr(&out).contains("--pki"), "{}", stderr(&out));
    assert!(stdout(&out).contains("role = \"master\""), "printed anyway");
}

#[test]
fn subcommands_do_not_read_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(dir.path(), "bad.toml", "bogus_key = 1\n");
    let out = run(node()
        .env("FFRTMP_CONFIG", &bad)
        .args(["pki", "init", "--dir"])
        .arg(dir.path().join("pki")));
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------
// Operator mistakes refused at start (docs/CONFIG.md, "Refused at start").

/// Start a real node with `args` (a fresh data dir, any HTTP port) and
/// expect it to refuse to start: its exit status and stderr. A node that
/// starts instead is stopped with SIGTERM and the test fails.
fn refused_at_start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = node();
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http", "127.0.0.1:0", "--cgroup-parent"])
        .arg(format!("ffrtmp-test-{}-refused", std::process::id()))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ffrtmp-node");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let out = child.wait_with_output().expect("stopped");
            panic!(
                "ffrtmp-node {args:?} {env:?} started instead of refusing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn an_empty_api_key_is_refused_at_start_from_a_flag_the_environment_or_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "empty-key.toml", "api_key = \"\"\n");
    let file = file.to_str().expect("a UTF-8 path");
    for (args, env) in [
        (vec!["--api-key", ""], vec![]),
        (vec![], vec![("FFRTMP_API_KEY", "")]),
        (vec!["--config", file], vec![]),
    ] {
        let (code, err) = refused_at_start(dir.path(), &args, &env);
        assert_eq!(code, 1, "{args:?} {env:?}: {err}");
        for name in ["--api-key", "FFRTMP_API_KEY", "`api_key`", "empty"] {
            assert!(err.contains(name), "{args:?} {env:?}: {name} in {err}");
        }
    }
}

#[test]
fn system_directories_and_the_data_dir_are_refused_as_media_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let inside = data.join("pki");
    std::fs::create_dir_all(&inside).expect("mkdir");
    // A symlink to a system directory is that directory.
    let link = dir.path().join("looks-harmless");
    std::os::unix::fs::symlink("/etc", &link).expect("symlink");
    let to_str = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let cases = [
        "/".to_string(),
        "/etc".to_string(),
        "/usr/share".to_string(),
        "/var/lib".to_string(),
        "/var".to_string(),
        "/proc".to_string(),
        to_str(&data),
        to_str(dir.path()),
        to_str(&inside),
        to_str(&link),
    ];
    for root in &cases {
        let (code, err) = refused_at_start(dir.path(), &["--media-root", root], &[]);
        assert_eq!(code, 1, "{root}: {err}");
        assert!(
            err.contains(&format!("--media-root {root}")),
            "{root}: {err}"
        );
        assert!(err.contains("--allow-system-media-root"), "{root}: {err}");
    }
    // The explicit switch accepts one (checked without starting a node on `/`).
    let out = run(node().args(["--data-dir"]).arg(&data).args([
        "--media-root",
        "/",
        "--allow-system-media-root",
        "--print-config",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    // The default root, `<data_dir>/media`, and a root beside the data dir
    // pass.
    let beside = dir.path().join("media");
    std::fs::create_dir_all(&beside).expect("mkdir");
    for root in [data.join("media"), beside] {
        let out = run(node()
            .arg("--data-dir")
            .arg(&data)
            .arg("--media-root")
            .arg(&root)
            .arg("--print-config"));
        assert!(out.status.success(), "{}: {}", root.display(), stderr(&out));
    }
}

#[test]
fn zero_slots_are_refused_naming_the_flag_or_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = refused_at_start(dir.path(), &["--slots", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--slots"), "{err}");
    let file = write(
        dir.path(),
        "zero.toml",
        "role = \"standalone\"\nslots = 0\n",
    );
    let (code, err) = refused_at_start(
        dir.path(),
        &["--config", file.to_str().expect("a UTF-8 path")],
        &[],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("line 2: `slots`"), "{err}");
}
