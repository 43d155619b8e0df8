//! The HTTP events the functions serve and the responses they return, in
//! the JSON that API Gateway REST APIs (payload 1.0), HTTP APIs (payload
//! 2.0) and Lambda function URLs (2.0, as `cargo lambda watch` sends too)
//! exchange with Lambda.
//!
//! Only the fields the operations read are decoded; every other field is
//! skipped without being stored. In the benchmark, decoding the whole event
//! and building an HTTP request from it (as lambda_http does) took about
//! 40 to 100 µs more per warm call than this, on a 20 ms wait between calls.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::signature::SIGNATURE_HEADER;

/// An API Gateway or function URL event, reduced to what the operations read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpEvent {
    /// Payload 1.0: the method. Without `requestContext.http`, its presence
    /// marks a REST API event.
    pub http_method: Option<String>,
    /// Payload 1.0: the request path, without the stage.
    pub path: Option<String>,
    /// Payload 2.0: the request path, with a named stage in front.
    pub raw_path: Option<String>,
    /// The route's parameters. Function URL events have none.
    pub path_parameters: Option<HashMap<String, String>>,
    /// Payload 1.0: the last value of each name. Payload 2.0: the values of
    /// a repeated name, joined with commas.
    pub query_string_parameters: Option<HashMap<String, String>>,
    /// Payload 1.0: every value of each name.
    pub multi_value_query_string_parameters: Option<HashMap<String, Vec<String>>>,
    /// The `Persona-Signature` header, from `headers`.
    pub headers: SignatureHeader,
    /// The `Persona-Signature` header, from payload 1.0's `multiValueHeaders`.
    pub multi_value_headers: SignatureHeader,
    pub body: Option<String>,
    pub is_base64_encoded: Option<bool>,
    pub request_context: RequestContext,
}

/// The parts of `requestContext` that name the caller and the request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestContext {
    /// API Gateway's request id.
    pub request_id: Option<String>,
    /// Payload 2.0: the method.
    pub http: Option<HttpDescription>,
    /// Payload 1.0: the IAM principal or API key API Gateway authenticated.
    pub identity: Option<Identity>,
    pub authorizer: Option<Authorizer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpDescription {
    pub method: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Identity {
    pub user_arn: Option<String>,
    pub api_key_id: Option<String>,
}

/// An authorizer's output. Payload 1.0 keeps a Lambda authorizer's
/// `principalId` and a Cognito authorizer's `claims` at the top; payload
/// 2.0 nests them under `lambda`, `jwt` and `iam`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Authorizer {
    pub principal_id: Text,
    pub claims: Option<Claims>,
    pub lambda: Option<LambdaAuthorizer>,
    pub jwt: Option<Jwt>,
    pub iam: Option<Identity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LambdaAuthorizer {
    pub principal_id: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Jwt {
    pub claims: Option<Claims>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Claims {
    pub sub: Text,
}

/// A value kept only when it is a JSON string. An authorizer may put
/// numbers or objects where a string is expected, and they must not fail the event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(Text(Some(text))),
            _ => Ok(Text(None)),
        }
    }
}

/// The first `Persona-Signature` value of a header map, whose names are
/// matched without regard to case. A value is a string (`headers`) or a
/// list of strings (`multiValueHeaders`). The other headers are skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignatureHeader(pub Option<String>);

impl<'de> Deserialize<'de> for SignatureHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SignatureHeaderVisitor)
    }
}

struct SignatureHeaderVisitor;

