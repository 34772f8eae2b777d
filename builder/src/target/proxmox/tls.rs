//! How the API endpoint's certificate is trusted: the system's CA roots, a
//! CA file, or a pinned SHA-256 fingerprint of the leaf certificate (the usual
//! way with Proxmox's self-signed certificate). Skipping verification exists
//! only behind one loudly named flag.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// The system's CA roots.
    System,
    /// A PEM file of CA certificates (in addition to nothing else).
    CaFile(PathBuf),
    /// The leaf certificate's SHA-256, exactly.
    Fingerprint([u8; 32]),
    /// `--insecure-skip-tls-verify`: anything goes (and a warning says so).
    Insecure,
}

/// Parses `AB:CD:...` (32 pairs, `:` optional, any case).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hexs: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hexs)
        .map_err(|_| format!("{s:?} is not a SHA-256 fingerprint (32 hex pairs like AB:CD:...)"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{s:?} is not a SHA-256 fingerprint (32 hex pairs like AB:CD:...)"))
}

pub fn format_fingerprint(fp: &[u8]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl TlsMode {
    pub fn describe(&self) -> String {
        match self {
            TlsMode::System => "verified against the system CAs".into(),
            TlsMode::CaFile(p) => format!("verified against {}", p.display()),
            TlsMode::Fingerprint(fp) => format!("pinned to {}", format_fingerprint(fp)),
            TlsMode::Insecure => "NOT VERIFIED (--insecure-skip-tls-verify)".into(),
        }
    }

    /// Configures a reqwest client builder.
    pub fn apply(&self, b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        Ok(match self {
            TlsMode::System => b.use_rustls_tls(),
            TlsMode::CaFile(p) => {
                let pem =
                    std::fs::read(p).with_context(|| format!("reading CA file {}", p.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("{} holds no PEM certificate", p.display()))?;
                if certs.is_empty() {
                    bail!("{} holds no PEM certificate", p.display());
                }
                let mut b = b.use_rustls_tls().tls_built_in_root_certs(false);
                for c in certs {
                    b = b.add_root_certificate(c);
                }
                b
            }
            TlsMode::Fingerprint(fp) => b.use_preconfigured_tls(pinned_config(*fp)),
            TlsMode::Insecure => b.use_rustls_tls().danger_accept_invalid_certs(true),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pinned_config(fp: [u8; 32]) -> rustls::ClientConfig {
    let provider = provider();
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { fp, provider }))
        .with_no_client_auth()
}

/// Accepts exactly the certificate with the pinned SHA-256 (the handshake
/// signature is still checked against that certificate's key).
#[derive(Debug)]
struct Pinned {
    fp: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fp {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate fingerprint is {}, not the pinned {} (tls.fingerprint / IMGBUILD_PVE_FINGERPRINT)",
                format_fingerprint(&got),
                format_fingerprint(&self.fp)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let s = "AB:".repeat(31) + "CD";
        let fp = parse_fingerprint(&s).unwrap();
        assert_eq!(format_fingerprint(&fp), s);
        assert_eq!(
            parse_fingerprint(&s.to_lowercase().replace(':', "")).unwrap(),
            fp
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"ZZ:".repeat(32)).is_err());
    }
}
