//! The process's TLS cryptography: rustls on ring, the crypto SSH already brings (aws-lc, the
//! default, cost a tenth of a clean compile for nothing ring lacks), and where strata's own
//! HTTP clients start: [`client_builder`] (the source download, the clouds). A client built
//! elsewhere (oci-client's, for the shared cache) calls [`install_crypto_provider`] first,
//! since reqwest finds no provider of its own.
//! Must not finish building clients, nor know what they are for.

use std::sync::Once;
use std::time::Duration;

/// A reqwest client builder with the provider installed, strata's user agent and the given
/// timeouts; the caller adds what is its own (certificates) and builds it.
pub fn client_builder(connect: Duration, read: Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .read_timeout(read)
}

/// Makes ring the process's rustls provider, once; harmless when one is already installed.
pub fn install_crypto_provider() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Err means another provider was installed first (by a program embedding strata): that
        // one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::{Duration, Instant};

    /// A real TLS 1.3 handshake on ring: `openssl s_server` on loopback with a self-signed
    /// P-256 certificate, which the client is told to trust.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_client_completes_a_real_handshake_on_ring() {
        crate::process::require_tool("openssl", "apt-get install openssl");
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        crate::process::run_for_test(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                // A server's own certificate, not a CA's (webpki refuses a CA as the end).
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let trusted = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
        let within = Duration::from_secs(20);
        let builder = client_builder(within, within).add_root_certificate(trusted);
        let client = builder.build().unwrap();
        // The whole reply is read before the server goes (its body ends when it closes).
        let reply = async {
            let reply = client.get(format!("https://127.0.0.1:{port}/")).send().await?;
            let status = reply.status();
            reply.text().await.map(|text| (status, text))
        }
        .await;
        let _ = server.kill();
        let _ = server.wait();
        let (status, text) = reply.unwrap();
        assert!(status.is_success(), "{status}");
        assert!(text.contains("TLSv1.3"), "{text}");
    }
}
