use super::*;

#[test]
fn names_are_validated() {
    assert!(validate_rel("ffrtmp/node-abc").is_ok());
    assert!(validate_rel("0193c2f4-7b7e-7c4b-9f00-1a2b3c4d5e6f.1").is_ok());
    for bad in [
        "", "/", "a//b", "../x", "a/..", ".hidden", "a b", "a\0b", "cpu/é",
    ] {
        assert!(validate_rel(bad).is_err(), "{bad:?} accepted");
    }
    assert!(validate_rel(&"x".repeat(129)).is_err());
}

#[test]
fn keyed_values_parse() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("memory.events");
    fs::write(&p, "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\n").unwrap();
    assert_eq!(keyed_value(&p, "oom_kill"), Some(1));
    assert_eq!(keyed_value(&p, "oom"), Some(2));
    assert_eq!(keyed_value(&p, "missing"), None);
}
