//! Per-message cost of JSON-RPC framing choices for the proxy data path:
//! parsing a `tools/call` request envelope into `serde_json::Value` vs a struct whose `params` stay raw
//! (`Box<RawValue>` owned, or `&RawValue` borrowed), and serialising a response both ways.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[allow(dead_code)] // fields are read through black_box only
struct OwnedEnvelope {
    jsonrpc: String,
    id: Box<RawValue>,
    method: String,
    params: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct BorrowedEnvelope<'a> {
    #[serde(borrow)]
    jsonrpc: &'a str,
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct RawReply<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    result: &'a RawValue,
}

fn request(message_len: usize) -> Vec<u8> {
    let message: String = (0..message_len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 12345,
        "method": "tools/call",
        "params": {
            "name": "bench__echo",
            "arguments": {"message": message},
            "_meta": {"progressToken": "abc-123"},
        },
    }))
    .unwrap()
}

fn response(message_len: usize) -> (Value, String) {
    let message: String = (0..message_len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let result =
        serde_json::json!({"content": [{"type": "text", "text": message}], "isError": false});
    let raw = serde_json::to_string(&result).unwrap();
    (result, raw)
}

fn parse(c: &mut Criterion) {
    for len in [100usize, 10_000] {
        let body = request(len);
        let mut group = c.benchmark_group(format!("parse tools/call, {len}-byte message"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("serde_json::Value", |b| {
            b.iter(|| black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap()))
        });
        group.bench_function("struct, Box<RawValue> params", |b| {
            b.iter(|| black_box(serde_json::from_slice::<OwnedEnvelope>(black_box(&body)).unwrap()))
        });
        group.bench_function("struct, &RawValue params (borrowed)", |b| {
            b.iter(|| {
                black_box(serde_json::from_slice::<BorrowedEnvelope<'_>>(black_box(&body)).unwrap())
            })
        });
        group.finish();
    }
}

fn serialise(c: &mut Criterion) {
    for len in [100usize, 10_000] {
        let (value, raw) = response(len);
        let raw_result: Box<RawValue> = RawValue::from_string(raw).unwrap();
        let id: Box<RawValue> = RawValue::from_string("12345".to_owned()).unwrap();
        let mut group =
            c.benchmark_group(format!("serialise tools/call response, {len}-byte text"));
        group.bench_function("serde_json::Value", |b| {
            let envelope = serde_json::json!({"jsonrpc": "2.0", "id": 12345, "result": value});
            b.iter(|| black_box(serde_json::to_vec(black_box(&envelope)).unwrap()))
        });
        group.bench_function("build Value envelope + serialise", |b| {
            b.iter(|| {
                let envelope =
                    serde_json::json!({"jsonrpc": "2.0", "id": 12345, "result": black_box(&value)});
                black_box(serde_json::to_vec(&envelope).unwrap())
            })
        });
        group.bench_function("struct with RawValue id and result", |b| {
            b.iter(|| {
                let reply = RawReply {
                    jsonrpc: "2.0",
                    id: &id,
                    result: black_box(&raw_result),
                };
                black_box(serde_json::to_vec(&reply).unwrap())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, parse, serialise);
criterion_main!(benches);
