//! Keeps `shared/openapi.yaml`, the bundle's own API definition, in step with
//! the routes the functions serve, the Api events and the inline API
//! definition of `template.yaml`, and the status and code table of
//! `README.md`. Then checks real responses of the function binaries against it.
//!
//! The template's inline definition carries the authorization of every
//! operation. SAM merges each Api event into it, so an event missing there
//! would become a route without authorization; the first test catches that.
//! A function binary that serves no route runs on a schedule, so the same
//! test requires its function to have a schedule event and no Api event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jit_guard::Action;
use jit_guard::operations::route;
use jit_guard_tests::events::{self, Caller, EventSpec};
use serde_json::{Map, Value, json};

use crate::support::*;

/// A route as (upper-case method, path template).
type RouteKey = (String, String);

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn repository_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Converts YAML to JSON. A tagged value such as `!Ref Name` becomes
/// `{"!Ref": "Name"}`, so CloudFormation's short tags survive the conversion.
fn yaml_to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => serde_json::to_value(&number).expect("a YAML number is a JSON number"),
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(text) => text,
                        other => serde_yaml_ng::to_string(&other).expect("a YAML key").trim().to_owned(),
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            json!({ tag: yaml_to_json(tagged.value) })
        }
    }
}

fn load_yaml(relative: &str) -> Value {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&repository_file(relative))
        .unwrap_or_else(|error| panic!("{relative} is not YAML: {error}"));
    yaml_to_json(value)
}

fn api_definition() -> Value {
    load_yaml("shared/openapi.yaml")
}

/// Follows a local `$ref` such as `#/components/parameters/ProjectRef`.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference} is not a local reference"));
            let target = document.pointer(pointer).unwrap_or_else(|| panic!("{reference} does not resolve"));
            resolve(document, target)
        }
        None => value,
    }
}

/// Collects every operation of an OpenAPI `paths` object, keyed by route.
fn operations(paths: &Value) -> BTreeMap<RouteKey, &Value> {
    let mut found = BTreeMap::new();
    for (path, item) in paths.as_object().expect("paths is an object") {
        for (method, operation) in item.as_object().unwrap_or_else(|| panic!("{path} is not an object")) {
            if METHODS.contains(&method.as_str()) {
                found.insert((method.to_uppercase(), path.clone()), operation);
            }
        }
    }
    found
}

/// A route the functions serve, and whether it writes and so takes `dry_run`.
struct CodeRoute {
    key: RouteKey,
    mutating: bool,
}

