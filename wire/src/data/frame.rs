//! Framing on quinn streams: a little-endian `u32` length, then a DAG-CBOR header or raw body
//! bytes, read with limits and a stall deadline.

use bytes::{Bytes, BytesMut};
use quinn::RecvStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::STALL_TIMEOUT;
use crate::protocol::{decode_body, encode_frame};

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameFailure {
    /// Not a valid frame (over its limit, undecodable).
    Malformed(String),
    /// The stream failed or ended early.
    Io(String),
    /// Nothing arrived for [`STALL_TIMEOUT`], this many body bytes in.
    Stalled(u64),
}

/// Reads a little-endian `u32` (a frame length).
pub async fn read_u32(recv: &mut RecvStream) -> Result<u32, FrameFailure> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| FrameFailure::Io(e.to_string()))?;
    Ok(u32::from_le_bytes(len))
}

/// Reads a length-prefixed DAG-CBOR header of at most `limit` bytes.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<T, FrameFailure> {
    let len = read_u32(recv).await? as usize;
    if len > limit {
        return Err(FrameFailure::Malformed(format!(
            "header of {len} bytes is over the {limit}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameFailure::Io(e.to_string()))?;
    decode_body(&body).map_err(|e| FrameFailure::Malformed(e.to_string()))
}

/// Reads exactly `len` bytes without copying quinn's chunks more than once.
/// Gives up with [`FrameFailure::Stalled`] when nothing arrives for [`STALL_TIMEOUT`].
pub async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, FrameFailure> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let read = tokio::time::timeout(STALL_TIMEOUT, recv.read_chunk(len - buf.len(), true));
        match read.await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk.bytes),
            Ok(Ok(None)) => {
                return Err(FrameFailure::Io(format!(
                    "stream ended after {} of {len} bytes",
                    buf.len()
                )));
            }
            Ok(Err(e)) => return Err(FrameFailure::Io(e.to_string())),
            Err(_) => return Err(FrameFailure::Stalled(buf.len() as u64)),
        }
    }
    Ok(buf.freeze())
}

/// A header as a length-prefixed frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    encode_frame(msg)
}
