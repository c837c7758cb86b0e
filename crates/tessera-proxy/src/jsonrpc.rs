//! JSON-RPC 2.0 framing that never loses a byte it does not need to touch.
//!
//! The proxy parses only the envelope (`id`, `method`) of a message; `params`, `result` and
//! `error` stay [`RawValue`]s and are written back verbatim. Where the gateway must rewrite a
//! field (a namespaced tool name, a resource URI) it splits one object level into ordered
//! `(key, raw value)` pairs with [`RawObject`], changes that one key and re-emits the rest as
//! they came. Typed SDK structs are never used on the data path because they drop unknown fields.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The upstream that owns the requested tool/prompt/resource could not serve it
/// (down, died mid-call, answered with a transport error).
pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
/// The upstream did not answer within the configured timeout.
pub const UPSTREAM_TIMEOUT: i64 = -32002;
/// The request was cancelled (by the client or at shutdown).
pub const REQUEST_CANCELLED: i64 = -32800;
/// MCP 2025-11-25 `URLElicitationRequiredError`: the request needs the user to open a URL first.
pub const URL_ELICITATION_REQUIRED: i64 = -32042;

/// A parsed JSON-RPC message: only the envelope is decoded.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Box<RawValue>>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub params: Option<Box<RawValue>>,
    #[serde(default)]
    pub result: Option<Box<RawValue>>,
    #[serde(default)]
    pub error: Option<Box<RawValue>>,
}

/// Keeps `"id": null` distinguishable from an absent id (both would be `None` otherwise).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// What kind of message an [`Envelope`] is.
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

impl Envelope {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn kind(&self) -> Kind {
        match (
            &self.id,
            &self.method,
            self.result.is_some() || self.error.is_some(),
        ) {
            (Some(_), Some(_), false) => Kind::Request,
            (None, Some(_), false) => Kind::Notification,
            (Some(_), None, true) => Kind::Response,
            _ => Kind::Invalid,
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    pub fn params_str(&self) -> &str {
        self.params.as_deref().map(RawValue::get).unwrap_or("{}")
    }
}

/// Serialises a request with a fresh (gateway-assigned) id.
pub fn request<P: Serialize + ?Sized>(
    id: &impl Serialize,
    method: &str,
    params: Option<&P>,
) -> String {
    #[derive(Serialize)]
    struct Req<'a, I: Serialize, P: Serialize + ?Sized> {
        jsonrpc: &'static str,
        id: &'a I,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a P>,
    }
    to_string(&Req {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
}

pub fn notification(method: &str, params: Option<&RawValue>) -> String {
    #[derive(Serialize)]
    struct Note<'a> {
        jsonrpc: &'static str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a RawValue>,
    }
    to_string(&Note {
        jsonrpc: "2.0",
        method,
        params,
    })
}

/// A response carrying either a raw result or a raw error object, under a new id.
pub fn response(id: &RawValue, result: Option<&RawValue>, error: Option<&RawValue>) -> String {
    #[derive(Serialize)]
    struct Resp<'a> {
        jsonrpc: &'static str,
        id: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a RawValue>,
    }
    to_string(&Resp {
        jsonrpc: "2.0",
        id,
        result,
        error,
    })
}

/// Whether `text`, built by [`response`] for `id`, is an error response: decided from the fixed
/// layout `{"jsonrpc":"2.0","id":<id>,"result"|"error":…}` without parsing the body.
pub fn is_error_response(text: &str, id: &RawValue) -> bool {
    const PREFIX: &str = r#"{"jsonrpc":"2.0","id":"#;
    text.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(id.get()))
        .map(|rest| rest.starts_with(r#","error":"#))
        .unwrap_or_else(|| Envelope::parse(text).is_ok_and(|e| e.error.is_some()))
}

pub fn result(id: &RawValue, result: &impl Serialize) -> String {
    let raw = to_raw(result);
    response(id, Some(&raw), None)
}

/// A JSON-RPC error response. `data` carries machine-readable context (never secrets).
pub fn error(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> String {
    #[derive(Serialize)]
    struct Err<'a> {
        code: i64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    }
    let err = to_raw(&Err {
        code,
        message,
        data,
    });
    let null = null_id();
    response(id.unwrap_or(&null), None, Some(&err))
}

/// Why the gateway answers a routed request itself instead of its upstream.
pub enum UpstreamFault<'a> {
    /// The session with the upstream broke (process exit, stream closed, HTTP error).
    Failed(&'a str),
    /// No session could be opened, or discovery reports the server down.
    Unavailable(&'a str),
    /// No answer within the call's deadline.
    Timeout(std::time::Duration),
}

/// The one shape of every gateway-made upstream error: a message naming the server and the
/// reason, and `data` with both (machine-readable, never a secret).
pub fn upstream_error(id: &RawValue, server: &str, fault: UpstreamFault<'_>) -> String {
    let (code, message, reason) = match fault {
        UpstreamFault::Failed(reason) => (
            UPSTREAM_UNAVAILABLE,
            format!("upstream server '{server}' failed: {reason}"),
            reason,
        ),
        UpstreamFault::Unavailable(reason) => (
            UPSTREAM_UNAVAILABLE,
            format!("upstream server '{server}' is unavailable: {reason}"),
            reason,
        ),
        UpstreamFault::Timeout(limit) => (
            UPSTREAM_TIMEOUT,
            format!(
                "upstream server '{server}' did not answer within {}s",
                limit.as_secs_f64()
            ),
            "timeout",
        ),
    };
    error(
        Some(id),
        code,
        &message,
        Some(serde_json::json!({ "server": server, "reason": reason })),
    )
}

pub fn null_id() -> Box<RawValue> {
    raw("null")
}

/// Builds a `RawValue` from JSON text produced by this crate (always valid JSON).
pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| {
        // Unreachable for text produced by serde_json; degrade to null rather than panic.
        RawValue::from_string("null".to_owned()).unwrap_or_default()
    })
}

pub fn to_raw(value: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| raw("null"))
}

