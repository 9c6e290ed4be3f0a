//! TLS for the gRPC between the controller and an experiment's pods. Like the bearer token,
//! everything is derived from the controller's key and the experiment's uid: a certificate
//! authority per experiment whose Ed25519 key comes from a keyed hash (Ed25519 keys are 32
//! byte seeds, and its signatures are deterministic), and one server certificate for all of
//! the experiment's pods. Every replica, and a new leader, rebuilds the same authority without
//! reading the Secret the pods mount; an authority never signs for two experiments, so one
//! experiment's pods cannot pass for another's.
//!
//! Pod addresses are not known when the certificate is issued, so it names the experiment
//! instead ([`server_name`]) and the controller asks for that name whatever address it dials.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::token::TokenKey;

/// What a client needs to trust an experiment's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTrust {
    /// The experiment's certificate authority, PEM.
    pub ca_pem: String,
    /// The name in the pods' certificate.
    pub server_name: String,
}

/// What the pods present: their certificate (signed by the experiment's authority) and key.
#[derive(Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for PodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodIdentity(..)")
    }
}

/// The DNS name every pod of the experiment presents. `.invalid` never resolves (RFC 2606):
/// the name is checked against the certificate, never looked up.
pub(crate) fn server_name(experiment_uid: &str) -> String {
    format!("{experiment_uid}.pods.loadlab.invalid")
}

/// The experiment's authority and its pods' identity, the same on every call.
pub fn issue(key: &TokenKey, experiment_uid: &str) -> Result<(PodTrust, PodIdentity), String> {
    let failed = |e: rcgen::Error| format!("issuing the experiment's pod certificate: {e}");
    let ca_key = ed25519_key(&key.seed_for("pod-tls-ca", experiment_uid))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = distinguished_name(&format!("loadlab experiment {experiment_uid}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let name = server_name(experiment_uid);
    let pod_key = ed25519_key(&key.seed_for("pod-tls-server", experiment_uid))?;
    let mut pod = CertificateParams::new(vec![name.clone()]).map_err(failed)?;
    pod.distinguished_name = distinguished_name(&name);
    pod.is_ca = IsCa::ExplicitNoCa;
    pod.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    pod.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    pod.use_authority_key_identifier_extension = true;
    let pod_cert = pod.signed_by(&pod_key, &issuer).map_err(failed)?;
    Ok((
        PodTrust {
            ca_pem: ca_cert.pem(),
            server_name: name,
        },
        PodIdentity {
            cert_pem: pod_cert.pem(),
            key_pem: pod_key.serialize_pem(),
        },
    ))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// An Ed25519 key from its 32-byte seed, as PKCS#8 v1 (RFC 8410): a fixed header, the seed.
fn ed25519_key(seed: &[u8; 32]) -> Result<KeyPair, String> {
    const PKCS8_HEADER: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PKCS8_HEADER.to_vec();
    der.extend_from_slice(seed);
    KeyPair::try_from(der).map_err(|e| format!("deriving the experiment's TLS key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new("k".repeat(32).as_str()).unwrap()
    }

    #[test]
    fn every_replica_derives_the_same_authority_and_identity() {
        let (trust, identity) = issue(&key(), "uid-1").unwrap();
        assert_eq!(
            (trust.clone(), identity.clone()),
            issue(&key(), "uid-1").unwrap()
        );
        assert!(trust.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(trust.server_name, "uid-1.pods.loadlab.invalid");
    }

    #[test]
    fn experiments_and_keys_get_their_own_authorities() {
        let (one, one_pods) = issue(&key(), "uid-1").unwrap();
        let (two, two_pods) = issue(&key(), "uid-2").unwrap();
        assert_ne!(one.ca_pem, two.ca_pem);
        assert_ne!(one_pods.key_pem, two_pods.key_pem);
        let other_key = TokenKey::new("j".repeat(32).as_str()).unwrap();
        let (elsewhere, _) = issue(&other_key, "uid-1").unwrap();
        assert_ne!(one.ca_pem, elsewhere.ca_pem);
    }
}
