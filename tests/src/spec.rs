//! Supabase's Management API OpenAPI document as JSON Schema checks: a
//! request checker for the stand-in, and response validators.
//!
//! The document is OpenAPI 3.0 with a few departures (`type: "null"`, extra
//! keys such as `hideDefinitions`), so it is not handed to a validator as it
//! is. [`to_json_schema`] turns each schema object into JSON Schema 2020-12
//! for the `jsonschema` crate, and its documentation lists every change.
//!
//! The tests read the document from [`SPEC_PATH`] at run time and never keep
//! a copy. [`Spec::official`] returns `None` when the file is absent, as in a
//! fresh clone, so each check can print why it was skipped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jsonschema::Validator;
use serde_json::{Map, Value, json};

/// The Management API OpenAPI document the checks read.
pub const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/supabase/management-api-v1.openapi.json"
);

/// The keys of a path item that are operations, as OpenAPI 3.0 names them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const SCHEMA_PREFIX: &str = "#/components/schemas/";

/// A document that could not be read, or a part of it that could not be
/// turned into a validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// How closely a converted schema follows the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strictness {
    /// Exactly what the document states. An object accepts properties it
    /// does not list unless the document sets `additionalProperties: false`.
    /// Requests are checked this way, so the check adds no rule of its own.
    AsDocumented,
    /// Also gives `additionalProperties: false` to every object schema that
    /// lists `properties` and leaves `additionalProperties` unset.
    /// The stand-in's own responses are checked this way, because the
    /// stand-in must not invent fields that the functions could come to rely on.
    ClosedObjects,
}

/// One operation of the document: its method, path template and object.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    /// Upper case, as sent on the wire.
    pub method: &'static str,
    pub template: &'a str,
    path_item: &'a Value,
    object: &'a Value,
}

impl Operation<'_> {
    /// Returns the `operationId`, or "" when the operation has none.
    pub fn id(&self) -> &str {
        self.object["operationId"].as_str().unwrap_or_default()
    }
}

