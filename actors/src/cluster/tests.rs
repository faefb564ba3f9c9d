use super::MasterAddr;

fn parse(s: &str) -> Result<MasterAddr, String> {
    s.parse()
}

#[test]
fn a_master_address_is_an_ip_or_a_dns_name_with_a_port() {
    let v4 = parse("10.0.0.10:7400").expect("IPv4");
    assert_eq!((v4.host(), v4.port()), ("10.0.0.10", 7400));
    let v6 = parse("[fd00::10]:7400").expect("IPv6");
    assert_eq!((v6.host(), v6.port()), ("fd00::10", 7400));
    assert_eq!(v6.to_string(), "[fd00::10]:7400");
    let name = parse("master-1.ffrtmp.internal:7400").expect("a name");
    assert_eq!(
        (name.host(), name.port()),
        ("master-1.ffrtmp.internal", 7400)
    );
    assert_eq!(name.to_string(), "master-1.ffrtmp.internal:7400");
    assert!(parse("master.:7400").is_ok(), "a fully qualified name");
}

#[test]
fn a_malformed_master_address_is_refused_with_the_reason() {
    for (bad, why) in [
        ("master", "no port"),
        ("master:", "the port"),
        ("master:70000", "the port"),
        ("master:0", "port 0"),
        ("fd00::10:7400", "brackets"),
        ("[fd00::10:7400", "brackets"),
        (":7400", "neither"),
        ("ma ster:7400", "neither"),
        ("-master:7400", "neither"),
        ("a..b:7400", "neither"),
        ("mäster:7400", "neither"),
    ] {
        let e = parse(bad).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
        assert!(e.contains(bad), "the error quotes the input: {e}");
    }
}

#[tokio::test]
async fn localhost_resolves_to_a_loopback_address() {
    let found = parse("localhost:7400")
        .expect("a name")
        .resolve()
        .await
        .expect("localhost resolves");
    assert!(found
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 7400));
    let ip = parse("127.0.0.1:9").expect("an address");
    let found = ip.resolve().await.expect("an address resolves to itself");
    assert_eq!(found, vec!["127.0.0.1:9".parse().expect("an address")]);
}
