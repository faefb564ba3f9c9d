use super::*;

/// A command like the node's: a path with a default, a ranged integer,
/// a number, a list, a switch, a secret, possible values.
fn toy() -> Command {
    Command::new("toy")
        .arg(
            Arg::new("data_dir")
                .long("data-dir")
                .default_value("./data")
                .value_parser(clap::value_parser!(std::path::PathBuf)),
        )
        .arg(
            Arg::new("lease_ms")
                .long("lease-ms")
                .default_value("10000")
                .value_parser(clap::value_parser!(u64).range(1_000..=600_000)),
        )
        .arg(
            Arg::new("slots")
                .long("slots")
                .value_parser(clap::value_parser!(u32)),
        )
        .arg(
            Arg::new("grace")
                .long("kill-grace-s")
                .default_value("2")
                .value_parser(clap::value_parser!(f64)),
        )
        .arg(
            Arg::new("roots")
                .long("media-root")
                .action(ArgAction::Append)
                .value_delimiter(','),
        )
        .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
        .arg(
            Arg::new("api_key")
                .long("api-key")
                .hide_env_values(true)
                .env("FFRTMP_TEST_CONFIG_RS_NEVER_SET"),
        )
        .arg(
            Arg::new("role")
                .long("role")
                .default_value("standalone")
                .value_parser(["standalone", "master", "worker"]),
        )
}

/// argv, parsed with the file's text layered under it, as the node does.
fn run(text: &str, argv: &[&str]) -> Result<(ArgMatches, BTreeSet<String>), String> {
    let keys = keys(&toy());
    let settings = parse(text, &keys)?;
    let argv: Vec<OsString> = std::iter::once("toy")
        .chain(argv.iter().copied())
        .map(OsString::from)
        .collect();
    let first = toy()
        .try_get_matches_from(&argv)
        .map_err(|e| e.to_string())?;
    let (args, from_file) = merge(&argv, &settings, &first);
    let m = toy()
        .try_get_matches_from(&args)
        .map_err(|e| e.to_string())?;
    Ok((m, from_file))
}

fn one(m: &ArgMatches, id: &str) -> String {
    let values: Vec<String> = m
        .get_raw(id)
        .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    values.join(",")
}

#[test]
fn keys_are_the_long_flags_with_underscores() {
    let keys = keys(&toy());
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data_dir",
            "lease_ms",
            "slots",
            "kill_grace_s",
            "media_root",
            "quiet",
            "api_key",
            "role"
        ]
    );
    let kind = |n: &str| keys.iter().find(|k| k.name == n).map(|k| (k.kind, k.many));
    assert_eq!(kind("data_dir"), Some((Kind::String, false)));
    assert_eq!(kind("lease_ms"), Some((Kind::Integer, false)));
    assert_eq!(kind("slots"), Some((Kind::Integer, false)));
    assert_eq!(kind("kill_grace_s"), Some((Kind::Float, false)));
    assert_eq!(kind("media_root"), Some((Kind::String, true)));
    assert_eq!(kind("quiet"), Some((Kind::Switch { given: true }, false)));
    assert!(keys.iter().any(|k| k.name == "api_key" && k.secret));
}

#[test]
fn the_file_beats_defaults_and_flags_beat_the_file() {
    let text = r#"
            data_dir = "/var/lib/ffrtmp"
            lease_ms = 20000
            slots = 3
            kill_grace_s = 4
            media_root = ["/srv/a", "/srv/b"]
            quiet = true
        "#;
    let (m, from_file) = run(text, &[]).expect("loads");
    assert_eq!(one(&m, "data_dir"), "/var/lib/ffrtmp");
    assert_eq!(one(&m, "lease_ms"), "20000");
    assert_eq!(one(&m, "slots"), "3");
    assert_eq!(m.get_one::<f64>("grace"), Some(&4.0));
    assert_eq!(one(&m, "roots"), "/srv/a,/srv/b");
    assert!(m.get_flag("quiet"));
    assert_eq!(one(&m, "role"), "standalone", "untouched default");
    assert_eq!(from_file.len(), 6);

    let (m, from_file) = run(
        text,
        &["--slots", "5", "--media-root", "/x", "--data-dir=/d"],
    )
    .expect("loads");
    assert_eq!(one(&m, "slots"), "5");
    assert_eq!(one(&m, "roots"), "/x", "a flag's list replaces the file's");
    assert_eq!(one(&m, "data_dir"), "/d");
    assert_eq!(one(&m, "lease_ms"), "20000");
    assert!(!from_file.contains("slots") && from_file.contains("lease_ms"));
}