/// A request as it arrived, for [`Spec::check_request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestToCheck<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    /// The raw query string without the `?`.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// Which schema of an operation a cached validator checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Parameter { location: String, name: String },
    RequestBody { media_type: String },
    Response { status: String, media_type: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ValidatorKey {
    method: &'static str,
    template: String,
    slot: Slot,
    strictness: Strictness,
}

/// The parsed document, with a cache of the validators built from it.
pub struct Spec {
    document: Value,
    validators: Mutex<HashMap<ValidatorKey, Arc<Validator>>>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Spec")
            .field("version", &self.version())
            .field("paths", &self.paths().len())
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// Wraps a parsed OpenAPI document.
    pub fn from_document(document: Value) -> Spec {
        Spec {
            document,
            validators: Mutex::default(),
        }
    }

    /// Reads and parses the document at `path`.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SpecError(format!("could not read {}: {error}", path.display())))?;
        let document: Value = serde_json::from_str(&text)
            .map_err(|error| SpecError(format!("{} is not valid JSON: {error}", path.display())))?;
        if !document["paths"].is_object() {
            return Err(SpecError(format!(
                "{} has no `paths` object; is it an OpenAPI document?",
                path.display()
            )));
        }
        Ok(Spec::from_document(document))
    }

    /// Returns the document at [`SPEC_PATH`], read once per test process, or
    /// `None` when the file does not exist.
    ///
    /// # Panics
    /// When the file exists but cannot be read or parsed, because a broken
    /// document must fail the suite rather than skip its checks.
    pub fn official() -> Option<Arc<Spec>> {
        static OFFICIAL: OnceLock<Option<Arc<Spec>>> = OnceLock::new();
        OFFICIAL
            .get_or_init(|| {
                let path = Path::new(SPEC_PATH);
                if !path.exists() {
                    return None;
                }
                Some(Arc::new(
                    Spec::load(path).unwrap_or_else(|error| panic!("{error}")),
                ))
            })
            .clone()
    }

    /// Returns [`Spec::official`], or prints one line saying that `check`
    /// is skipped because the document is absent.
    pub fn official_or_skip(check: &str) -> Option<Arc<Spec>> {
        let spec = Spec::official();
        if spec.is_none() {
            println!(
                "the Management API OpenAPI document is absent at {SPEC_PATH}; {check} skipped"
            );
        }
        spec
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Returns `info.version`.
    pub fn version(&self) -> &str {
        self.document["info"]["version"]
            .as_str()
            .unwrap_or_default()
    }

    fn paths(&self) -> &Map<String, Value> {
        static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
        self.document["paths"]
            .as_object()
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// Lists every operation of the document, in document order.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut operations = Vec::new();
        for (template, path_item) in self.paths() {
            for method in METHODS {
                if let Some(object) = path_item.get(method).filter(|object| object.is_object()) {
                    operations.push(Operation {
                        method: upper(method),
                        template,
                        path_item,
                        object,
                    });
                }
            }
        }
        operations
    }

    /// Finds the operation with this `operationId`.
    pub fn operation_by_id(&self, operation_id: &str) -> Option<Operation<'_>> {
        self.operations()
            .into_iter()
            .find(|operation| operation.id() == operation_id)
    }

    /// Finds the operation that serves `method` on the concrete `path`, with
    /// the path parameters taken from it (still percent-encoded).
    ///
    /// As OpenAPI prescribes, a template with more literal segments wins over
    /// one with more parameters, so `/jit/list` is not read as `/jit/{user_id}`.
    pub fn find_operation(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(Operation<'_>, BTreeMap<String, String>), SpecError> {
        let method = method.to_ascii_lowercase();
        let mut matches: Vec<(usize, &String, &Value, BTreeMap<String, String>)> = self
            .paths()
            .iter()
            .filter_map(|(template, path_item)| {
                let (literals, parameters) = match_template(template, path)?;
                Some((literals, template, path_item, parameters))
            })
            .collect();
        if matches.is_empty() {
            return Err(SpecError(format!("no path of the spec matches {path}")));
        }
        matches.sort_by_key(|(literals, ..)| std::cmp::Reverse(*literals));

        let templates: Vec<&str> = matches
            .iter()
            .map(|(_, template, _, _)| template.as_str())
            .collect();
        let found = matches
            .into_iter()
            .find_map(|(_, template, path_item, parameters)| {
                let object = path_item.get(&method).filter(|object| object.is_object())?;
                let method = METHODS
                    .into_iter()
                    .find(|known| *known == method)
                    .map(upper)?;
                Some((
                    Operation {
                        method,
                        template,
                        path_item,
                        object,
                    },
                    parameters,
                ))
            });
        found.ok_or_else(|| {
            SpecError(format!(
                "the spec has no {} operation on {}",
                method.to_ascii_uppercase(),
                templates.join(" or ")
            ))
        })
    }

    /// Checks one request against its operation: the path parameters, the
    /// query parameters the operation declares, the Content-Type and the body.
    /// Returns one message for each failure, empty when the request conforms.
    pub fn check_request(&self, request: &RequestToCheck<'_>) -> Vec<String> {
        let (operation, path_values) = match self.find_operation(request.method, request.path) {
            Ok(found) => found,
            Err(error) => return vec![error.to_string()],
        };
        let mut problems = Vec::new();
        let parameters = self.parameters(&operation);

        for (name, raw) in &path_values {
            let declared = parameters
                .iter()
                .find(|parameter| parameter["in"] == "path" && parameter["name"] == **name);
            if declared.is_none() {
                problems.push(format!(
                    "path parameter {name} is not declared by {}",
                    operation.id()
                ));
                continue;
            }
            let value = percent_decode(raw, false);
            problems.extend(self.check_parameter(&operation, "path", name, &value));
        }

        let query = parse_query(request.query.unwrap_or_default());
        for parameter in parameters
            .iter()
            .filter(|parameter| parameter["in"] == "query")
        {
            let Some(name) = parameter["name"].as_str() else {
                continue;
            };
            match query.iter().find(|(key, _)| key == name) {
                Some((_, value)) => {
                    problems.extend(self.check_parameter(&operation, "query", name, value))
                }
                None if parameter["required"] == true => {
                    problems.push(format!("query parameter {name} is required but missing"));
                }
                None => {}
            }
        }

        problems.extend(self.check_body(&operation, request));
        problems
    }

    /// Returns the operation's parameters, path-item ones first, with an
    /// operation parameter replacing a path-item one of the same name and location.
    fn parameters<'a>(&'a self, operation: &Operation<'a>) -> Vec<&'a Value> {
        let mut merged: Vec<&Value> = Vec::new();
        for list in [
            &operation.path_item["parameters"],
            &operation.object["parameters"],
        ] {
            for parameter in list.as_array().into_iter().flatten() {
                let parameter = self.resolve(parameter);
                merged.retain(|known| {
                    !(known["name"] == parameter["name"] && known["in"] == parameter["in"])
                });
                merged.push(parameter);
            }
        }
        merged
    }

    fn check_parameter(
        &self,
        operation: &Operation<'_>,
        location: &str,
        name: &str,
        value: &str,
    ) -> Vec<String> {
        let slot = Slot::Parameter {
            location: location.to_owned(),
            name: name.to_owned(),
        };
        let validator =
            match self.cached_validator(operation, slot, Strictness::AsDocumented, || {
                self.parameters(operation)
                    .into_iter()
                    .find(|parameter| parameter["in"] == location && parameter["name"] == name)
                    .map(|parameter| parameter["schema"].clone())
                    .filter(Value::is_object)
            }) {
                Ok(Some(validator)) => validator,
                Ok(None) => return Vec::new(),
                Err(error) => return vec![error.to_string()],
            };
        // Parameters travel as text, so a number or boolean schema gets the parsed value.
        let instance = match serde_json::from_str::<Value>(value) {
            Ok(parsed @ (Value::Number(_) | Value::Bool(_)))
                if !validator.is_valid(&json!(value)) =>
            {
                parsed
            }
            _ => json!(value),
        };
        validator
            .iter_errors(&instance)
            .map(|error| format!("{location} parameter {name}: {error}"))
            .collect()
    }

    fn check_body(&self, operation: &Operation<'_>, request: &RequestToCheck<'_>) -> Vec<String> {
        let request_body = self.resolve(&operation.object["requestBody"]);
        let has_body = !request.body.iter().all(u8::is_ascii_whitespace);
        let Some(content) = request_body["content"].as_object() else {
            if has_body {
                return vec![format!(
                    "the spec defines no request body for {}, but {} bytes were sent",
                    operation.id(),
                    request.body.len()
                )];
            }
            return Vec::new();
        };
        let listed: Vec<&str> = content.keys().map(String::as_str).collect();
        if !has_body {
            if request_body["required"] == true {
                return vec![format!(
                    "the request body is missing; the spec requires one ({})",
                    listed.join(", ")
                )];
            }
            return Vec::new();
        }

        let Some(content_type) = request.content_type else {
            return vec![format!(
                "Content-Type is missing; the spec lists {}",
                listed.join(", ")
            )];
        };
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some(media) = content.get(&media_type) else {
            return vec![format!(
                "Content-Type {content_type} is not one the spec lists ({})",
                listed.join(", ")
            )];
        };
        if !is_json_media_type(&media_type) {
            return Vec::new();
        }
        let body: Value = match serde_json::from_slice(request.body) {
            Ok(body) => body,
            Err(error) => return vec![format!("the body is not JSON: {error}")],
        };
        let slot = Slot::RequestBody { media_type };
        let validator =
            match self.cached_validator(operation, slot, Strictness::AsDocumented, || {
                Some(media["schema"].clone()).filter(Value::is_object)
            }) {
                Ok(Some(validator)) => validator,
                Ok(None) => return Vec::new(),
                Err(error) => return vec![error.to_string()],
            };
        validator
            .iter_errors(&body)
            .map(|error| format!("body{}: {error}", error.instance_path()))
            .collect()
    }

    /// Builds (or takes from the cache) the validator of the `status`
    /// response's JSON body of `operation_id`. Returns `None` when that
    /// response has no JSON body.
    pub fn response_validator(
        &self,
        operation_id: &str,
        status: &str,
        strictness: Strictness,
    ) -> Result<Option<Arc<Validator>>, SpecError> {
        let operation = self
            .operation_by_id(operation_id)
            .ok_or_else(|| SpecError(format!("the spec has no operation {operation_id}")))?;
        let response = self.resolve(&operation.object["responses"][status]);
        if !response.is_object() {
            return Err(SpecError(format!(
                "{operation_id} defines no {status} response"
            )));
        }
        let Some((media_type, media)) = response["content"].as_object().and_then(|content| {
            content
                .iter()
                .find(|(media_type, _)| is_json_media_type(media_type))
        }) else {
            return Ok(None);
        };
        let slot = Slot::Response {
            status: status.to_owned(),
            media_type: media_type.clone(),
        };
        self.cached_validator(&operation, slot, strictness, || {
            Some(media["schema"].clone()).filter(Value::is_object)
        })
    }

    /// Builds the validator of the request body of `operation_id` for
    /// `application/json`, or `None` when it has no JSON body.
    pub fn request_body_validator(
        &self,
        operation_id: &str,
        strictness: Strictness,
    ) -> Result<Option<Arc<Validator>>, SpecError> {
        let operation = self
            .operation_by_id(operation_id)
            .ok_or_else(|| SpecError(format!("the spec has no operation {operation_id}")))?;
        let request_body = self.resolve(&operation.object["requestBody"]);
        let Some((media_type, media)) = request_body["content"].as_object().and_then(|content| {
            content
                .iter()
                .find(|(media_type, _)| is_json_media_type(media_type))
        }) else {
            return Ok(None);
        };
        let slot = Slot::RequestBody {
            media_type: media_type.clone(),
        };
        self.cached_validator(&operation, slot, strictness, || {
            Some(media["schema"].clone()).filter(Value::is_object)
        })
    }

    /// Returns the cached validator for `slot`, building it from `schema`
    /// on first use. `schema` returns `None` when the slot has no schema.
    fn cached_validator(
        &self,
        operation: &Operation<'_>,
        slot: Slot,
        strictness: Strictness,
        schema: impl FnOnce() -> Option<Value>,
    ) -> Result<Option<Arc<Validator>>, SpecError> {
        let key = ValidatorKey {
            method: operation.method,
            template: operation.template.to_owned(),
            slot,
            strictness,
        };
        if let Some(validator) = self.lock_validators().get(&key) {
            return Ok(Some(validator.clone()));
        }
        let Some(schema) = schema() else {
            return Ok(None);
        };
        let root = self.json_schema(&schema, strictness)?;
        let validator = compile(&root).map_err(|error| {
            SpecError(format!(
                "the converted schema of {} {:?} does not compile: {error}",
                operation.id(),
                key.slot
            ))
        })?;
        let validator = Arc::new(validator);
        self.lock_validators().insert(key, validator.clone());
        Ok(Some(validator))
    }

    fn lock_validators(&self) -> std::sync::MutexGuard<'_, HashMap<ValidatorKey, Arc<Validator>>> {
        // The map is only read or extended by one insert, so a poisoned lock still holds a valid map.
        self.validators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Converts an OpenAPI schema object into a standalone JSON Schema
    /// 2020-12 document: the converted schema plus every component it
    /// refers to, directly or through other components, under `$defs`.
    pub fn json_schema(&self, schema: &Value, strictness: Strictness) -> Result<Value, SpecError> {
        let empty = Map::new();
        let components = self.document["components"]["schemas"]
            .as_object()
            .unwrap_or(&empty);
        let mut definitions = BTreeMap::new();
        collect_components(schema, components, strictness, &mut definitions)?;

        let converted = to_json_schema(schema, strictness)?;
        let mut root = match converted {
            Value::Object(object) => object,
            // A boolean schema; wrap it so `$defs` has a place.
            other => Map::from_iter([("allOf".to_owned(), json!([other]))]),
        };
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("$defs".into(), json!(definitions));
        Ok(Value::Object(root))
    }

    /// Follows a local `$ref` (a parameter, request body or response
    /// object stored under `components`) to the object it names.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        let mut current = value;
        // Bounded, so a cycle of references cannot loop forever.
        for _ in 0..16 {
            let Some(pointer) = current
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|target| target.strip_prefix('#'))
            else {
                return current;
            };
            match self.document.pointer(pointer) {
                Some(target) => current = target,
                None => return &Value::Null,
            }
        }
        &Value::Null
    }
}

