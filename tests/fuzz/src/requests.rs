//! Kafka requests encoded as clients send them (for the `kafka_request` target's node and
//! seeds).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// One request without its size: header (with a client id) and body.
pub fn body<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, request: &R) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("oxbow-fuzz"));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, key.request_header_version(version))
        .expect("a header encodes");
    request
        .encode(&mut out, version)
        .expect("a request encodes");
    out.to_vec()
}

/// One request with its size, as written to the socket.
pub fn frame<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, request: &R) -> Vec<u8> {
    let body = body(key, version, correlation_id, request);
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Decodes an answer's body (after its size), `None` if it does not decode.
pub fn decode_response<R: Decodable>(key: ApiKey, version: i16, body: Vec<u8>) -> Option<R> {
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, key.response_header_version(version)).ok()?;
    let response = R::decode(&mut body, version).ok()?;
    (!body.has_remaining()).then_some(response)
}