fn to_string(value: &impl Serialize) -> String {
    // Serialising our own structs of strings and RawValues cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// One level of a JSON object as ordered `(key, raw value)` pairs: lets the gateway rewrite one
/// field while every other field (known to it or not) passes through byte for byte.
#[derive(Debug, Default, Clone)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>);

impl RawObject {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The field as a string, when it is one.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    pub fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, to_raw(&value));
    }

    pub fn to_json(&self) -> String {
        to_string(self)
    }

    pub fn to_raw(&self) -> Box<RawValue> {
        raw(&self.to_json())
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The identity of a JSON-RPC id as a map key (its JSON text: `1` and `"1"` differ, as they must).
pub fn id_key(id: &RawValue) -> String {
    id.get().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_object_rewrites_one_key_and_keeps_unknown_fields_in_order() {
        let text = r#"{"name":"a__echo","arguments":{"x":1,"weird":[1,{"y":null}]},"_meta":{"progressToken":7,"x/v":"k"}}"#;
        let mut obj = RawObject::parse(text).unwrap();
        obj.set_str("name", "echo");
        assert_eq!(
            obj.to_json(),
            r#"{"name":"echo","arguments":{"x":1,"weird":[1,{"y":null}]},"_meta":{"progressToken":7,"x/v":"k"}}"#
        );
    }

    #[test]
    fn envelope_classifies_messages() {
        assert!(matches!(
            Envelope::parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
                .unwrap()
                .kind(),
            Kind::Request
        ));
        assert!(matches!(
            Envelope::parse(r#"{"jsonrpc":"2.0","method":"x"}"#)
                .unwrap()
                .kind(),
            Kind::Notification
        ));
        assert!(matches!(
            Envelope::parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#)
                .unwrap()
                .kind(),
            Kind::Response
        ));
        assert!(matches!(
            Envelope::parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1}}"#)
                .unwrap()
                .kind(),
            Kind::Response
        ));
        assert!(matches!(
            Envelope::parse(r#"{"jsonrpc":"2.0"}"#).unwrap().kind(),
            Kind::Invalid
        ));
    }

    #[test]
    fn response_passes_result_bytes_verbatim() {
        let env = Envelope::parse(
            r#"{"jsonrpc":"2.0","id":9,"result":{"content":[],"x_unknown":{"kept":true}}}"#,
        )
        .unwrap();
        let id = raw("\"client-1\"");
        let out = response(&id, env.result.as_deref(), None);
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":"client-1","result":{"content":[],"x_unknown":{"kept":true}}}"#
        );
    }

    #[test]
    fn error_has_code_and_message() {
        let out = error(
            Some(&raw("3")),
            METHOD_NOT_FOUND,
            "method not found: foo",
            None,
        );
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"method not found: foo"}}"#
        );
    }
}
