//! TLS for the data plane: libp2p-TLS certificates (the node's libp2p key signs the TLS key, per
//! the libp2p TLS spec), with AES-GCM preferred.
//!
//! `libp2p-tls`'s ready-made configs prefer ChaCha20-Poly1305, which on x86 servers with AES-NI
//! runs at a fraction of AES-GCM's speed; bulk shard bytes are the one place that matters, so
//! the data plane builds its own rustls configs from `libp2p-tls`'s public certificate functions.
//! The checks are the libp2p ones: TLS 1.3 only, exactly one self-signed certificate carrying a
//! valid libp2p extension, handshake signatures verified with that certificate's key, and on the
//! client side the peer id must be the one dialled. Both sides must present a certificate.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p_tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why TLS setup failed.
#[derive(Debug, thiserror::Error)]
#[error("data-plane TLS setup: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
        aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn certified_key(
    keypair: &Keypair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>) =
        certificate::generate(keypair).map_err(|e| TlsError(e.to_string()))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert], key)))
}

/// A client config that only accepts a server proving `peer`.
pub fn client_config(
    keypair: &Keypair,
    peer: PeerId,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let key = certified_key(keypair, &provider)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            expected: Some(peer),
        }))
        .with_client_cert_resolver(Arc::new(Resolver(key)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A server config that requires a libp2p certificate from every client.
pub fn server_config(keypair: &Keypair, alpn: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let key = certified_key(keypair, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(Arc::new(Verifier { expected: None }))
        .with_cert_resolver(Arc::new(Resolver(key)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The peer id a presented certificate chain proves.
pub fn peer_of(certs: &[CertificateDer<'_>]) -> Option<PeerId> {
    match certs {
        [one] => certificate::parse(one).ok().map(|c| c.peer_id()),
        _ => None,
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Verifies libp2p certificates; with `expected`, also the peer id.
#[derive(Debug)]
struct Verifier {
    expected: Option<PeerId>,
}

fn bad(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        std::io::Error::other(e.to_string()),
    ))))
}

impl Verifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad("a libp2p peer presents exactly one certificate"));
        }
        // Parses the certificate, checks its self-signature and the libp2p extension's
        // signature by the peer's identity key.
        let cert = certificate::parse(end_entity).map_err(bad)?;
        if let Some(expected) = self.expected
            && cert.peer_id() != expected
        {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }

    fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)
            .map_err(bad)?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        // libp2p-TLS certificates use ECDSA P-256; accept what libp2p implementations may send.
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
        ]
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is configured, so rustls never asks; refuse rather than trust.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}
