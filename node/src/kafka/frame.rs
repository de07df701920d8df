//! Response frames, and the splicing of stored batches into a Fetch response.
//!
//! A Fetch response's records are the stored batch bytes, as the cache holds them or as one
//! read of the segment files brought them in. Rather than copying them into the encoded
//! response, each partition's records field is encoded with a placeholder, and the frame is
//! cut at the placeholder: the encoded bytes before it, the records field's length, the
//! batches themselves (each its own part, not copied), and the encoded bytes after it. The
//! connection writes the parts with vectored writes.
//!
//! The placeholder starts with bytes that valid UTF-8 never holds (0xFF, 0xFE), so no topic
//! name can hold it, and it is checked to follow the length prefix the encoder wrote for it.
//! Should a placeholder not be found where it must be, the response is encoded again with the
//! batches copied in: slower, never wrong.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;

/// An encoded response frame (its 4-byte size first), in parts written back to back.
#[derive(Debug, Default)]
pub(super) struct Frame {
    parts: Vec<Bytes>,
}

impl Frame {
    /// A frame of one buffer.
    pub(super) fn whole(bytes: Bytes) -> Self {
        Self { parts: vec![bytes] }
    }

    /// Its size in bytes, all parts together.
    pub(super) fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// The parts, in order.
    pub(super) fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }
}

/// The first Fetch version with flexible (compact) encodings.
const FETCH_FLEXIBLE: i16 = 12;
/// Placeholder bytes: a marker no encoded string holds, then the partition's number.
const MARKER: [u8; 8] = [0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8];
const PLACEHOLDER_LEN: usize = MARKER.len() + 8;

fn placeholder(number: usize) -> Bytes {
    let mut bytes = BytesMut::with_capacity(PLACEHOLDER_LEN);
    bytes.put_slice(&MARKER);
    bytes.put_u64(number as u64);
    bytes.freeze()
}