#[test]
fn the_environment_beats_the_file_through_value_source() {
    assert!(beats_file(Some(ValueSource::CommandLine)));
    assert!(beats_file(Some(ValueSource::EnvVariable)));
    assert!(!beats_file(Some(ValueSource::DefaultValue)));
    assert!(!beats_file(None));
}

#[test]
fn switches_and_single_values_for_lists() {
    let (m, _) = run("quiet = false\nmedia_root = \"/one\"", &[]).expect("loads");
    assert!(!m.get_flag("quiet"));
    assert_eq!(one(&m, "roots"), "/one");
    let (m, _) = run("quiet = false", &["--quiet"]).expect("loads");
    assert!(m.get_flag("quiet"), "the flag wins over the file");
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let err = run("slots = 2\nbogus = 1\n", &[]).expect_err("refused");
    assert!(err.contains("line 2: unknown key `bogus`"), "{err}");
    let err = run("data-dir = \"/x\"", &[]).expect_err("refused");
    assert!(err.contains("did you mean `data_dir`"), "{err}");
    let err = run("[lease]\nms = 3", &[]).expect_err("refused");
    assert!(err.contains("unknown key `lease`"), "{err}");
    // Every problem at once, in line order.
    let err = run("a = 1\nslots = \"x\"\nb = 2\n", &[]).expect_err("refused");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("line 1:") && lines[2].starts_with("line 3:"));
}

#[test]
fn values_of_the_wrong_type_are_named() {
    for (text, want) in [
        (
            "slots = \"4\"",
            "`slots`: expected an integer, found a string",
        ),
        (
            "data_dir = 5",
            "`data_dir`: expected a string, found an integer",
        ),
        (
            "kill_grace_s = \"2\"",
            "`kill_grace_s`: expected a number, found a string",
        ),
        (
            "quiet = \"yes\"",
            "`quiet`: expected true or false, found a string",
        ),
        (
            "media_root = [1]",
            "`media_root`: expected an array of strings",
        ),
        (
            "slots = [1, 2]",
            "`slots`: expected an integer, found an array",
        ),
        ("slots = -1", "`slots`: invalid value \"-1\""),
        (
            "lease_ms = 5",
            "`lease_ms`: invalid value \"5\": 5 is not in 1000..=600000",
        ),
        (
            "role = \"boss\"",
            "`role`: invalid value \"boss\" (possible values: standalone, master, worker)",
        ),
    ] {
        let err = run(text, &[]).expect_err(text);
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn toml_syntax_errors_say_where() {
    let err = run("slots = 2\nhttp = 127.0.0.1:80\n", &[]).expect_err("refused");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn render_loads_back_and_hides_secrets() {
    let text = "lease_ms = 20000\nmedia_root = [\"/a\", \"/b\"]\nquiet = true\napi_key = \"s3cret\"\nkill_grace_s = 2.5\n";
    let (m, from_file) = run(text, &["--slots", "7"]).expect("loads");
    let printed = render(&keys(&toy()), &m, Some(Path::new("toy.toml")), &from_file);
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(
        printed.contains("# api_key is set (not shown)"),
        "{printed}"
    );
    assert!(printed.contains("slots = 7"), "{printed}");
    assert!(printed.contains("# flag"), "{printed}");
    assert!(printed.contains("# file"), "{printed}");
    assert!(printed.contains("# default"), "{printed}");
    let (again, _) = run(&printed, &[]).expect("the output is a config file");
    for id in [
        "data_dir", "lease_ms", "slots", "grace", "roots", "quiet", "role",
    ] {
        assert_eq!(one(&again, id), one(&m, id), "{id}");
    }
    assert_eq!(again.get_raw("api_key").map(|v| v.count()), None);
}