/// Compiles a converted schema with format assertions on, so `uuid`,
/// `date-time`, `email` and `uri` are checked. Formats JSON Schema does not
/// define (`int32`, `int64`, `binary`) are ignored, as the crate does by default.
pub fn compile(schema: &Value) -> Result<Validator, SpecError> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|error| SpecError(error.to_string()))
}

/// Converts one OpenAPI 3.0 schema object into JSON Schema 2020-12.
///
/// What changes, and nothing else:
/// - `$ref: "#/components/schemas/X"` becomes `"#/$defs/X"`;
///   [`Spec::json_schema`] puts the referenced components under `$defs`.
///   Any other `$ref` is an error.
/// - `nullable: true` adds `"null"` to the type: `type: T` becomes
///   `type: [T, "null"]`, and an `enum` gains `null`. A schema with
///   `nullable: true` and no `type` becomes `anyOf: [schema, {type: "null"}]`.
///   `nullable: false` is dropped, as it is the default.
/// - OpenAPI 3.0's boolean `exclusiveMinimum: true` (and `exclusiveMaximum`)
///   beside `minimum: m` becomes the 2020-12 number form `exclusiveMinimum: m`;
///   `false` is dropped, leaving `minimum` as an inclusive bound.
/// - With [`Strictness::ClosedObjects`] only: an object schema with
///   `properties` and no `additionalProperties` gets `additionalProperties: false`.
///
/// Kept unchanged: `type: "null"`, which is already JSON Schema, and every
/// other keyword. Keywords unknown to JSON Schema (`example`, `discriminator`,
/// `hideDefinitions`, `x-*`) and `deprecated` or `description` are annotations,
/// which the validator ignores.
pub fn to_json_schema(schema: &Value, strictness: Strictness) -> Result<Value, SpecError> {
    let Value::Object(object) = schema else {
        return Ok(schema.clone());
    };
    let mut converted = Map::new();
    for (keyword, value) in object {
        let value = match keyword.as_str() {
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let name = target.strip_prefix(SCHEMA_PREFIX).ok_or_else(|| {
                    SpecError(format!(
                        "unsupported $ref {target}: only {SCHEMA_PREFIX}NAME is resolved"
                    ))
                })?;
                json!(format!("#/$defs/{name}"))
            }
            "properties" | "patternProperties" => {
                let mut properties = Map::new();
                for (name, property) in value.as_object().into_iter().flatten() {
                    properties.insert(name.clone(), to_json_schema(property, strictness)?);
                }
                Value::Object(properties)
            }
            "items" | "not" | "additionalProperties" => to_json_schema(value, strictness)?,
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|branch| to_json_schema(branch, strictness))
                    .collect::<Result<_, _>>()?,
            ),
            "nullable" => continue,
            "exclusiveMinimum" | "exclusiveMaximum" if value.is_boolean() => continue,
            _ => value.clone(),
        };
        converted.insert(keyword.clone(), value);
    }

    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if object.get(exclusive) == Some(&Value::Bool(true)) {
            let limit = converted.remove(bound).ok_or_else(|| {
                SpecError(format!(
                    "{exclusive}: true without {bound} has no bound to make exclusive"
                ))
            })?;
            converted.insert(exclusive.into(), limit);
        }
    }
    if strictness == Strictness::ClosedObjects
        && converted.contains_key("properties")
        && !converted.contains_key("additionalProperties")
    {
        converted.insert("additionalProperties".into(), json!(false));
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(make_nullable(converted));
    }
    Ok(Value::Object(converted))
}

