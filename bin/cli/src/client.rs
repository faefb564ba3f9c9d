//! The HTTP client: the master's URL and key, requests, the API's error
//! shape (`{"error": {"code", "message", "field"}}`), and the exit code each
//! failure maps to.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::{Certificate, StatusCode, Url};
use serde_json::Value;

/// Exit codes scripts can rely on (also in `ffrtmp --help` and docs/CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; with `--wait` or `watch`: every job succeeded.
    Ok = 0,
    /// With `--wait` or `watch`: a job failed, was cancelled or timed out.
    JobFailed = 1,
    /// Bad arguments (clap's own code), or a `--file` that cannot be read.
    Usage = 2,
    /// The master cannot be reached (connection refused, timeout, stream cut).
    Unreachable = 3,
    /// `401`: no API key, or the wrong one.
    Auth = 4,
    /// `404`: no such job or node.
    NotFound = 5,
    /// Any other `4xx`: the request was refused (validation, already finished).
    Refused = 6,
    /// A `5xx`, or an answer that is not the API's.
    Server = 7,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// One failure, said in one line, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) type CliResult<T> = Result<T, CliError>;

/// Seconds a plain request (not an event stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An event stream is given up when nothing (not even the server's
/// keep-alive comment, every 15 s) arrives for this long.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The master's HTTP API.
#[derive(Clone)]
pub(crate) struct Client {
    base: Url,
    /// `--master` was a bare `host:port` (no scheme).
    bare: bool,
    key: Option<String>,
    http: Http,
    /// For event streams: its timeout bounds each read, not the whole body.
    stream: Http,
}

impl Client {
    /// `master` is the API's base URL (`http://` or `https://host:port`,
    /// maybe with a path prefix); `key` the bearer key, if any; `ca_cert` a
    /// PEM file of CA certificates to trust for an `https://` master, on top
    /// of the built-in public roots.
    pub(crate) fn new(
        master: &str,
        key: Option<String>,
        ca_cert: Option<&Path>,
    ) -> CliResult<Client> {
        let base = parse_master(master)?;
        let https = base.scheme() == "https";
        let roots = match ca_cert {
            Some(path) => read_ca_certs(path)?,
            None => Vec::new(),
        };
        let build = |timeout: Duration| {
            let mut b = Http::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(timeout)
                .user_agent(concat!("ffrtmp/", env!("CARGO_PKG_VERSION")))
                .use_rustls_tls()
                .https_only(https);
            for cert in &roots {
                b = b.add_root_certificate(cert.clone());
            }
            b.build().map_err(|e| {
                CliError::new(Exit::Server, format!("cannot build an HTTP client: {e}"))
            })
        };
        Ok(Client {
            base,
            bare: !master.contains("://"),
            key: key.filter(|k| !k.is_empty()),
            http: build(REQUEST_TIMEOUT)?,
            stream: build(STREAM_IDLE_TIMEOUT)?,
        })
    }

    /// The base URL, as given.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `base` + path segments (each percent-encoded) + query pairs.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn auth(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// `GET` a JSON document.
    pub(crate) fn get(&self, segments: &[&str], query: &[(&str, String)]) -> CliResult<Value> {
        let url = self.url(segments, query);
        let resp = self.send(self.auth(self.http.get(url.clone())), &url)?;
        Ok(read_json(resp, &url, self)?.1)
    }

    /// `POST` (with a JSON body, if any): the status and the JSON answer.
    pub(crate) fn post(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> CliResult<(StatusCode, Value)> {
        let url = self.url(segments, query);
        let mut rb = self.auth(self.http.post(url.clone()));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb, &url)?;
        read_json(resp, &url, self)
    }

