//! The public keys `sigstoreSigned` requirements name: ECDSA on P-256 or P-384, read from
//! PEM, and how a signature is checked with each.
//!
//! Cosign signs with the hash that goes with the curve: SHA-256 on P-256, SHA-384 on
//! P-384. A P-384 signature over SHA-256 is accepted too: containers/image (podman) checks
//! every sigstore signature with SHA-256, and cosign signed so before it picked the hash
//! by the curve. Both hashes are collision-resistant, and a signature over one is no
//! signature over the other.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

/// An ECDSA public key of a curve berth checks.
#[derive(Debug, Clone)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The key of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) on P-256 or P-384.
    pub fn from_pem(pem: &str) -> Result<PublicKey, p256::pkcs8::spki::Error> {
        match p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            Ok(key) => Ok(PublicKey::P256(key)),
            // Another curve's key fails the P-256 decoding: the P-384 one tells.
            Err(_) => p384::ecdsa::VerifyingKey::from_public_key_pem(pem).map(PublicKey::P384),
        }
    }

    /// Whether `der` (an ASN.1 DER ECDSA signature) signs `message` with this key.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        match self {
            PublicKey::P256(key) => p256::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::Signature::from_der(der).is_ok_and(|sig| {
                key.verify(message, &sig).is_ok()
                    || key
                        .verify_prehash(&sha2::Sha256::digest(message), &sig)
                        .is_ok()
            }),
        }
    }

    /// The key's point, uncompressed (SEC1): what the key is, whatever file it came from.
    pub fn point(&self) -> Vec<u8> {
        match self {
            PublicKey::P256(key) => key.to_encoded_point(false).as_bytes().to_vec(),
            PublicKey::P384(key) => key.to_encoded_point(false).as_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use p256::pkcs8::EncodePublicKey as _;

    const MESSAGE: &[u8] = b"a payload";

    fn p384_signer(seed: u8) -> p384::ecdsa::SigningKey {
        p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap()
    }

    #[test]
    fn p256_and_p384_keys_are_read_from_pem() {
        let p256 = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let pem = p256
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        assert!(matches!(PublicKey::from_pem(&pem), Ok(PublicKey::P256(_))));
        let pem = p384_signer(3)
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        let key = PublicKey::from_pem(&pem).unwrap();
        assert!(matches!(key, PublicKey::P384(_)));
        assert_eq!(key.point().len(), 97);
        assert!(PublicKey::from_pem("not a key").is_err());
    }

    #[test]
    fn p384_signatures_verify_over_sha384_or_sha256_only() {
        let signer = p384_signer(5);
        let key = PublicKey::P384(*signer.verifying_key());
        let sha384: p384::ecdsa::Signature = signer.sign(MESSAGE);
        assert!(key.verifies(MESSAGE, sha384.to_der().as_bytes()));
        assert!(!key.verifies(b"another payload", sha384.to_der().as_bytes()));
        let sha256: p384::ecdsa::Signature =
            signer.sign_prehash(&sha2::Sha256::digest(MESSAGE)).unwrap();
        assert!(key.verifies(MESSAGE, sha256.to_der().as_bytes()));
        let sha512: p384::ecdsa::Signature = signer
            .sign_prehash(&sha2::Sha512::digest(MESSAGE)[..48])
            .unwrap();
        assert!(!key.verifies(MESSAGE, sha512.to_der().as_bytes()));
        // Another key, or a P-256 key, never verifies it.
        let other = PublicKey::P384(*p384_signer(6).verifying_key());
        assert!(!other.verifies(MESSAGE, sha384.to_der().as_bytes()));
        let p256 = p256::ecdsa::SigningKey::from_slice(&[5; 32]).unwrap();
        let p256_key = PublicKey::P256(*p256.verifying_key());
        assert!(!p256_key.verifies(MESSAGE, sha384.to_der().as_bytes()));
        assert!(!key.verifies(MESSAGE, b"not der"));
    }
}