fn make_nullable(mut converted: Map<String, Value>) -> Value {
    if let Some(Value::Array(values)) = converted.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match converted.get_mut("type") {
        Some(Value::String(single)) => {
            let single = std::mem::take(single);
            converted.insert("type".into(), json!([single, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        _ => return json!({ "anyOf": [Value::Object(converted), { "type": "null" }] }),
    }
    Value::Object(converted)
}

/// Adds to `found` every component `schema` refers to, directly or through
/// other components, converted with `strictness`.
fn collect_components(
    schema: &Value,
    components: &Map<String, Value>,
    strictness: Strictness,
    found: &mut BTreeMap<String, Value>,
) -> Result<(), SpecError> {
    match schema {
        Value::Object(object) => {
            let referenced = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|target| target.strip_prefix(SCHEMA_PREFIX));
            if let Some(name) = referenced
                && !found.contains_key(name)
            {
                let component = components
                    .get(name)
                    .ok_or_else(|| SpecError(format!("the spec has no component {name}")))?;
                found.insert(name.to_owned(), to_json_schema(component, strictness)?);
                collect_components(component, components, strictness, found)?;
            }
            for value in object.values() {
                collect_components(value, components, strictness, found)?;
            }
        }
        Value::Array(values) => {
            for value in values {
                collect_components(value, components, strictness, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Matches a concrete path against a template segment by segment. Returns
/// the number of literal segments and the parameter values, or `None`.
fn match_template(template: &str, path: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let template_segments: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let path_segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if template_segments.len() != path_segments.len() {
        return None;
    }
    let mut literals = 0;
    let mut parameters = BTreeMap::new();
    for (pattern, segment) in template_segments.iter().zip(&path_segments) {
        match pattern
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(name) => {
                if segment.is_empty() {
                    return None;
                }
                parameters.insert(name.to_owned(), (*segment).to_owned());
            }
            None if pattern == segment => literals += 1,
            None => return None,
        }
    }
    Some((literals, parameters))
}

/// Splits a query string into decoded name and value pairs (`+` is a space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// Decodes `%XX` escapes as UTF-8, lossily. An escape that is not two hex
/// digits stays as it is.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[index]) {
            (Some(byte), _) => {
                decoded.push(byte);
                index += 3;
            }
            (None, b'+') if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            (None, byte) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn is_json_media_type(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

fn upper(method: &str) -> &'static str {
    match method {
        "get" => "GET",
        "put" => "PUT",
        "post" => "POST",
        "delete" => "DELETE",
        "options" => "OPTIONS",
        "head" => "HEAD",
        "patch" => "PATCH",
        _ => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: &str = "abcdefghijklmnopqrst";
    const USER: &str = "33333333-3333-4333-8333-333333333333";

    fn json_request<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> RequestToCheck<'a> {
        RequestToCheck {
            method,
            path,
            query: None,
            content_type: Some("application/json"),
            body,
        }
    }

    fn check(spec: &Spec, method: &str, path: &str, body: Option<Value>) -> Vec<String> {
        let text = body.map(|body| body.to_string()).unwrap_or_default();
        spec.check_request(&json_request(method, path, text.as_bytes()))
    }

    fn update_body() -> Value {
        json!({
            "user_id": USER,
            "roles": [{
                "role": "jit_readonly",
                "expires_at": 1_800_000_000,
                "allowed_networks": { "allowed_cidrs": [{ "cidr": "10.20.0.0/16" }] }
            }]
        })
    }

    #[test]
    fn conversion_makes_nullable_a_type_union() {
        let converted = to_json_schema(
            &json!({ "type": "string", "nullable": true }),
            Strictness::AsDocumented,
        );
        let enumerated = to_json_schema(
            &json!({ "type": "string", "enum": ["a"], "nullable": true }),
            Strictness::AsDocumented,
        );
        let untyped = to_json_schema(
            &json!({ "nullable": true, "description": "x" }),
            Strictness::AsDocumented,
        );
        let not_nullable = to_json_schema(
            &json!({ "type": "string", "nullable": false }),
            Strictness::AsDocumented,
        );

        assert_eq!(converted, Ok(json!({ "type": ["string", "null"] })));
        assert_eq!(
            enumerated,
            Ok(json!({ "type": ["string", "null"], "enum": ["a", null] }))
        );
        assert_eq!(
            untyped,
            Ok(json!({ "anyOf": [{ "description": "x" }, { "type": "null" }] }))
        );
        assert_eq!(not_nullable, Ok(json!({ "type": "string" })));
    }

    #[test]
    fn conversion_keeps_null_type_and_annotations() {
        let schema = json!({ "type": "null", "example": null, "hideDefinitions": ["a"], "deprecated": true });

        assert_eq!(
            to_json_schema(&schema, Strictness::AsDocumented),
            Ok(schema)
        );
    }

    #[test]
    fn conversion_rewrites_refs_and_exclusive_bounds() {
        let reference = to_json_schema(
            &json!({ "$ref": "#/components/schemas/Thing" }),
            Strictness::AsDocumented,
        );
        let foreign = to_json_schema(
            &json!({ "$ref": "other.json#/Thing" }),
            Strictness::AsDocumented,
        );
        let exclusive = to_json_schema(
            &json!({ "type": "integer", "minimum": 0, "exclusiveMinimum": true }),
            Strictness::AsDocumented,
        );
        let inclusive = to_json_schema(
            &json!({ "type": "integer", "minimum": 0, "exclusiveMinimum": false }),
            Strictness::AsDocumented,
        );

        assert_eq!(reference, Ok(json!({ "$ref": "#/$defs/Thing" })));
        assert!(foreign.is_err(), "{foreign:?}");
        assert_eq!(
            exclusive,
            Ok(json!({ "type": "integer", "exclusiveMinimum": 0 }))
        );
        assert_eq!(inclusive, Ok(json!({ "type": "integer", "minimum": 0 })));
    }

    #[test]
    fn closed_objects_only_when_asked() {
        let schema = json!({ "type": "object", "properties": { "a": { "type": "object", "properties": {} } } });
        let open =
            json!({ "type": "object", "properties": { "a": {} }, "additionalProperties": true });

        let documented = to_json_schema(&schema, Strictness::AsDocumented).unwrap();
        let closed = to_json_schema(&schema, Strictness::ClosedObjects).unwrap();

        assert_eq!(documented, schema);
        assert_eq!(closed["additionalProperties"], false);
        assert_eq!(closed["properties"]["a"]["additionalProperties"], false);
        assert_eq!(
            to_json_schema(&open, Strictness::ClosedObjects).unwrap(),
            open,
            "a stated value is kept"
        );
    }

    #[test]
    fn template_matching_prefers_literal_segments() {
        let spec = Spec::from_document(json!({ "paths": {
            "/v1/projects/{ref}/database/jit/list": { "get": { "operationId": "list" } },
            "/v1/projects/{ref}/database/jit/{user_id}": { "delete": { "operationId": "delete" } }
        }}));

        let (list, list_values) = spec
            .find_operation("GET", &format!("/v1/projects/{REF}/database/jit/list"))
            .unwrap();
        let (delete, values) = spec
            .find_operation("DELETE", &format!("/v1/projects/{REF}/database/jit/{USER}"))
            .unwrap();
        let wrong_method =
            spec.find_operation("PUT", &format!("/v1/projects/{REF}/database/jit/list"));
        let unknown = spec.find_operation("GET", "/v1/nothing");

        assert_eq!(list.id(), "list");
        assert_eq!(list_values["ref"], REF);
        assert_eq!(delete.id(), "delete");
        assert_eq!(values["user_id"], USER);
        assert!(
            wrong_method
                .unwrap_err()
                .to_string()
                .contains("no PUT operation")
        );
        assert!(unknown.unwrap_err().to_string().contains("/v1/nothing"));
    }

    #[test]
    fn percent_decoding_of_segments_and_queries() {
        assert_eq!(percent_decode("acme%20security", false), "acme security");
        assert_eq!(percent_decode("a+b%2", false), "a+b%2");
        assert_eq!(
            parse_query("a=1&b=x+y&c"),
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into())
            ]
        );
    }

    // The tests below read the official document and skip when it is absent.

    #[test]
    fn every_operation_schema_compiles() {
        let Some(spec) = Spec::official_or_skip("the schema conversion check") else {
            return;
        };
        let mut compiled = 0;

        for operation in spec.operations() {
            for strictness in [Strictness::AsDocumented, Strictness::ClosedObjects] {
                let id = operation.id();
                if spec
                    .request_body_validator(id, strictness)
                    .unwrap_or_else(|error| panic!("{error}"))
                    .is_some()
                {
                    compiled += 1;
                }
                let statuses: Vec<String> = operation.object["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(status, _)| status.clone())
                    .collect();
                for status in statuses {
                    if spec
                        .response_validator(id, &status, strictness)
                        .unwrap_or_else(|error| panic!("{error}"))
                        .is_some()
                    {
                        compiled += 1;
                    }
                }
            }
        }

        assert!(compiled > 200, "only {compiled} schemas compiled");
    }

    #[test]
    fn valid_requests_of_seven_routes_pass() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let jit = format!("/v1/projects/{REF}/database/jit");
        let cases = [
            (
                "GET",
                "/v1/organizations/acme-security/members".to_owned(),
                None,
            ),
            ("GET", "/v1/projects".to_owned(), None),
            ("GET", format!("/v1/projects/{REF}"), None),
            (
                "POST",
                jit.clone(),
                Some(json!({ "role": "jit_readonly", "rhost": "10.1.2.3" })),
            ),
            ("PUT", jit.clone(), Some(update_body())),
            ("GET", format!("{jit}/list"), None),
            ("DELETE", format!("{jit}/{USER}"), None),
        ];

        for (method, path, body) in cases {
            let problems = check(&spec, method, &path, body);
            assert!(problems.is_empty(), "{method} {path}: {problems:#?}");
        }
    }

    #[test]
    fn update_with_user_roles_is_rejected() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let mut body = update_body();
        let roles = body.as_object_mut().unwrap().remove("roles").unwrap();
        body["user_roles"] = roles;

        let problems = check(
            &spec,
            "PUT",
            &format!("/v1/projects/{REF}/database/jit"),
            Some(body),
        );

        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("\"roles\" is a required property"),
            "{problems:#?}"
        );
    }

    #[test]
    fn nineteen_letter_ref_is_rejected() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let short = &REF[..19];

        for (method, path) in [
            ("GET", format!("/v1/projects/{short}")),
            ("GET", format!("/v1/projects/{short}/database/jit/list")),
            (
                "DELETE",
                format!("/v1/projects/{short}/database/jit/{USER}"),
            ),
        ] {
            let problems = check(&spec, method, &path, None);
            assert_eq!(problems.len(), 1, "{method} {path}: {problems:#?}");
            assert!(
                problems[0].starts_with("path parameter ref"),
                "{problems:#?}"
            );
            assert!(
                problems[0].contains("shorter than 20 characters"),
                "{problems:#?}"
            );
        }
    }

    #[test]
    fn string_expires_at_is_rejected() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let mut body = update_body();
        body["roles"][0]["expires_at"] = json!("1800000000");

        let problems = check(
            &spec,
            "PUT",
            &format!("/v1/projects/{REF}/database/jit"),
            Some(body),
        );

        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("body/roles/0/expires_at:"),
            "{problems:#?}"
        );
        assert!(problems[0].contains("\"number\""), "{problems:#?}");
    }

    #[test]
    fn path_parameter_patterns_are_checked() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let cases = [
            (
                "GET",
                format!("/v1/projects/{}", REF.to_uppercase()),
                "path parameter ref",
            ),
            (
                "GET",
                "/v1/projects/abcdefghijklmnopqrs1".to_owned(),
                "path parameter ref",
            ),
            (
                "GET",
                "/v1/organizations/acme%20security/members".to_owned(),
                "path parameter slug",
            ),
            (
                "GET",
                "/v1/organizations/acm%C3%A9/members".to_owned(),
                "path parameter slug",
            ),
            (
                "DELETE",
                format!("/v1/projects/{REF}/database/jit/not-a-uuid"),
                "path parameter user_id",
            ),
        ];

        for (method, path, expected) in cases {
            let problems = check(&spec, method, &path, None);
            assert_eq!(problems.len(), 1, "{method} {path}: {problems:#?}");
            assert!(
                problems[0].starts_with(expected),
                "{method} {path}: {problems:#?}"
            );
        }
    }

    #[test]
    fn body_and_content_type_rules() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let jit = format!("/v1/projects/{REF}/database/jit");
        let authorize = json!({ "role": "jit_readonly", "rhost": "10.1.2.3" }).to_string();

        let missing = spec.check_request(&json_request("POST", &jit, b""));
        let text = spec.check_request(&RequestToCheck {
            content_type: Some("text/plain"),
            ..json_request("POST", &jit, authorize.as_bytes())
        });
        let not_json = spec.check_request(&json_request("POST", &jit, b"role=x"));
        let empty_role = check(
            &spec,
            "POST",
            &jit,
            Some(json!({ "role": "", "rhost": "10.1.2.3" })),
        );
        let body_on_get = spec.check_request(&json_request("GET", "/v1/projects", b"{}"));
        let bad_user = check(
            &spec,
            "PUT",
            &jit,
            Some(json!({ "user_id": "carol", "roles": [] })),
        );

        assert!(
            missing[0].contains("request body is missing"),
            "{missing:#?}"
        );
        assert!(text[0].contains("Content-Type text/plain"), "{text:#?}");
        assert!(not_json[0].contains("not JSON"), "{not_json:#?}");
        assert!(empty_role[0].starts_with("body/role:"), "{empty_role:#?}");
        assert!(
            body_on_get[0].contains("no request body"),
            "{body_on_get:#?}"
        );
        assert!(bad_user[0].starts_with("body/user_id:"), "{bad_user:#?}");
        assert!(bad_user[0].contains("uuid"), "{bad_user:#?}");
    }

    /// The document's update body does not say `additionalProperties: false`,
    /// so the check does not add that rule: Supabase may accept such a field.
    #[test]
    fn extra_body_field_is_not_invented_strictness() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };
        let mut body = update_body();
        body["comment"] = json!("not in the document");

        let problems = check(
            &spec,
            "PUT",
            &format!("/v1/projects/{REF}/database/jit"),
            Some(body),
        );

        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn unknown_routes_are_violations() {
        let Some(spec) = Spec::official_or_skip("the request check") else {
            return;
        };

        let unknown = check(&spec, "GET", "/v1/nothing", None);
        let wrong_method = check(
            &spec,
            "POST",
            &format!("/v1/projects/{REF}/database/jit/list"),
            None,
        );

        assert!(
            unknown[0].contains("no path of the spec matches /v1/nothing"),
            "{unknown:#?}"
        );
        assert!(
            wrong_method[0].contains("no POST operation"),
            "{wrong_method:#?}"
        );
    }
}
