//! A local certificate authority for trying HTTPS on one machine: `gatehouse cert dev` writes
//! a CA and a leaf for the hosts asked for, `gatehouse demo` makes one in memory, and tests
//! issue server and client certificates from it. Keys are ECDSA P-256 (fast handshakes,
//! accepted everywhere).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::TlsError;
use crate::load::unix_now;

/// When an issued certificate is valid, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl Default for Validity {
    /// From an hour ago (clock skew between machines) for 397 days, the longest lifetime
    /// browsers accept for a server certificate.
    fn default() -> Self {
        let now = unix_now();
        Self {
            not_before_unix: now - 3600,
            not_after_unix: now + 397 * 86_400,
        }
    }
}

/// A certificate and key in PEM, with the chain a server sends (leaf, then CA).
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

/// A certificate authority that lives in memory (and in PEM files when the caller saves it).
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    /// A new CA, valid for ten years.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse development CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "gatehouse (local use only)");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = unix_now();
        set_validity(&mut params, now - 3600, now + 10 * 365 * 86_400)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA saved earlier by [`DevCa::generate`]'s caller.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_error)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// A server certificate for `hosts` (DNS names, `*.wildcards` or IP addresses).
    pub fn issue(&self, hosts: &[&str], validity: Validity) -> Result<Issued, TlsError> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(rcgen_error)?;
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, validity)
    }

    /// A client certificate (for mutual TLS) whose subject is `CN=common_name`.
    pub fn issue_client(&self, common_name: &str, validity: Validity) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<Issued, TlsError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(
            &mut params,
            validity.not_before_unix,
            validity.not_after_unix,
        )?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        let cert_pem = cert.pem();
        Ok(Issued {
            chain_pem: format!("{cert_pem}{}", self.cert_pem),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, from: i64, until: i64) -> Result<(), TlsError> {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| TlsError::Other(format!("certificate validity out of range: {e}")))
    };
    params.not_before = at(from)?;
    params.not_after = at(until)?;
    Ok(())
}

fn rcgen_error(err: rcgen::Error) -> TlsError {
    TlsError::Other(format!("certificate generation failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ca_issues_certificates_that_chain_to_it() {
        let ca = DevCa::generate().unwrap();
        let again = DevCa::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let leaf = again.issue(&["localhost"], Validity::default()).unwrap();
        assert!(leaf.chain_pem.ends_with(&ca.cert_pem));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
    }
}
