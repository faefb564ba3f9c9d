//! Join tokens: parsing, the token store, verification.

use super::*;

#[test]
fn token_round_trip() {
    let tok = JoinToken {
        id: "0123456789abcdef".into(),
        secret: "abcDEF0123456789_-xyzabcDEF0123456789_-xyz0".into(),
        ca_fingerprint: "ab".repeat(32),
    };
    let s = tok.to_string_token();
    assert!(s.starts_with("ffrtmp1."));
    assert!(!s.contains(' '));
    assert_eq!(JoinToken::parse(&s).unwrap(), tok);
    assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), tok);
    // An upper-case fingerprint is accepted and normalized.
    let upper = format!(
        "ffrtmp1.{}.{}.{}",
        tok.id,
        tok.secret,
        tok.ca_fingerprint.to_ascii_uppercase()
    );
    assert_eq!(JoinToken::parse(&upper).unwrap(), tok);
    assert!(!format!("{tok:?}").contains(&tok.secret));
}

#[test]
fn malformed_tokens_are_rejected() {
    let fp = "ab".repeat(32);
    for s in [
        "".to_string(),
        "ffrtmp1".into(),
        format!("ffrtmp2.abc.secretsecretsecret.{fp}"),
        format!("ffrtmp1..secretsecretsecret.{fp}"),
        format!("ffrtmp1.ABC.secretsecretsecret.{fp}"),
        format!("ffrtmp1.abc.short.{fp}"),
        format!("ffrtmp1.abc.secret secretsecret.{fp}"),
        "ffrtmp1.abc.secretsecretsecret.abcd".to_string(),
        format!("ffrtmp1.abc.secretsecretsecret.{fp}.extra"),
        format!("ffrtmp1.abc.secretsecretsecret.{}", "zz".repeat(32)),
    ] {
        let err = JoinToken::parse(&s).unwrap_err();
        assert!(matches!(err, PkiError::MalformedToken(_)), "{s:?}: {err}");
        assert!(!err.to_string().contains("secretsecret"), "{err}");
    }
    assert!(JoinToken::parse(&format!("ffrtmp1.abc.secretsecretsecret.{fp}")).is_ok());
}

#[test]
fn created_token_verifies_and_is_reusable_until_expiry() {
    let dir = init_dir();
    let tok = create_join_token(dir.path(), HOUR, NOW_MS).unwrap();
    let parsed = JoinToken::parse(&tok.to_string_token()).unwrap();
    assert_eq!(parsed, tok);
    assert_eq!(
        tok.ca_fingerprint,
        CertificateAuthority::load(dir.path())
            .unwrap()
            .fingerprint()
    );
    verify_join_token(dir.path(), &parsed, NOW_MS).unwrap();
    verify_join_token(dir.path(), &parsed, NOW_MS + 1000).unwrap();
    verify_join_token(dir.path(), &parsed, NOW_MS + 3_599_999).unwrap();
    let err = verify_join_token(dir.path(), &parsed, NOW_MS + 3_600_000).unwrap_err();
    assert!(matches!(err, PkiError::TokenExpired { .. }), "{err}");
    #[cfg(unix)]
    assert_eq!(mode(&dir.path().join(TOKENS_FILE)), 0o600);
}

#[test]
fn verify_rejects_wrong_secret_unknown_id_and_wrong_fingerprint() {
    let dir = init_dir();
    let tok = create_join_token(dir.path(), HOUR, NOW_MS).unwrap();

    let wrong_secret = JoinToken {
        secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]),
        ..tok.clone()
    };
    let err = verify_join_token(dir.path(), &wrong_secret, NOW_MS).unwrap_err();
    assert!(matches!(err, PkiError::TokenSecretMismatch { .. }), "{err}");

    let unknown = JoinToken {
        id: "ffffffffffffffff".into(),
        ..tok.clone()
    };
    let err = verify_join_token(dir.path(), &unknown, NOW_MS).unwrap_err();
    assert!(matches!(err, PkiError::UnknownToken { .. }), "{err}");

    let other = init_dir();
    let wrong_fp = JoinToken {
        ca_fingerprint: CertificateAuthority::load(other.path())
            .unwrap()
            .fingerprint(),
        ..tok.clone()
    };
    let err = verify_join_token(dir.path(), &wrong_fp, NOW_MS).unwrap_err();
    assert!(
        matches!(err, PkiError::TokenFingerprintMismatch { .. }),
        "{err}"
    );
    // The token store of another cluster does not know this token.
    let err = verify_join_token(other.path(), &tok, NOW_MS).unwrap_err();
    assert!(matches!(err, PkiError::UnknownToken { .. }), "{err}");
    // No error message carries the secret.
    for e in [
        verify_join_token(dir.path(), &wrong_secret, NOW_MS).unwrap_err(),
        verify_join_token(dir.path(), &wrong_fp, NOW_MS).unwrap_err(),
    ] {
        assert!(!e.to_string().contains(&tok.secret));
    }
}

#[test]
fn token_store_keeps_others_prunes_expired_and_never_holds_secrets() {
    let dir = init_dir();
    let short = create_join_token(dir.path(), Duration::from_secs(10), NOW_MS).unwrap();
    let long = create_join_token(dir.path(), HOUR, NOW_MS).unwrap();
    verify_join_token(dir.path(), &short, NOW_MS + 1).unwrap();
    verify_join_token(dir.path(), &long, NOW_MS + 1).unwrap();

    // 20 s later the short one has expired and is pruned by the next create.
    let third = create_join_token(dir.path(), HOUR, NOW_MS + 20_000).unwrap();
    let err = verify_join_token(dir.path(), &short, NOW_MS + 20_001).unwrap_err();
    assert!(matches!(err, PkiError::UnknownToken { .. }), "{err}");
    verify_join_token(dir.path(), &long, NOW_MS + 20_001).unwrap();
    verify_join_token(dir.path(), &third, NOW_MS + 20_001).unwrap();

    let json = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
    for t in [&short, &long, &third] {
        assert!(!json.contains(&t.secret), "secret in clear in tokens.json");
    }
    assert!(json.contains(&long.id) && json.contains(&third.id));
    assert!(!json.contains(&short.id));
    assert!(json.contains(&hex(&sha256(long.secret.as_bytes()))));
}

#[test]
fn corrupt_token_store_is_an_error_naming_the_file() {
    let dir = init_dir();
    fs::write(dir.path().join(TOKENS_FILE), "{ not json").unwrap();
    let err = create_join_token(dir.path(), HOUR, NOW_MS).unwrap_err();
    assert!(matches!(err, PkiError::TokenStore { .. }), "{err}");
    assert!(err.to_string().contains(TOKENS_FILE), "{err}");
}

proptest! {
    #[test]
    fn parse_never_panics(s in ".{0,600}") {
        let _ = JoinToken::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_token_like_strings(
        parts in proptest::collection::vec("[a-zA-Z0-9_\\-. ]{0,70}", 0..7)
    ) {
        let s = parts.join(".");
        if let Ok(t) = JoinToken::parse(&s) {
            // Whatever parses formats back to an equivalent token.
            prop_assert_eq!(JoinToken::parse(&t.to_string_token()).unwrap(), t);
        }
    }
}