/// Every function binary of the workspace, by its folder under `functions/`.
fn function_binaries() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions"))
        .expect("functions/")
        .map(|entry| entry.expect("a folder entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// The route each HTTP function binary serves, by binary, according to its
/// source. A binary that serves no route, such as a scheduled one, is left out.
fn code_routes() -> BTreeMap<String, CodeRoute> {
    let mut routes = BTreeMap::new();
    for binary in function_binaries() {
        let source = repository_file(&format!("functions/{binary}/src/main.rs"));
        if !source.contains("jit_guard::run(") {
            continue;
        }
        let action = Action::ALL
            .into_iter()
            .find(|action| source.contains(&format!("Action::{})", action.name())))
            .unwrap_or_else(|| panic!("functions/{binary}/src/main.rs runs no known action"));
        let Some(route) = route(action) else {
            continue;
        };
        let key = (route.method.to_owned(), route.template.to_owned());
        routes.insert(binary, CodeRoute { key, mutating: route.mutating });
    }
    routes
}

#[test]
fn template_routes_match_code_and_definition() {
    let template = load_yaml("template.yaml");
    let resources = template["Resources"].as_object().expect("Resources is an object");

    let code = code_routes();
    let binaries = function_binaries();
    let mut deployed_binaries = BTreeSet::new();
    let mut event_routes = BTreeMap::new();
    for (logical_id, resource) in resources {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{logical_id}");
        let binary = resource["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap_or_else(|| panic!("{logical_id} names no Binary"));
        assert!(binaries.contains(binary), "{logical_id} names {binary}, which is not a folder under functions/");
        assert!(deployed_binaries.insert(binary.to_owned()), "{binary} is deployed twice");
        let events_of_type = |types: &[&str]| -> Vec<&Value> {
            resource["Properties"]["Events"]
                .as_object()
                .map(|events| {
                    events.values().filter(|event| types.iter().any(|kind| event["Type"] == *kind)).collect()
                })
                .unwrap_or_default()
        };
        let events = events_of_type(&["Api"]);
        let schedules = events_of_type(&["Schedule", "ScheduleV2"]);

        // A binary that serves no route is only useful when something invokes it on a schedule.
        if !code.contains_key(binary) {
            assert!(events.is_empty(), "{logical_id} serves no route, so it should have no Api event");
            assert_eq!(schedules.len(), 1, "{logical_id} serves no route, so it should have exactly one schedule event");
            let expression = &schedules[0]["Properties"]["ScheduleExpression"];
            assert!(!expression.is_null(), "the schedule event of {logical_id} has no ScheduleExpression");
            continue;
        }
        assert!(schedules.is_empty(), "{logical_id} serves a route, so it should have no schedule event");
        assert_eq!(events.len(), 1, "{logical_id} should have exactly one Api event");
        let properties = &events[0]["Properties"];
        assert_eq!(properties["RestApiId"], json!({ "!Ref": "JitGuardApi" }), "{logical_id} is not on JitGuardApi");
        let method = properties["Method"].as_str().expect("an event Method").to_uppercase();
        let path = properties["Path"].as_str().expect("an event Path").to_owned();
        event_routes.insert(binary.to_owned(), (method, path));
    }
    assert_eq!(deployed_binaries, binaries, "template.yaml's functions against the binaries under functions/");
    let served: BTreeMap<String, RouteKey> =
        code.iter().map(|(binary, route)| (binary.clone(), route.key.clone())).collect();
    assert_eq!(event_routes, served, "template.yaml's Api events against the routes the binaries serve");

    let api = &resources["JitGuardApi"]["Properties"];
    assert_eq!(api["MergeDefinitions"], true, "without MergeDefinitions SAM adds no integration to the definition");
    let inline = operations(&api["DefinitionBody"]["paths"]);
    let required_auth = json!({ "!If": ["UseApiKey", [{ "api_key": [] }], [{ "sigv4": [] }]] });
    for (route, operation) in &inline {
        assert_eq!(operation["security"], required_auth, "{route:?} in the inline definition");
    }

    let document = api_definition();
    let event_set: BTreeSet<&RouteKey> = event_routes.values().collect();
    let inline_set: BTreeSet<&RouteKey> = inline.keys().collect();
    let documented = operations(&document["paths"]);
    let documented_set: BTreeSet<&RouteKey> = documented.keys().collect();
    assert_eq!(inline_set, event_set, "the inline definition's operations against the Api events");
    assert_eq!(documented_set, event_set, "shared/openapi.yaml's operations against the Api events");

    // Both definitions declare the same two security schemes.
    for name in ["sigv4", "api_key"] {
        let deployed = &api["DefinitionBody"]["components"]["securitySchemes"][name];
        let described = &document["components"]["securitySchemes"][name];
        for field in ["type", "name", "in", "x-amazon-apigateway-authtype"] {
            assert_eq!(deployed.get(field), described.get(field), "security scheme {name}, field {field}");
        }
    }
    assert_eq!(document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"], "awsSigv4");

    // dry_run is documented exactly on the routes that write.
    for (binary, route) in &code {
        let has_dry_run = documented[&route.key]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|parameter| resolve(&document, parameter))
            .any(|parameter| parameter["name"] == "dry_run" && parameter["in"] == "query");
        assert_eq!(has_dry_run, route.mutating, "dry_run on the route of {binary}");
    }
}

#[test]
fn path_parameters_match_routes() {
    let document = api_definition();
    for ((method, path), operation) in operations(&document["paths"]) {
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
            .collect();
        let mut declared = BTreeSet::new();
        let path_level = document["paths"][&path]["parameters"].as_array().into_iter().flatten();
        let operation_level = operation["parameters"].as_array().into_iter().flatten();
        for parameter in path_level.chain(operation_level).map(|parameter| resolve(&document, parameter)) {
            if parameter["in"] != "path" {
                continue;
            }
            let name = parameter["name"].as_str().expect("a parameter name");
            assert_eq!(parameter["required"], true, "{method} {path}: path parameter {name} must be required");
            let schema = resolve(&document, &parameter["schema"]);
            let expected = match name {
                "ref" => json!({ "pattern": "^[a-z]{20}$" }),
                "slug" => json!({ "pattern": "^[\\w-]+$" }),
                "user_id" => json!({ "format": "uuid" }),
                "role" => json!({ "minLength": 1, "maxLength": 63 }),
                other => panic!("{method} {path}: unexpected path parameter {other}"),
            };
            for (keyword, value) in expected.as_object().unwrap() {
                assert_eq!(&schema[keyword], value, "{method} {path}: {keyword} of {name}");
            }
            declared.insert(name);
        }
        assert_eq!(declared, in_path, "{method} {path}: declared path parameters against the path");
    }
}

#[test]
fn definition_is_well_formed() {
    let document = api_definition();
    let version = document["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.0."), "openapi {version} is not 3.0");
    for field in ["title", "version"] {
        assert!(document["info"][field].as_str().is_some_and(|text| !text.is_empty()), "info.{field} is missing");
    }

    let paths = document["paths"].as_object().expect("paths is an object");
    assert!(!paths.is_empty(), "paths is empty");
    let schemes = document["components"]["securitySchemes"].as_object().expect("securitySchemes is an object");
    let mut operation_ids = BTreeSet::new();
    for ((method, path), operation) in operations(&document["paths"]) {
        assert!(path.starts_with('/'), "{path} does not start with /");
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(operation_ids.insert(id.to_owned()), "operationId {id} is used twice");
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for status in responses.keys() {
            let valid = status == "default" || (status.len() == 3 && status.chars().all(|c| c.is_ascii_digit()));
            assert!(valid, "{method} {path}: response key {status}");
        }
    }
    let requirements = document["security"].as_array().into_iter().flatten();
    for requirement in requirements.chain(operations(&document["paths"]).values().flat_map(|operation| {
        operation["security"].as_array().into_iter().flatten()
    })) {
        for name in requirement.as_object().expect("a security requirement").keys() {
            assert!(schemes.contains_key(name), "security scheme {name} is not defined");
        }
    }

    // Every $ref resolves.
    let mut references = Vec::new();
    collect_references(&document, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference} is not a local reference"));
        assert!(document.pointer(pointer).is_some(), "{reference} does not resolve");
    }

    // Every schema compiles, and every example matches its schema.
    for (name, schema) in document["components"]["schemas"].as_object().expect("components.schemas") {
        let validator = validator(&document, schema);
        if let Some(example) = schema.get("example") {
            assert_valid(&validator, example, &format!("the example of schema {name}"));
        }
    }
    let mut media_types = Vec::new();
    collect_media_types(&document, "", &mut media_types);
    assert!(!media_types.is_empty());
    for (location, media_type) in media_types {
        let validator = validator(&document, &media_type["schema"]);
        if let Some(example) = media_type.get("example") {
            assert_valid(&validator, example, &format!("the example at {location}"));
        }
    }
}

#[test]
fn problem_codes_match_readme() {
    // The table in "How a request is handled": | status | code | cause |.
    let readme = repository_file("README.md");
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 2 || cells[0].len() != 3 || !cells[0].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let codes = cells[1].split('`').skip(1).step_by(2).map(str::to_owned);
        table.entry(cells[0].to_owned()).or_default().extend(codes);
    }
    assert!(table.len() >= 5, "README.md's status and code table was not found: {table:?}");

    let document = api_definition();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for operation in operations(&document["paths"]).values() {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let response = resolve(&document, response);
            if let Some(schema) = response.pointer("/content/application~1problem+json/schema") {
                let mut codes = BTreeSet::new();
                collect_code_enums(&document, schema, &mut codes);
                assert!(!codes.is_empty(), "the {status} problem names no code");
                documented.entry(status.clone()).or_default().extend(codes);
            }
        }
    }
    assert_eq!(documented, table, "problem codes by status: shared/openapi.yaml against README.md");

    let all: BTreeSet<String> = table.values().flatten().cloned().collect();
    let problem_codes: BTreeSet<String> = document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code has an enum")
        .iter()
        .map(|code| code.as_str().expect("a code").to_owned())
        .collect();
    assert_eq!(problem_codes, all, "Problem.code against every code in README.md");
}

