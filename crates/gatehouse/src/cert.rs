//! `gatehouse cert dev`: a development CA (made once, then reused, so a client that trusts it
//! keeps trusting new certificates) and a server certificate for the hosts asked for.

use anyhow::Context;
use gatehouse_tls::dev::{DevCa, Validity};
use std::path::Path;

/// Writes `out/{ca.pem, ca.key, cert.pem, key.pem}` and prints how to use them.
pub fn dev(hosts: &[String], out: &Path) -> anyhow::Result<()> {
    let hosts: Vec<&str> = hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    anyhow::ensure!(!hosts.is_empty(), "--hosts names no host");
    let ca = load_or_make_ca(out)?;
    let leaf = ca.issue(&hosts, Validity::default())?;
    write(out, "cert.pem", &leaf.chain_pem, false)?;
    write(out, "key.pem", &leaf.key_pem, true)?;
    let dir = out.display();
    println!(
        r#"Wrote {dir}/cert.pem and {dir}/key.pem for {hosts}, signed by the CA in {dir}/ca.pem.

Serve them from a listener:
  [listeners.tls]
  certificates = [{{ cert = "{dir}/cert.pem", key = "{dir}/key.pem" }}]

Trust the CA in a client:
  curl --cacert {dir}/ca.pem https://{first}:8443/

The CA's key ({dir}/ca.key) can sign certificates for any name: keep it on this machine."#,
        hosts = hosts.join(", "),
        first = hosts[0],
    );
    Ok(())
}

fn load_or_make_ca(out: &Path) -> anyhow::Result<DevCa> {
    let (cert, key) = (out.join("ca.pem"), out.join("ca.key"));
    if cert.exists() && key.exists() {
        let cert_pem = std::fs::read_to_string(&cert)
            .with_context(|| format!("reading {}", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        return DevCa::from_pem(&cert_pem, &key_pem).with_context(|| {
            format!(
                "{} and {} are not a usable CA",
                cert.display(),
                key.display()
            )
        });
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = DevCa::generate()?;
    write(out, "ca.pem", &ca.cert_pem, false)?;
    write(out, "ca.key", &ca.key_pem, true)?;
    Ok(ca)
}

/// Writes a file; keys are readable by their owner only.
fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
