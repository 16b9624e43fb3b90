//! A verified client certificate as text for the upstream: its subject distinguished name
//! (`CN=alice, O=Example`), the form operators already match on in nginx
//! (`$ssl_client_s_dn`) and Envoy (`Subject=` in x-forwarded-client-cert).

use rustls_pki_types::CertificateDer;

/// The subject of the leaf in `chain` (the client's own certificate comes first), or `None`
/// when there is no parseable certificate.
pub fn client_subject(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let subject = cert.subject().to_string();
    (!subject.is_empty()).then_some(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{DevCa, Validity};
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn names_the_subject_of_the_leaf() {
        let ca = DevCa::generate().unwrap();
        let client = ca.issue_client("alice", Validity::default()).unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(client.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(client_subject(&chain).as_deref(), Some("CN=alice"));
        assert_eq!(client_subject(&[]), None);
        assert_eq!(client_subject(&[CertificateDer::from(vec![1, 2, 3])]), None);
    }
}