/// One request to a function binary and the status it must return.
struct Case {
    binary: &'static str,
    method: &'static str,
    path: String,
    path_parameters: Vec<(&'static str, &'static str)>,
    dry_run: Option<&'static str>,
    body: Option<String>,
    status: u16,
}

fn case(binary: &'static str, method: &'static str, path: String, status: u16) -> Case {
    Case { binary, method, path, path_parameters: Vec::new(), dry_run: None, body: None, status }
}

impl Case {
    fn parameters(mut self, parameters: &[(&'static str, &'static str)]) -> Case {
        self.path_parameters = parameters.to_vec();
        self
    }

    fn dry_run(mut self, value: &'static str) -> Case {
        self.dry_run = Some(value);
        self
    }

    fn body(mut self, body: &str) -> Case {
        self.body = Some(body.to_owned());
        self
    }
}

/// Runs the real binaries as API Gateway invokes them and checks each
/// response against the documented response of its operation and status.
#[tokio::test]
async fn real_responses_match_definition() {
    let document = api_definition();
    let documented_operations = operations(&document["paths"]);
    let routes = code_routes();
    let mut harness = Harness::start().await;

    let jit = format!("/v1/projects/{PROJECT}/database/jit");
    let revoke = format!("/v1/projects/{PROJECT}/database/jit/{BOB}");
    let project = [("ref", PROJECT)];
    let revoke_parameters = [("ref", PROJECT), ("user_id", BOB)];
    let allowed = update_body(CAROL, "jit_readonly", Some(hours_from_now(2)), "allowed_cidrs_v6", "fd00:10::/64");
    let open = update_body(CAROL, "postgres", Some(hours_from_now(2)), "allowed_cidrs", "0.0.0.0/0");
    let oversized = format!(r#"{{"user_id":"{CAROL}","roles":[],"padding":"{}"}}"#, "x".repeat(70 * 1024));
    let members = format!("/v1/organizations/{ORGANIZATION}/members");

    let cases = [
        case("list-organization-members", "GET", members, 200).parameters(&[("slug", ORGANIZATION)]),
        case("list-projects", "GET", "/v1/projects".into(), 200),
        case("get-project", "GET", format!("/v1/projects/{PROJECT}"), 200).parameters(&project),
        case("get-project", "GET", "/v1/projects/short".into(), 400).parameters(&[("ref", "short")]),
        // dry_run applies to the writing routes only.
        case("get-project", "GET", format!("/v1/projects/{PROJECT}"), 400).parameters(&project).dry_run("true"),
        case("get-project", "POST", format!("/v1/projects/{PROJECT}"), 404).parameters(&project),
        case("authorize-jit-access", "POST", jit.clone(), 200)
            .parameters(&project)
            .body(r#"{"role":"supabase_read_only_user","rhost":"10.1.2.3"}"#),
        case("authorize-jit-access", "POST", jit.clone(), 403)
            .parameters(&project)
            .body(r#"{"role":"jit_readonly","rhost":"198.51.100.7"}"#),
        case("update-jit-access", "PUT", jit.clone(), 200).parameters(&project).dry_run("true").body(&open),
        case("update-jit-access", "PUT", jit.clone(), 403).parameters(&project).body(&open),
        case("update-jit-access", "PUT", jit.clone(), 400).parameters(&project).body(r#"{"user_id":"nope","roles":[]}"#),
        case("update-jit-access", "PUT", jit.clone(), 413).parameters(&project).body(&oversized),
        case("update-jit-access", "PUT", format!("/v1/projects/{UNKNOWN_PROJECT}/database/jit"), 404)
            .parameters(&[("ref", UNKNOWN_PROJECT)])
            .body(&allowed),
        case("update-jit-access", "PUT", jit.clone(), 200).parameters(&project).body(&allowed),
        case("list-jit-access", "GET", format!("{jit}/list"), 200).parameters(&project),
        case("revoke-jit-access", "DELETE", revoke.clone(), 200).parameters(&revoke_parameters).dry_run("true"),
        case("revoke-jit-access", "DELETE", revoke, 200).parameters(&revoke_parameters),
    ];

    let mut handles = BTreeMap::new();
    for case in cases {
        let handle = match handles.get(case.binary) {
            Some(handle) => *handle,
            None => {
                let handle = harness.spawn(case.binary, &[]).await;
                handles.insert(case.binary, handle);
                handle
            }
        };
        let mut spec = EventSpec::new(case.method, case.path.clone()).caller(Caller::IamUser(CALLER_ARN.into()));
        for (name, value) in &case.path_parameters {
            spec = spec.path_parameter(name, value);
        }
        if let Some(value) = case.dry_run {
            spec = spec.query_parameter("dry_run", value);
        }
        if let Some(body) = &case.body {
            spec = spec.body(body.as_str()).header("content-type", "application/json");
        }
        let response = harness.invoke(handle, events::rest_v1(&spec)).await;
        let name = format!("{}: {} {} (dry_run {:?})", case.binary, case.method, case.path, case.dry_run);
        assert_eq!(response.status, case.status, "{name}: {}", response.body_text);

        // A function serves one route, so its documented operation is that route's.
        let operation = documented_operations[&routes[case.binary].key];
        let documented = operation["responses"]
            .get(response.status.to_string())
            .map(|response| resolve(&document, response))
            .unwrap_or_else(|| panic!("{name}: status {} is not documented", response.status));
        if response.body_text.is_empty() {
            let revoked = case.binary == "revoke-jit-access" && response.status == 200;
            assert!(revoked, "{name}: only a revoke may answer without a body");
            continue;
        }
        let content_type = response.headers.get("content-type").map(String::as_str).unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let schema = documented["content"][media_type]
            .get("schema")
            .unwrap_or_else(|| panic!("{name}: {media_type:?} is not documented for status {}", response.status));
        assert_valid(&validator(&document, schema), &response.body, &name);
        // A revoke's passed-on schema allows any object, so a report is also held to its own schema.
        if case.dry_run == Some("true") && response.status == 200 {
            let report = json!({ "$ref": "#/components/schemas/DryRunReport" });
            assert_valid(&validator(&document, &report), &response.body, &name);
        }
    }
    harness.assert_token_never_leaked();
}

fn collect_references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
                found.push(reference.to_owned());
            }
            object.values().for_each(|value| collect_references(value, found));
        }
        Value::Array(items) => items.iter().for_each(|value| collect_references(value, found)),
        _ => {}
    }
}

