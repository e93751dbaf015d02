//! Every answer the end-to-end tests read is checked against the OpenAPI documents
//! (`docs/openapi/`, generated from the code): a status the operation documents, and a
//! JSON body that matches that answer's schema. Paths outside the documents (the
//! dashboard's assets, unknown routes, `/metrics`) and methods a path does not serve
//! (the 405 tests) are not operations of the contract and are left alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Map, Value, json};

/// The gateway's and the ETL's documents, as the code generates them.
fn documents() -> &'static (Value, Value) {
    static DOCS: OnceLock<(Value, Value)> = OnceLock::new();
    DOCS.get_or_init(|| {
        (
            crate::stack::backend::openapi::gateway_openapi(),
            serde_json::to_value(pulse_etl::api::etl_openapi()).expect("the ETL document"),
        )
    })
}

type Validators = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;

/// The validator of `schema`, its `$ref`s resolved against `doc`'s components.
fn validator(key: String, doc: &Value, schema: &Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let cache = CACHE.get_or_init(Validators::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(cache.entry(key).or_insert_with(|| {
        let mut root = match schema {
            Value::Object(schema) => schema.clone(),
            _ => Map::new(),
        };
        root.insert("components".into(), doc["components"].clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|error| panic!("the document's schema compiles: {error}"));
        Arc::new(validator)
    }))
}

/// The document's path template that `path` matches (the most literal one).
fn template<'d>(paths: &'d Map<String, Value>, path: &str) -> Option<(&'d str, &'d Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    paths
        .iter()
        .filter_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut params = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') && part.ends_with('}') && !segment.is_empty() {
                    params += 1;
                } else if part != segment {
                    return None;
                }
            }
            Some((params, template.as_str(), item))
        })
        .min_by_key(|(params, ..)| *params)
        .map(|(_, template, item)| (template, item))
}

/// Panics unless the answer is one the contract documents for `method` and `url`.
pub(crate) fn check(
    method: &Method,
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Value,
) {
    let path = url.split_once("://").map_or(url, |(_, rest)| {
        rest.find('/').map_or("/", |at| &rest[at..])
    });
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (gateway, etl) = documents();
    let doc = if path.starts_with("/api/v1/") {
        etl
    } else {
        gateway
    };
    let Some(paths) = doc["paths"].as_object() else {
        return;
    };
    let Some((template, item)) = template(paths, path) else {
        return;
    };
    let operation = &item[method.as_str().to_ascii_lowercase()];
    if operation.is_null() {
        return;
    }
    let code = status.as_str();
    let mut response = &operation["responses"][code];
    if response.is_null() {
        response = &operation["responses"]["default"];
    }
    assert!(
        !response.is_null(),
        "{method} {path} answered {status}, which the contract ({template}) does not \
         document; body: {body}"
    );
    if let Some(name) = response["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/responses/"))
    {
        response = &doc["components"]["responses"][name];
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let schema = &response["content"]["application/json"]["schema"];
    if !is_json || schema.is_null() {
        return;
    }
    let key = format!("{}|{template}|{method}|{code}", doc["info"]["title"]);
    let validator = validator(key, doc, schema);
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} answered {status} with a body that does not match the contract \
         ({template}): {errors:?}; body: {body}"
    );
}

#[test]
fn a_body_that_breaks_its_schema_is_caught() {
    let headers = {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers
    };
    let run_id = "0190f0f0-0000-7000-8000-000000000000";
    let url = format!("http://127.0.0.1:1/api/etl/runs/{run_id}");
    let good = json!({"error": "Run not found", "code": "run_not_found", "request_id": "x"});
    check(&Method::GET, &url, StatusCode::NOT_FOUND, &headers, &good);
    for bad in [
        json!({"error": "Run not found", "code": "no_such_code", "request_id": "x"}),
        json!({"code": "run_not_found"}),
    ] {
        let result = std::panic::catch_unwind(|| {
            check(&Method::GET, &url, StatusCode::NOT_FOUND, &headers, &bad)
        });
        assert!(result.is_err(), "{bad} passed");
    }
    let undocumented = std::panic::catch_unwind(|| {
        check(&Method::GET, &url, StatusCode::IM_A_TEAPOT, &headers, &good)
    });
    assert!(undocumented.is_err(), "an undocumented status passed");
}
