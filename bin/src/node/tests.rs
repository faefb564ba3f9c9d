use super::*;
use std::path::Path;

fn parse(args: &[&str]) -> anyhow::Result<Parsed> {
    parse_args(
        std::iter::once("ffrtmp-node")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect(),
    )
}

fn example(name: &str) -> String {
    format!("{}/../config/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// The ids of the flags a config file sets, from the file itself.
fn ids_in(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("example file");
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    let keys = config::keys(&node_command());
    table
        .keys()
        .map(|name| {
            keys.iter()
                .find(|k| k.name == *name)
                .map(|k| k.id.clone())
                .unwrap_or_else(|| panic!("{path}: unknown key {name}"))
        })
        .collect()
}

#[test]
fn every_node_flag_is_a_key_named_like_its_ffrtmp_variable() {
    let keys = config::keys(&node_command());
    assert_eq!(keys.len(), node_command().get_arguments().count());
    for key in &keys {
        assert_eq!(
            key.env.as_deref(),
            Some(format!("FFRTMP_{}", key.name.to_ascii_uppercase()).as_str()),
            "--{}",
            key.long
        );
        assert_eq!(key.name, key.long.replace('-', "_"));
    }
    for not_a_key in ["config", "print_config", "help", "version"] {
        assert!(keys.iter().all(|k| k.name != not_a_key), "{not_a_key}");
    }
    let secrets: Vec<&str> = keys
        .iter()
        .filter(|k| k.secret)
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(secrets, ["api_key", "join_token"]);
}

#[test]
fn the_master_example_loads_and_passes_the_checks() {
    let path = example("master.toml");
    let p = parse(&["--config", &path]).expect("loads");
    let f = &p.cli.node;
    assert!(matches!(f.role, Role::Master));
    assert_eq!(f.data_dir, Path::new("/var/lib/ffrtmp"));
    assert_eq!(f.http, addr("127.0.0.1:8080"));
    assert_eq!(f.media_roots, [Path::new("/srv/media")]);
    assert_eq!(f.max_body_bytes, 65536);
    assert_eq!(f.pki.as_deref(), Some(Path::new("/etc/ffrtmp/pki")));
    assert_eq!(f.listen, addr("0.0.0.0:7400"));
    assert_eq!(f.lease_ms, 10_000);
    assert_eq!((f.keep_alive_ms, f.idle_timeout_ms), (300, 1500));
    assert_eq!(f.ffmpeg, Path::new("/usr/bin/ffmpeg"));
    assert_eq!(f.api_key, None, "the key comes from FFRTMP_API_KEY");
    assert_eq!(p.from_file, ids_in(&path), "every key reached the flags");
    check_flags(f).expect("a valid master");
}

#[test]
fn the_worker_example_loads_and_passes_the_checks() {
    let path = example("worker.toml");
    let p = parse(&["--config", &path]).expect("loads");
    let f = &p.cli.node;
    assert!(matches!(f.role, Role::Worker));
    assert_eq!(f.data_dir, Path::new("/var/lib/ffrtmp"));
    assert_eq!(f.master, Some(addr("10.0.0.10:7400").into()));
    assert_eq!(f.join_token, None, "the token comes from FFRTMP_JOIN_TOKEN");
    assert_eq!(f.slots, Some(4));
    assert_eq!(f.media_roots, [Path::new("/srv/media")]);
    assert_eq!(
        f.encoders.as_deref(),
        Some(&["libx264", "libx265", "libvpx-vp9", "libsvtav1"].map(String::from)[..])
    );
    assert_eq!(f.cgroup_parent, "ffrtmp");
    assert_eq!(f.kill_grace_s, 2.0);
    assert_eq!(f.drain_deadline_s, 600);
    assert!(matches!(f.power_source, PowerSourceFlag::Auto));
    assert_eq!(f.powercap_root, Path::new("/sys/class/powercap"));
    assert_eq!(f.power_sample_hz, 10.0);
    assert_eq!(p.from_file, ids_in(&path), "every key reached the flags");
    check_flags(f).expect("a valid worker");
}

#[test]
fn the_standalone_example_loads_and_passes_the_checks() {
    let path = example("standalone.toml");
    let p = parse(&["--config", &path]).expect("loads");
    let f = &p.cli.node;
    assert!(matches!(f.role, Role::Standalone));
    assert_eq!(f.data_dir, Path::new("/var/lib/ffrtmp"));
    assert_eq!(f.http, addr("127.0.0.1:8080"));
    assert_eq!(f.slots, Some(2));
    assert_eq!(f.kill_grace_s, 3.0);
    assert_eq!(f.lease_ms, 10_000);
    assert_eq!(f.estimate_idle_watts, Some(8.0));
    assert_eq!(f.estimate_max_watts, Some(45.0));
    assert_eq!(f.encoders, None);
    assert_eq!(p.from_file, ids_in(&path), "every key reached the flags");
    check_flags(f).expect("a valid standalone node");
}

/// Every key, set in a file, reaches its field; flags still win.
#[test]
fn every_key_loads_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("all.toml");
    std::fs::write(
        &path,
        r#"
            role = "worker"
            data_dir = "/d"
            http = "127.0.0.1:1"
            media_root = ["/m1", "/m2"]
            slots = 3
            api_key = "k"
            max_body_bytes = 1000
            max_experiment_jobs = 77
            max_http_connections = 10
            http_header_timeout_s = 11
            http_body_timeout_s = 12
            allow_system_media_root = true
            ffmpeg = "/f/ffmpeg"
            ffprobe = "/f/ffprobe"
            cgroup_parent = "cg"
            encoders = ["libx264"]
            pki = "/pki"
            listen = "127.0.0.1:2"
            listen_addr_file = "/la"
            master = "127.0.0.1:3"
            join_token = "t"
            drain_deadline_s = 4
            keep_alive_ms = 5
            idle_timeout_ms = 6
            http_addr_file = "/ha"
            metrics_listen = "127.0.0.1:4"
            kill_grace_s = 0.5
            lease_ms = 7000
            max_commit_batch = 64
            commit_interval_us = 250
            store_reserve_mb = 8
            power_source = "estimate"
            powercap_root = "/pc"
            power_sample_hz = 2
            estimate_idle_watts = 1.5
            estimate_max_watts = 20
            run_log = "/rl"
            vmaf_bin = "/vm"
            "#,
    )
    .expect("write");
    let path = path.to_string_lossy().into_owned();
    let p = parse(&["--config", &path, "--slots", "9"]).expect("loads");
    let all: BTreeSet<String> = config::keys(&node_command())
        .into_iter()
        .map(|k| k.id)
        .filter(|id| id != "slots")
        .collect();
    assert_eq!(p.from_file, all, "the file above sets every key");
    let f = &p.cli.node;
    assert_eq!(f.slots, Some(9), "the flag wins");
    assert!(matches!(f.role, Role::Worker));
    assert_eq!(f.media_roots, [Path::new("/m1"), Path::new("/m2")]);
    assert_eq!(f.api_key.as_deref(), Some("k"));
    assert_eq!(f.join_token.as_deref(), Some("t"));
    assert_eq!(f.metrics_listen, Some(addr("127.0.0.1:4")));
    assert_eq!(f.master, Some(addr("127.0.0.1:3").into()));
    assert_eq!(f.kill_grace_s, 0.5);
    assert_eq!(f.power_sample_hz, 2.0);
    assert_eq!(f.estimate_max_watts, Some(20.0));
    assert_eq!(f.max_experiment_jobs, 77);
    assert_eq!((f.max_commit_batch, f.commit_interval_us), (64, 250));
    assert_eq!(f.store_reserve_mb, 8);
    assert!(matches!(f.power_source, PowerSourceFlag::Estimate));
    assert_eq!(f.run_log.as_deref(), Some(Path::new("/rl")));
    assert_eq!(f.vmaf_bin.as_deref(), Some(Path::new("/vm")));
    assert_eq!(
        (
            f.max_http_connections,
            f.http_header_timeout_s,
            f.http_body_timeout_s
        ),
        (10, 11, 12)
    );
    assert!(f.allow_system_media_root);
}

#[test]
fn bad_files_are_errors_that_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "slots = 2\npower-source = \"rapl\"\n").expect("write");
    let path = path.to_string_lossy().into_owned();
    let err = format!("{:#}", parse(&["--config", &path]).expect_err("refused"));
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("line 2: unknown key `power-source`"), "{err}");
    assert!(err.contains("did you mean `power_source`"), "{err}");
    let err = format!(
        "{:#}",
        parse(&["--config", "/nonexistent/ffrtmp.toml"]).expect_err("refused")
    );
    assert!(err.contains("/nonexistent/ffrtmp.toml"), "{err}");
}

#[test]
fn subcommands_do_not_read_the_config_file() {
    let p = parse(&[
        "--config",
        "/nonexistent/ffrtmp.toml",
        "pki",
        "join-token",
        "--dir",
        "x",
    ])
    .expect("the file is not read");
    assert!(p.config.is_none());
}

#[test]
fn the_configuration_doc_lists_every_key() {
    let doc = std::fs::read_to_string(format!("{}/../docs/CONFIG.md", env!("CARGO_MANIFEST_DIR")))
        .expect("docs/CONFIG.md");
    for key in config::keys(&node_command()) {
        let env = key.env.unwrap_or_default();
        assert!(
            doc.contains(&format!("| `{}` |", key.name)) && doc.contains(&env),
            "docs/CONFIG.md: no row for `{}` ({env})",
            key.name
        );
    }
}