impl<'de> Visitor<'de> for SignatureHeaderVisitor {
    type Value = SignatureHeader;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a map of header names to values, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<SignatureHeader, E> {
        Ok(SignatureHeader(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<SignatureHeader, E> {
        Ok(SignatureHeader(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<SignatureHeader, D::Error> {
        deserializer.deserialize_any(SignatureHeaderVisitor)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SignatureHeader, A::Error> {
        let mut found = None;
        while let Some(IsSignature(is_signature)) = map.next_key()? {
            if is_signature && found.is_none() {
                found = map.next_value::<OneOrMany>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(SignatureHeader(found))
    }
}

/// Tells whether a header name is `Persona-Signature`, without storing the name.
struct IsSignature(bool);

impl<'de> Deserialize<'de> for IsSignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = IsSignature;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a header name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<IsSignature, E> {
                Ok(IsSignature(name.eq_ignore_ascii_case(SIGNATURE_HEADER)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// A header value: a string, or the first string of a list.
struct OneOrMany(Option<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = OneOrMany;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a header value or a list of them")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(Some(value.to_owned())))
            }

            fn visit_unit<E: de::Error>(self) -> Result<OneOrMany, E> {
                Ok(OneOrMany(None))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let first = seq.next_element::<Option<String>>()?.flatten();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(OneOrMany(first))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// The front door that sent the event, recognized by the event's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadVersion {
    /// API Gateway REST API, payload 1.0: `httpMethod` at the top.
    V1,
    /// API Gateway HTTP API or function URL, payload 2.0: `requestContext.http`.
    V2,
}

impl HttpEvent {
    /// Returns the payload version, or `None` for an event that is not an
    /// HTTP request. `requestContext.http` decides first, because payload
    /// 2.0 events may carry a top-level `httpMethod` too (`cargo lambda
    /// watch` sends one).
    pub fn version(&self) -> Option<PayloadVersion> {
        if self.v2_method().is_some() {
            Some(PayloadVersion::V2)
        } else if self.http_method.is_some() {
            Some(PayloadVersion::V1)
        } else {
            None
        }
    }

    fn v2_method(&self) -> Option<&str> {
        self.request_context.http.as_ref().and_then(|http| http.method.as_deref())
    }

    pub fn method(&self) -> &str {
        self.v2_method().or(self.http_method.as_deref()).unwrap_or("")
    }

    /// Returns the request path: payload 2.0's `rawPath`, else 1.0's `path` (no stage).
    pub fn path(&self) -> &str {
        let path = match self.version() {
            Some(PayloadVersion::V2) => self.raw_path.as_deref(),
            _ => self.path.as_deref(),
        };
        path.unwrap_or("/")
    }

    /// Returns the first value of a query parameter, as the front door decoded it.
    pub fn query_parameter(&self, name: &str) -> Option<&str> {
        let version = self.version();
        if version == Some(PayloadVersion::V1)
            && let Some(values) = self.multi_value_query_string_parameters.as_ref().and_then(|query| query.get(name))
        {
            return values.first().map(String::as_str);
        }
        let value = self.query_string_parameters.as_ref()?.get(name)?;
        match version {
            // Payload 2.0 joins the values of a repeated name with commas.
            Some(PayloadVersion::V2) => value.split(',').next(),
            _ => Some(value.as_str()),
        }
    }

    /// Returns the `Persona-Signature` header, when present.
    pub fn signature(&self) -> Option<&str> {
        self.headers.0.as_deref().or(self.multi_value_headers.0.as_deref())
    }
}

/// A response in the shape API Gateway (payload 1.0 and 2.0) and function
/// URLs accept: `statusCode`, `headers`, `body` and `isBase64Encoded`, and
/// for payload 2.0 an empty `cookies` list, which `cargo lambda watch`
/// requires. The bodies are JSON text, so they are never base64-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    /// Whether the event was payload 2.0, whose responses carry `cookies`.
    cookies: bool,
}

impl HttpResponse {
    /// Builds a response with a JSON body of the given media type.
    pub fn json(status: u16, content_type: &'static str, body: String) -> Self {
        Self { status, headers: vec![("content-type", content_type.to_owned())], body: Some(body), cookies: false }
    }

    /// Builds a response without a body.
    pub fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: None, cookies: false }
    }

    /// Adds a header. `name` is lowercase, as HTTP/2 and API Gateway's 2.0 payload carry them.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Shapes the response for the payload version of its event. A REST
    /// API's proxy integration (payload 1.0) documents no `cookies` field,
    /// so only payload 2.0 responses carry it, as lambda_http's did.
    pub fn for_payload(mut self, version: Option<PayloadVersion>) -> Self {
        self.cookies = version == Some(PayloadVersion::V2);
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Returns the value of the header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(known, _)| *known == name).map(|(_, value)| value.as_str())
    }

    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

impl Serialize for HttpResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Headers<'a>(&'a [(&'static str, String)]);
        impl Serialize for Headers<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (name, value) in self.0 {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }

        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("statusCode", &self.status)?;
        map.serialize_entry("headers", &Headers(&self.headers))?;
        if let Some(body) = &self.body {
            map.serialize_entry("body", body)?;
        }
        map.serialize_entry("isBase64Encoded", &false)?;
        if self.cookies {
            map.serialize_entry("cookies", &[(); 0])?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> HttpEvent {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn rest_event_fields() {
        let event = event(json!({
            "resource": "/v1/projects/{ref}", "path": "/v1/projects/abc", "httpMethod": "PUT",
            "headers": {"Accept": "application/json", "persona-SIGNATURE": "t=1,v1=ab"},
            "multiValueHeaders": {"Persona-Signature": ["t=1,v1=ab"]},
            "queryStringParameters": {"dry_run": "false"},
            "multiValueQueryStringParameters": {"dry_run": ["true", "false"]},
            "pathParameters": {"ref": "abc"}, "stageVariables": null,
            "requestContext": {"requestId": "gw-1", "path": "/prod/v1/projects/abc"},
            "body": "{}", "isBase64Encoded": false
        }));
        assert_eq!(event.version(), Some(PayloadVersion::V1));
        assert_eq!(event.method(), "PUT");
        assert_eq!(event.path(), "/v1/projects/abc");
        // Payload 1.0 keeps every value of a repeated name, and the first is read.
        assert_eq!(event.query_parameter("dry_run"), Some("true"));
        assert_eq!(event.signature(), Some("t=1,v1=ab"));
        assert_eq!(event.request_context.request_id.as_deref(), Some("gw-1"));
    }

    #[test]
    fn http_api_event_fields() {
        let event = event(json!({
            "version": "2.0", "routeKey": "GET /v1/projects", "rawPath": "/v1/projects", "rawQueryString": "dry_run=false&dry_run=true",
            "httpMethod": "GET", "path": null,
            "cookies": ["a=b"], "headers": {"persona-signature": "t=2,v1=cd"},
            "queryStringParameters": {"dry_run": "false,true"},
            "requestContext": {"http": {"method": "GET", "path": "/v1/projects"}},
            "isBase64Encoded": false
        }));
        assert_eq!(event.version(), Some(PayloadVersion::V2));
        assert_eq!(event.method(), "GET");
        assert_eq!(event.path(), "/v1/projects");
        assert_eq!(event.query_parameter("dry_run"), Some("false"));
        assert_eq!(event.signature(), Some("t=2,v1=cd"));
    }

    #[test]
    fn nulls_and_odd_values_accepted() {
        let event = event(json!({
            "httpMethod": "GET", "path": "/v1/projects", "headers": null, "multiValueHeaders": {"X-A": ["1", null]},
            "pathParameters": null, "queryStringParameters": null, "body": null, "isBase64Encoded": null,
            "requestContext": {"identity": {"userArn": null},
                "authorizer": {"principalId": 7, "claims": {"sub": {"nested": true}}, "integrationLatency": 0}}
        }));
        assert_eq!(event.signature(), None);
        let authorizer = event.request_context.authorizer.unwrap();
        assert_eq!(authorizer.principal_id, Text(None));
        assert_eq!(authorizer.claims.unwrap().sub, Text(None));
    }

    #[test]
    fn other_events_have_no_version() {
        let scheduled = event(json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}));
        assert_eq!(scheduled.version(), None);
        assert!(serde_json::from_value::<HttpEvent>(json!([1, 2])).is_err());
    }

    #[test]
    fn response_shape() {
        let response = HttpResponse::json(429, "application/problem+json", "{}".into()).with_header("retry-after", "17".into());
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"statusCode": 429, "headers": {"content-type": "application/problem+json", "retry-after": "17"}, "body": "{}", "isBase64Encoded": false})
        );
        assert_eq!(
            serde_json::to_value(HttpResponse::empty(204)).unwrap(),
            json!({"statusCode": 204, "headers": {}, "isBase64Encoded": false})
        );
        assert_eq!(response.header("retry-after"), Some("17"));

        let v2 = HttpResponse::empty(200).for_payload(Some(PayloadVersion::V2));
        assert_eq!(serde_json::to_value(v2).unwrap()["cookies"], json!([]));
    }
}