/// The encoding of a records field (nullable bytes) of `len` bytes: an i32 length, or in
/// flexible versions an unsigned varint of the length plus one.
fn records_prefix(len: usize, flexible: bool) -> Vec<u8> {
    if !flexible {
        return (len as i32).to_be_bytes().to_vec();
    }
    let mut value = len as u64 + 1;
    let mut out = Vec::with_capacity(5);
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A Fetch response whose records are still separate batches.
#[derive(Debug, Default)]
pub(super) struct SplicedFetch {
    /// The response; each partition with records holds a placeholder in `records`.
    pub(super) response: FetchResponse,
    /// Each placeholder's batches, by its number.
    batches: Vec<Vec<Bytes>>,
}

impl SplicedFetch {
    /// What a partition's `records` field holds for `batches`: a placeholder to splice them
    /// at, or nothing when there are none.
    pub(super) fn records(&mut self, batches: Vec<Bytes>) -> Bytes {
        if batches.is_empty() {
            return Bytes::new();
        }
        self.batches.push(batches);
        placeholder(self.batches.len() - 1)
    }

    /// The frame: `encode` encodes a response (its size, header and body) into a buffer.
    pub(super) fn into_frame(
        mut self,
        version: i16,
        encode: impl Fn(&FetchResponse) -> Result<BytesMut, String>,
    ) -> Result<Frame, String> {
        let encoded = encode(&self.response)?;
        if let Some(frame) = self.splice(encoded, version >= FETCH_FLEXIBLE) {
            return Ok(frame);
        }
        // A placeholder was not where it must be: copy the batches in instead.
        let mut batches = std::mem::take(&mut self.batches).into_iter();
        for topic in &mut self.response.responses {
            for partition in &mut topic.partitions {
                let Some(records) = &partition.records else {
                    continue;
                };
                if records.len() != PLACEHOLDER_LEN || records[..MARKER.len()] != MARKER {
                    continue;
                }
                let parts = batches.next().expect("one placeholder per batches");
                let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                for part in parts {
                    joined.put_slice(&part);
                }
                partition.records = Some(joined.freeze());
            }
        }
        Ok(Frame::whole(encode(&self.response)?.freeze()))
    }

    /// Cuts `encoded` at each placeholder and puts its batches there; `None` if a placeholder
    /// is missing or its length prefix is not what the encoder writes for it.
    fn splice(&mut self, mut encoded: BytesMut, flexible: bool) -> Option<Frame> {
        let placeholder_prefix = records_prefix(PLACEHOLDER_LEN, flexible);
        // Where each placeholder's prefix starts.
        let mut at = Vec::with_capacity(self.batches.len());
        let mut from = 0;
        for number in 0..self.batches.len() {
            let wanted = placeholder(number);
            let found = encoded[from..]
                .windows(PLACEHOLDER_LEN)
                .position(|w| w == wanted.as_ref())?
                + from;
            let start = found.checked_sub(placeholder_prefix.len())?;
            if encoded[start..found] != placeholder_prefix[..] {
                return None;
            }
            at.push(start);
            from = found + PLACEHOLDER_LEN;
        }
        let prefixes: Vec<Vec<u8>> = self
            .batches
            .iter()
            .map(|b| records_prefix(b.iter().map(Bytes::len).sum(), flexible))
            .collect();
        let size = encoded.len() - 4 - at.len() * (placeholder_prefix.len() + PLACEHOLDER_LEN)
            + prefixes.iter().map(Vec::len).sum::<usize>()
            + self.batches.iter().flatten().map(Bytes::len).sum::<usize>();
        encoded[..4].copy_from_slice(&i32::try_from(size).ok()?.to_be_bytes());
        let encoded = encoded.freeze();
        let mut parts =
            Vec::with_capacity(2 + self.batches.iter().map(|b| b.len() + 2).sum::<usize>());
        let mut cursor = 0;
        for ((start, prefix), batches) in at.into_iter().zip(prefixes).zip(self.batches.drain(..)) {
            let mut head = BytesMut::with_capacity(start - cursor + prefix.len());
            // The encoded bytes up to the field, and the field's real length: small, copied.
            head.put_slice(&encoded[cursor..start]);
            head.put_slice(&prefix);
            parts.push(head.freeze());
            parts.extend(batches.into_iter().filter(|b| !b.is_empty()));
            cursor = start + placeholder_prefix.len() + PLACEHOLDER_LEN;
        }
        parts.push(encoded.slice(cursor..));
        Some(Frame { parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode(version: i16) -> impl Fn(&FetchResponse) -> Result<BytesMut, String> {
        move |response| {
            let mut out = BytesMut::new();
            out.put_i32(0);
            out.put_i32(7); // a correlation id, as a header
            response
                .encode(&mut out, version)
                .map_err(|e| e.to_string())?;
            let size = (out.len() - 4) as i32;
            out[..4].copy_from_slice(&size.to_be_bytes());
            Ok(out)
        }
    }

    fn batches(seed: u8, count: usize) -> Vec<Bytes> {
        (0..count)
            .map(|i| Bytes::from(vec![seed.wrapping_add(i as u8); 100 + 37 * i]))
            .collect()
    }

    /// The same response two ways: batches spliced in, and copied in before encoding.
    fn both(version: i16) -> (Vec<u8>, Vec<u8>, usize) {
        let mut spliced = SplicedFetch::default();
        let mut copied = FetchResponse::default();
        for (t, name) in ["a", "b\u{fffe}"].iter().enumerate() {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_string(name.to_string()));
            let mut plain = topic.clone();
            for p in 0..3 {
                let mut data = PartitionData::default();
                data.partition_index = p;
                data.high_watermark = 1_000 + i64::from(p);
                let these = batches((t * 3 + p as usize) as u8, p as usize);
                let mut copy = data.clone();
                copy.records = Some(these.concat().into());
                data.records = Some(spliced.records(these));
                topic.partitions.push(data);
                plain.partitions.push(copy);
            }
            spliced.response.responses.push(topic);
            copied.responses.push(plain);
        }
        let frame = spliced
            .into_frame(version, encode(version))
            .expect("encodes");
        let parts = frame.into_parts();
        let count = parts.len();
        let spliced: Vec<u8> = parts.concat();
        let copied = encode(version)(&copied).expect("encodes").to_vec();
        (spliced, copied, count)
    }

    #[test]
    fn spliced_batches_give_the_bytes_of_copied_ones_in_every_version() {
        for version in 4..=13 {
            let (spliced, copied, parts) = both(version);
            assert_eq!(spliced, copied, "version {version}");
            // Per topic: partitions of 0, 1 and 2 batches. Each batch is a part of its own (6);
            // before each of the 4 placeholders, the encoded bytes up to it; then the rest.
            assert_eq!(parts, 6 + 4 + 1, "version {version}");
        }
    }

    #[test]
    fn a_missing_placeholder_falls_back_to_copying() {
        let mut fetch = SplicedFetch::default();
        let mut topic = FetchableTopicResponse::default();
        let mut data = PartitionData::default();
        data.records = Some(fetch.records(batches(1, 2)));
        topic.partitions.push(data);
        fetch.response.responses.push(topic);
        // An encoder that loses the placeholder: the batches are copied in instead.
        let frame = fetch
            .into_frame(4, |r| {
                let mut out = encode(4)(r)?;
                if let Some(i) = out.windows(MARKER.len()).position(|w| w == MARKER) {
                    out[i] = 0;
                }
                Ok(out)
            })
            .expect("encodes");
        let bytes: Vec<u8> = frame.into_parts().concat();
        let all = batches(1, 2).concat();
        assert!(bytes.windows(all.len()).any(|w| w == all.as_slice()));
    }
}