/// Collects every media type object that has a schema, with its location.
fn collect_media_types<'a>(value: &'a Value, location: &str, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Object(content)) = object.get("content") {
                for (media_type, entry) in content {
                    if entry.get("schema").is_some() {
                        found.push((format!("{location}/content/{media_type}"), entry));
                    }
                }
            }
            for (key, value) in object {
                collect_media_types(value, &format!("{location}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                collect_media_types(value, &format!("{location}/{index}"), found);
            }
        }
        _ => {}
    }
}

/// Collects the values a problem schema allows for `code`, through `allOf`,
/// `oneOf` and `anyOf`. The shared Problem schema lists every code, so its
/// list counts only where no other part narrows it.
fn collect_code_enums(document: &Value, schema: &Value, found: &mut BTreeSet<String>) {
    let schema = resolve(document, schema);
    let mut narrowed = BTreeSet::new();
    for keyword in ["allOf", "oneOf", "anyOf"] {
        for part in schema[keyword].as_array().into_iter().flatten() {
            if part["$ref"] == "#/components/schemas/Problem" {
                continue;
            }
            let part = resolve(document, part);
            if part.get("allOf").is_some() || part.get("oneOf").is_some() || part.get("anyOf").is_some() {
                collect_code_enums(document, part, &mut narrowed);
            } else if let Some(codes) = part.pointer("/properties/code/enum").and_then(Value::as_array) {
                narrowed.extend(codes.iter().filter_map(Value::as_str).map(str::to_owned));
            }
        }
    }
    if narrowed.is_empty()
        && let Some(codes) = schema.pointer("/properties/code/enum").and_then(Value::as_array)
    {
        narrowed.extend(codes.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    found.extend(narrowed);
}

/// Converts an OpenAPI 3.0 schema object to JSON Schema 2020-12:
/// `#/components/schemas/X` becomes `#/$defs/X`, `nullable: true` adds
/// `"null"` to the type, and `example` is dropped because it only annotates.
fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut converted = Map::new();
            for (keyword, value) in object {
                match keyword.as_str() {
                    "example" | "nullable" => {}
                    "$ref" => {
                        let target = value.as_str().expect("a $ref is a string");
                        let name = target
                            .strip_prefix("#/components/schemas/")
                            .unwrap_or_else(|| panic!("a schema refers to {target}, outside components.schemas"));
                        converted.insert(keyword.clone(), json!(format!("#/$defs/{name}")));
                    }
                    // Names under properties are data, not keywords.
                    "properties" => {
                        let properties = value.as_object().expect("properties is an object");
                        let properties = properties.iter().map(|(name, property)| (name.clone(), to_json_schema(property)));
                        converted.insert(keyword.clone(), Value::Object(properties.collect()));
                    }
                    "enum" | "required" | "default" => {
                        converted.insert(keyword.clone(), value.clone());
                    }
                    _ => {
                        converted.insert(keyword.clone(), to_json_schema(value));
                    }
                }
            }
            if object.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(single)) = converted.get("type").cloned()
            {
                converted.insert("type".into(), json!([single, "null"]));
            }
            Value::Object(converted)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let definitions: Map<String, Value> = document["components"]["schemas"]
        .as_object()
        .expect("components.schemas")
        .iter()
        .map(|(name, schema)| (name.clone(), to_json_schema(schema)))
        .collect();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": definitions,
        "allOf": [to_json_schema(schema)],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|error| panic!("a schema of shared/openapi.yaml does not compile: {error}\n{schema}"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|error| format!("{error} at {}", error.instance_path())).collect();
    assert!(errors.is_empty(), "{what} breaks shared/openapi.yaml: {errors:#?}\n{instance}");
}
