//! A registry's own certificate, pinned by the operator in its certs.d directory.
//!
//! Docker's guide to a registry with a self-signed certificate (`openssl req -x509 …`)
//! makes one that openssl marks `CA:TRUE`; put in certs.d as the registry's `ca.crt`,
//! podman, skopeo and Docker accept it, while webpki refuses a CA presented as the server's
//! certificate (`CaUsedAsEndEntity`). So when the ordinary verification fails and the
//! certificate the registry presented is byte for byte one the operator put in that
//! registry's directory, it is accepted after all — its name and its validity period are
//! still checked. Anything else (another self-signed certificate, even with the same name)
//! keeps the ordinary verifier's error.

use std::sync::Arc;
use std::time::Duration;

use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
use der::{Decode, Reader, SliceReader, Tag, TagNumber};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// The ordinary verifier, and the certificates that are trusted as they are.
#[derive(Debug)]
pub struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl PinnedVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>, pinned: Vec<CertificateDer<'static>>) -> Self {
        PinnedVerifier { inner, pinned }
    }

    /// Whether `cert`, one of the pinned, is for `name` and valid at `now`.
    fn accepts(&self, cert: &CertificateDer<'_>, name: &ServerName<'_>, now: UnixTime) -> bool {
        if !self.pinned.iter().any(|p| p.as_ref() == cert.as_ref()) {
            return false;
        }
        let named = rustls::server::ParsedCertificate::try_from(cert)
            .and_then(|parsed| rustls::client::verify_server_name(&parsed, name));
        named.is_ok() && valid_at(cert, now).is_ok()
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Err(_) if self.accepts(end_entity, server_name, now) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `now` is within the certificate's validity period (RFC 5280 4.1.2.5).
pub fn valid_at(cert: &[u8], now: UnixTime) -> Result<(), Error> {
    let bad = |_| Error::InvalidCertificate(CertificateError::BadEncoding);
    let (not_before, not_after) = validity(cert).map_err(bad)?;
    let now = Duration::from_secs(now.as_secs());
    if now < not_before {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > not_after {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// `notBefore` and `notAfter`, since the Unix epoch: `Certificate` is a SEQUENCE whose
/// first element, `tbsCertificate`, holds an optional `[0]` version, the serial number, the
/// signature algorithm, the issuer, then the validity.
fn validity(cert: &[u8]) -> der::Result<(Duration, Duration)> {
    let certificate = AnyRef::from_der(cert)?;
    let mut outer = SliceReader::new(certificate.value())?;
    let tbs = AnyRef::decode(&mut outer)?;
    let mut fields = SliceReader::new(tbs.value())?;
    let version = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    if fields.peek_tag()? == version {
        AnyRef::decode(&mut fields)?;
    }
    for _serial_signature_issuer in 0..3 {
        AnyRef::decode(&mut fields)?;
    }
    let validity = AnyRef::decode(&mut fields)?;
    let mut times = SliceReader::new(validity.value())?;
    Ok((time(&mut times)?, time(&mut times)?))
}

/// A `Time`: UTCTime up to 2049, GeneralizedTime after.
fn time(reader: &mut SliceReader<'_>) -> der::Result<Duration> {
    if reader.peek_tag()? == Tag::UtcTime {
        Ok(UtcTime::decode(reader)?.to_unix_duration())
    } else {
        Ok(GeneralizedTime::decode(reader)?.to_unix_duration())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// `openssl req -x509 -newkey ec … -days 1 -subj /CN=pinned-test -addext
    /// subjectAltName=IP:127.0.0.1`: `CA:TRUE`, valid for a day from [`NOT_BEFORE`].
    const DOCKER_GUIDE: &str = "\
-----BEGIN CERTIFICATE-----
MIIBkjCCATigAwIBAgIUWRHUvzYvWPKgYtyYICdvx5AW8PUwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLcGlubmVkLXRlc3QwHhcNMjYxMjA2MDgxNTM3WhcNMjYxMjA3
MDgxNTM3WjAWMRQwEgYDVQQDDAtwaW5uZWQtdGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABPh/+RFEBK25HDJVyI/Kx+UwaMgdxOWuv77vfrZluBfmxFQzSLoD
w0XHliSQi784DG69wlzNBFEht8COXe4YDLqjZDBiMB0GA1UdDgQWBBTiXpWdswjX
M3upaFClbm7xMjfEZjAfBgNVHSMEGDAWgBTiXpWdswjXM3upaFClbm7xMjfEZjAP
BgNVHRMBAf8EBTADAQH/MA8GA1UdEQQIMAaHBH8AAAEwCgYIKoZIzj0EAwIDSAAw
RQIhAJipeor9LiQJcbpe0FfQ2I0JT//SHJBEcfS/OGzdLDXUAiAcwZu8q+I8pvMX
D/4YXBR7BzyjGavU26NH6stzcAeBQw==
-----END CERTIFICATE-----
";
    const NOT_BEFORE: u64 = 1_796_544_937;
    const DAY: u64 = 86_400;

    fn cert() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(DOCKER_GUIDE.as_bytes()).unwrap()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn verify(pinned: Vec<CertificateDer<'static>>, name: &str, now: u64) -> Result<(), Error> {
        // The ordinary verifier, trusting the certificate as a CA, refuses it as the
        // server's (`CaUsedAsEndEntity`): the case pinning is for.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ordinary =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let v = PinnedVerifier::new(ordinary, pinned);
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(&cert(), &[], &name, &[], at(now))
            .map(|_| ())
    }

    #[test]
    fn the_validity_period_is_read_and_kept() {
        assert!(valid_at(&cert(), at(NOT_BEFORE + 10)).is_ok());
        let early = valid_at(&cert(), at(NOT_BEFORE - 10)).unwrap_err();
        assert!(matches!(
            early,
            Error::InvalidCertificate(CertificateError::NotValidYet)
        ));
        let late = valid_at(&cert(), at(NOT_BEFORE + DAY + 10)).unwrap_err();
        assert!(matches!(
            late,
            Error::InvalidCertificate(CertificateError::Expired)
        ));
        assert!(valid_at(b"\x30\x03\x02\x01\x01", at(NOT_BEFORE)).is_err());
    }

    #[test]
    fn a_pinned_certificate_is_accepted_for_its_name_while_valid() {
        assert!(verify(vec![cert()], "127.0.0.1", NOT_BEFORE + 10).is_ok());
    }

    #[test]
    fn a_pinned_certificate_for_another_name_or_out_of_date_is_refused() {
        assert!(verify(vec![cert()], "127.0.0.2", NOT_BEFORE + 10).is_err());
        assert!(verify(vec![cert()], "localhost", NOT_BEFORE + 10).is_err());
        assert!(verify(vec![cert()], "127.0.0.1", NOT_BEFORE + DAY + 10).is_err());
    }

    #[test]
    fn a_certificate_not_pinned_is_refused_as_the_ordinary_verifier_says() {
        let e = verify(Vec::new(), "127.0.0.1", NOT_BEFORE + 10).unwrap_err();
        assert!(format!("{e:?}").contains("CaUsedAsEndEntity"), "{e:?}");
    }
}