    /// Open a job's event stream (`GET /v1/jobs/{id}/events`); errors as for
    /// any request.
    pub(crate) fn events(&self, id: &str) -> CliResult<Response> {
        let url = self.url(&["v1", "jobs", id, "events"], &[]);
        let rb = self
            .auth(self.stream.get(url.clone()))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let resp = self.send(rb, &url)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            // An error answer is JSON like any other.
            Err(read_json(resp, &url, self).err().unwrap_or_else(|| {
                CliError::new(Exit::Server, format!("{url}: unexpected answer"))
            }))
        }
    }

    fn send(&self, rb: RequestBuilder, url: &Url) -> CliResult<Response> {
        rb.send().map_err(|e| self.unreachable(url, &e))
    }

    /// The one line for "cannot talk to the master".
    pub(crate) fn unreachable(&self, url: &Url, e: &reqwest::Error) -> CliError {
        let why = if e.is_timeout() {
            format!("timed out on {}", url.path())
        } else {
            root_cause(e)
        };
        // A certificate the client does not trust: say which knob trusts it.
        let hint = if self.base.scheme() == "https" && mentions_certificate(e) {
            "; trust the master's CA with --ca-cert or FFRTMP_CA_CERT, or check --master"
        } else if self.bare {
            // FFRTMP_MASTER is also a worker's QUIC address (HOST:PORT), so
            // a shell that starts workers may hand us the wrong port.
            "; set --master or FFRTMP_MASTER to the master's HTTP API URL (its --http, e.g. \
             http://HOST:8080), not a worker's --master QUIC address"
        } else {
            "; set --master or FFRTMP_MASTER"
        };
        CliError::new(
            Exit::Unreachable,
            format!("cannot reach the master at {} ({why}){hint}", self.base),
        )
    }

    /// Whether a key is sent (for the 401 message).
    pub(crate) fn has_key(&self) -> bool {
        self.key.is_some()
    }
}

