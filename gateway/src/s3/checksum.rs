//! Checksums: the ones a request declares (in headers, or as trailers of an aws-chunked body)
//! checked against what was received, Content-MD5, and hashing a whole object's bytes (for a
//! multipart object's BLAKE3).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_chunker::manifest::{ObjectManifest, hex};
use cairn_chunker::pieces::PieceHasher;
use cairn_client::get::{Incidents, read_object};
use cairn_client::network::Network;
use s3s::dto::*;
use tokio::io::AsyncWrite;

use crate::error::Error;

/// An `AsyncWrite` that only hashes (to compute a whole object's BLAKE3 from its parts).
pub(super) struct HashSink<H>(pub(super) H);

/// Something [`HashSink`] feeds: a whole-object hasher, or one for a piece at its offset.
pub(super) trait Absorb {
    fn absorb(&mut self, bytes: &[u8]);
}

impl Absorb for blake3::Hasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Absorb for PieceHasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl<H: Absorb + Unpin> AsyncWrite for HashSink<H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.absorb(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub(super) fn checksum_map(c: &Checksum) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (name, v) in [
        ("crc32", &c.checksum_crc32),
        ("crc32c", &c.checksum_crc32c),
        ("crc64nvme", &c.checksum_crc64nvme),
        ("sha1", &c.checksum_sha1),
        ("sha256", &c.checksum_sha256),
    ] {
        if let Some(v) = v {
            m.insert(name.to_string(), v.clone());
        }
    }
    m
}

/// The checksums a request declares (headers, or the algorithm whose value comes in trailers).
pub(super) struct Declared {
    pub(super) hasher: s3s::checksum::ChecksumHasher,
    pub(super) expected: Checksum,
}

pub(super) fn declared(
    algorithm: Option<&ChecksumAlgorithm>,
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
) -> Result<Declared, Error> {
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    let expected = Checksum {
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        ..Default::default()
    };
    if expected.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if expected.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if expected.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if expected.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if expected.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unsupported checksum algorithm {other}"
                )));
            }
        }
    }
    Ok(Declared { hasher, expected })
}

/// Takes checksum values that arrived as trailers (aws-chunked uploads).
pub(super) fn trailer_checksums(
    trailers: Option<s3s::TrailingHeaders>,
    expected: &mut Checksum,
) -> Result<(), Error> {
    let Some(trailers) = trailers.and_then(|t| t.take()) else {
        return Ok(());
    };
    let get = |name: &str| -> Result<Option<String>, Error> {
        trailers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| Error::InvalidArgument(format!("bad {name} trailer")))
            })
            .transpose()
    };
    if let Some(v) = get("x-amz-checksum-crc32")? {
        expected.checksum_crc32 = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-crc32c")? {
        expected.checksum_crc32c = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-crc64nvme")? {
        expected.checksum_crc64nvme = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-sha1")? {
        expected.checksum_sha1 = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-sha256")? {
        expected.checksum_sha256 = Some(v);
    }
    Ok(())
}

/// Compares what was computed with what the client declared.
pub(super) fn check_checksums(computed: &Checksum, expected: &Checksum) -> Result<(), Error> {
    for (name, c, e) in [
        ("CRC32", &computed.checksum_crc32, &expected.checksum_crc32),
        (
            "CRC32C",
            &computed.checksum_crc32c,
            &expected.checksum_crc32c,
        ),
        (
            "CRC64NVME",
            &computed.checksum_crc64nvme,
            &expected.checksum_crc64nvme,
        ),
        ("SHA1", &computed.checksum_sha1, &expected.checksum_sha1),
        (
            "SHA256",
            &computed.checksum_sha256,
            &expected.checksum_sha256,
        ),
    ] {
        if let Some(e) = e
            && c.as_ref() != Some(e)
        {
            return Err(Error::BadDigest(format!(
                "the {name} you specified ({e}) did not match what we received ({})",
                c.as_deref().unwrap_or("none")
            )));
        }
    }
    Ok(())
}

pub(super) fn check_md5(content_md5: Option<&String>, md5_hex: &str) -> Result<(), Error> {
    let Some(b64) = content_md5 else {
        return Ok(());
    };
    let raw = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| Error::InvalidArgument("Content-MD5 is not base64".into()))?;
    if hex(&raw) != md5_hex {
        return Err(Error::BadDigest(
            "the Content-MD5 you specified did not match what we received".into(),
        ));
    }
    Ok(())
}

/// Reads a whole object (verified) into a hashing sink.
pub(super) async fn read_into<H: Absorb + Unpin + Send>(
    net: &Network,
    m: &ObjectManifest,
    mut sink: HashSink<H>,
) -> Result<HashSink<H>, Error> {
    read_object(
        net,
        m,
        None,
        &mut sink,
        Arc::new(|_| {}),
        &Incidents::default(),
    )
    .await?;
    Ok(sink)
}
