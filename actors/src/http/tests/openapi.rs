//! The OpenAPI document: exactly the routes served, each with its
//! authentication, parameters and errors; every reference resolves.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::jobs::{ListQuery, MAX_PAGE};
use super::super::nodes::{DrainQuery, MAX_DRAIN_DEADLINE_S};
use super::super::openapi::API_KEY_SCHEME;
use super::super::{openapi, routes};
use ffrtmp_runtime::report::ReportQuery;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

pub(super) fn doc() -> Value {
    serde_json::to_value(openapi()).expect("the document serialises")
}

/// Every operation in `doc`: (method, path, needs the API key, operation).
fn operations(doc: &Value) -> Vec<(String, String, bool, Value)> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let keyed = op["security"]
                .as_array()
                .is_some_and(|reqs| reqs.iter().any(|r| r.get(API_KEY_SCHEME).is_some()));
            out.push((method.to_uppercase(), path.clone(), keyed, op.clone()));
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes_served_with_their_authentication() {
    let served: BTreeSet<(String, String, bool)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string(), r.needs_key))
        .collect();
    let doc = doc();
    let documented: BTreeSet<(String, String, bool)> = operations(&doc)
        .into_iter()
        .map(|(m, p, k, _)| (m, p, k))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "(method, path, needs key) served but not documented: {undocumented:?}; \
         documented but not served: {unserved:?}"
    );
    // The openapi.json route itself is public, like health.
    assert!(served.contains(&("GET".into(), "/v1/openapi.json".into(), false)));
}

#[test]
fn every_operation_documents_its_parameters_and_errors() {
    let doc = doc();
    let scheme = &doc["components"]["securitySchemes"][API_KEY_SCHEME];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    for (method, path, keyed, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success response"
        );
        if keyed {
            assert!(responses.contains_key("401"), "{what}: no 401");
        }
        // Every error is the one error shape.
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                if path == "/readyz" {
                    continue;
                }
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{what} {status}"
                );
            }
        }
        // Each `{name}` in the path is a documented path parameter.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for name in path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                "{what}: path parameter {name} is not documented"
            );
            assert!(responses.contains_key("404"), "{what}: no 404");
        }
    }
}

/// The query parameters are the ones the handlers read, with their bounds.
#[test]
fn query_parameters_match_the_handlers() {
    let doc = doc();
    let names = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let set = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names("/v1/jobs", "get"), set(&ListQuery::NAMES));
    assert_eq!(
        names("/v1/nodes/{id}/drain", "post"),
        set(&DrainQuery::NAMES)
    );
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name && p["in"] == "query"))
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path}: no query parameter {name}"))
    };
    assert_eq!(
        names("/v1/reports/efficiency", "get"),
        set(&ReportQuery::PARAMS)
    );
    let label = param("/v1/reports/efficiency", "get", "label");
    assert_eq!(label["schema"]["type"], "array", "{label}");
    assert_eq!(label["schema"]["items"]["pattern"], "^[^=]+=", "{label}");
    for name in ["min_vmaf", "min_psnr"] {
        let p = param("/v1/reports/efficiency", "get", name);
        assert_eq!(p["schema"]["minimum"], 0, "{p}");
        assert_eq!(p["schema"]["maximum"], 100, "{p}");
    }
    let limit = param("/v1/jobs", "get", "limit");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
    let deadline = param("/v1/nodes/{id}/drain", "post", "deadline_s");
    assert_eq!(deadline["schema"]["maximum"], MAX_DRAIN_DEADLINE_S);
    let cursor = param("/v1/jobs", "get", "cursor");
    assert_eq!(cursor["schema"]["maximum"], u64::MAX, "{cursor}");
    for name in ["state", "priority", "cursor"] {
        assert_eq!(param("/v1/jobs", "get", name)["required"], false);
    }
}

/// Every `$ref` in the document names a schema it has.
#[test]
fn every_reference_resolves() {
    fn walk(v: &Value, refs: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    refs.insert(r.clone());
                }
                m.values().for_each(|x| walk(x, refs));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, refs)),
            _ => {}
        }
    }
    let doc = doc();
    let mut refs = BTreeSet::new();
    walk(&doc, &mut refs);
    assert!(refs.len() > 10, "{refs:?}");
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}