/// The innermost error's text ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether any error in the chain is about the peer's certificate (rustls
/// says "invalid peer certificate: UnknownIssuer" and the like).
fn mentions_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The CA certificates in a PEM file (`--ca-cert`, `FFRTMP_CA_CERT`): one or
/// more `CERTIFICATE` blocks. Errors name the file (exit 2: nothing was sent).
pub(crate) fn read_ca_certs(path: &Path) -> CliResult<Vec<Certificate>> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        CliError::usage(format!(
            "--ca-cert / FFRTMP_CA_CERT {shown}: cannot read it ({e})"
        ))
    })?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
        CliError::usage(format!(
            "--ca-cert / FFRTMP_CA_CERT {shown}: not PEM certificates ({e})"
        ))
    })?;
    if certs.is_empty() {
        return Err(CliError::usage(format!(
            "--ca-cert / FFRTMP_CA_CERT {shown}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// `--master` as a URL: `http://` or `https://`; a bare `host:port` means
/// `http://host:port`.
pub(crate) fn parse_master(master: &str) -> CliResult<Url> {
    let text = if master.contains("://") {
        master.to_string()
    } else {
        format!("http://{master}")
    };
    let url = Url::parse(&text).map_err(|e| {
        CliError::usage(format!(
            "--master / FFRTMP_MASTER {master:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::usage(format!(
            "--master / FFRTMP_MASTER {master:?}: the scheme must be http:// or https://"
        )));
    }
    if url.host_str().is_none() || url.cannot_be_a_base() {
        return Err(CliError::usage(format!(
            "--master / FFRTMP_MASTER {master:?} names no host; e.g. http://127.0.0.1:8080"
        )));
    }
    Ok(url)
}

/// The status and JSON body of an answer; an error status becomes a
/// [`CliError`] with the API's code, field and message.
fn read_json(resp: Response, url: &Url, client: &Client) -> CliResult<(StatusCode, Value)> {
    let status = resp.status();
    let text = resp.text().map_err(|e| client.unreachable(url, &e))?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return match body {
            Some(v) => Ok((status, v)),
            None => Err(CliError::new(
                Exit::Server,
                format!(
                    "{url} answered {status} with something that is not JSON; is --master ({}) an ffrtmp master?",
                    client.base
                ),
            )),
        };
    }
    Err(api_error(status, body.as_ref(), client.has_key(), url))
}

/// An error answer as one line and an exit code.
pub(crate) fn api_error(
    status: StatusCode,
    body: Option<&Value>,
    has_key: bool,
    url: &Url,
) -> CliError {
    let err = body.map(|b| &b["error"]);
    let code = err.and_then(|e| e["code"].as_str());
    let message = err.and_then(|e| e["message"].as_str());
    let field = err.and_then(|e| e["field"].as_str());
    if status == StatusCode::UNAUTHORIZED {
        let msg = if has_key {
            "the master refused the API key (401); check --api-key / FFRTMP_API_KEY"
        } else {
            "the master needs an API key (401); pass --api-key or set FFRTMP_API_KEY"
        };
        return CliError::new(Exit::Auth, msg);
    }
    let exit = if status == StatusCode::NOT_FOUND {
        Exit::NotFound
    } else if status.is_client_error() {
        Exit::Refused
    } else {
        Exit::Server
    };
    let Some(code) = code else {
        return CliError::new(
            exit,
            format!(
                "{url} answered {status} without the API's error body; is it an ffrtmp master?"
            ),
        );
    };
    let message = message.unwrap_or("(no message)");
    let text = match field {
        Some(f) => format!(
            "refused: field `{f}`: {message} ({code}, HTTP {})",
            status.as_u16()
        ),
        None if exit == Exit::NotFound => format!("{message} ({code})"),
        None => format!("refused: {message} ({code}, HTTP {})", status.as_u16()),
    };
    CliError::new(exit, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:8080/v1/jobs").expect("url")
    }

    #[test]
    fn validation_errors_name_the_field_and_exit_6() {
        let body = json!({"error": {"code": "invalid_field", "message": "width must be even", "field": "width"}});
        let e = api_error(StatusCode::BAD_REQUEST, Some(&body), false, &url());
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("`width`"), "{}", e.message);
        assert!(e.message.contains("width must be even"), "{}", e.message);
        assert!(e.message.contains("invalid_field"), "{}", e.message);
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let body = json!({"error": {"code": "x", "message": "m", "field": null}});
        let exit = |s| api_error(s, Some(&body), true, &url()).exit;
        assert_eq!(exit(StatusCode::UNAUTHORIZED), Exit::Auth);
        assert_eq!(exit(StatusCode::NOT_FOUND), Exit::NotFound);
        assert_eq!(exit(StatusCode::CONFLICT), Exit::Refused);
        assert_eq!(exit(StatusCode::PAYLOAD_TOO_LARGE), Exit::Refused);
        assert_eq!(exit(StatusCode::INTERNAL_SERVER_ERROR), Exit::Server);
        // Not the API's shape: still a clear line, same class of exit.
        let e = api_error(StatusCode::BAD_GATEWAY, None, false, &url());
        assert_eq!(e.exit, Exit::Server);
        assert!(e.message.contains("502"), "{}", e.message);
    }

    #[test]
    fn a_401_says_which_knob_to_turn() {
        let with = api_error(StatusCode::UNAUTHORIZED, None, true, &url());
        assert!(
            with.message.contains("refused the API key"),
            "{}",
            with.message
        );
        let without = api_error(StatusCode::UNAUTHORIZED, None, false, &url());
        assert!(
            without.message.contains("needs an API key"),
            "{}",
            without.message
        );
        for e in [with, without] {
            assert!(e.message.contains("FFRTMP_API_KEY"));
            assert_eq!(e.exit, Exit::Auth);
        }
    }

    #[test]
    fn master_urls() {
        assert_eq!(
            parse_master("127.0.0.1:9000").expect("bare").as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            parse_master("https://x:1").expect("https").as_str(),
            "https://x:1/"
        );
        assert!(parse_master("ftp://x:1").is_err());
        assert!(parse_master("http://").is_err());
        let c = Client::new("http://h:1/prefix/", None, None).expect("client");
        assert_eq!(
            c.url(&["v1", "jobs", "a/b"], &[("state", "running".into())])
                .as_str(),
            "http://h:1/prefix/v1/jobs/a%2Fb?state=running"
        );
        let c = Client::new("http://h:1", Some(String::new()), None).expect("client");
        assert!(!c.has_key(), "an empty key is no key");
        assert_eq!(c.url(&["v1", "nodes"], &[]).as_str(), "http://h:1/v1/nodes");
    }

    #[test]
    fn a_ca_cert_file_is_read_or_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A real CA certificate, from the cluster PKI's own generator.
        ffrtmp_transport_quic::pki::init(dir.path(), &[]).expect("pki init");
        let ca = dir.path().join(ffrtmp_transport_quic::pki::CA_CERT_FILE);
        assert_eq!(read_ca_certs(&ca).expect("ca.pem").len(), 1);
        Client::new("https://127.0.0.1:1", None, Some(&ca)).expect("client with a CA");

        let missing = dir.path().join("nope.pem");
        let e = Client::new("https://127.0.0.1:1", None, Some(&missing))
            .err()
            .expect("a missing file is an error");
        assert_eq!(e.exit, Exit::Usage);
        assert!(
            e.message.contains(&missing.display().to_string())
                && e.message.contains("FFRTMP_CA_CERT"),
            "{}",
            e.message
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let e = read_ca_certs(&junk).expect_err("no certificate in it");
        assert_eq!(e.exit, Exit::Usage);
        assert!(
            e.message.contains(&junk.display().to_string()),
            "{}",
            e.message
        );
    }
}
