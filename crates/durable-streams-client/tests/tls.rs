//! TLS for real: a TLS-terminating proxy (certificates generated at test
//! time) in front of the real Rust server; the client trusts a private CA
//! and, for mutual TLS, presents a client certificate.

mod common;

use std::sync::Arc;

use durable_streams_client::{Client, CreateOptions, ErrorKind};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use test_servers::{ServerKind, TestServer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// A private CA and what it signed.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["test-client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Terminates TLS on a free port and pipes plain bytes to `upstream`.
async fn tls_proxy(pki: &Pki, upstream: std::net::SocketAddr, require_client_cert: bool) -> u16 {
    let builder = ServerConfig::builder();
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap(),
        )
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn https_stream(client: &Client, port: u16, name: &str) -> durable_streams_client::Stream {
    client
        .stream(format!("https://127.0.0.1:{port}/v1/stream/{name}"))
        .unwrap()
}

#[tokio::test]
async fn a_private_ca_is_trusted_when_added() {
    let server = TestServer::start(ServerKind::Rust);
    let pki = pki();
    let port = tls_proxy(&pki, server.addr(), false).await;

    let trusting = Client::builder()
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let s = https_stream(&trusting, port, "tls-ca");
    s.create_with(CreateOptions::json()).await.unwrap();
    s.append_json(&serde_json::json!({"over": "tls"}))
        .await
        .unwrap();
    let items: Vec<serde_json::Value> = s.read_json().await.unwrap();
    assert_eq!(items, vec![serde_json::json!({"over": "tls"})]);

    // Without the CA the server's certificate is refused (not retried forever).
    let plain = Client::builder()
        .retry_policy(durable_streams_client::RetryPolicy::never())
        .build()
        .unwrap();
    let err = https_stream(&plain, port, "tls-ca")
        .head()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Network, "{err}");
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let server = TestServer::start(ServerKind::Rust);
    let pki = pki();
    let port = tls_proxy(&pki, server.addr(), true).await;

    let with_cert = Client::builder()
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .client_certificate_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .build()
        .unwrap();
    let s = https_stream(&with_cert, port, "mtls");
    s.create_with(CreateOptions::new().content_type("text/plain"))
        .await
        .unwrap();
    s.append("hello").await.unwrap();
    assert_eq!(s.read_text().await.unwrap(), "hello");

    let without = Client::builder()
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .retry_policy(durable_streams_client::RetryPolicy::never())
        .build()
        .unwrap();
    let err = https_stream(&without, port, "mtls")
        .head()
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout),
        "{err}"
    );
}

#[test]
fn bad_tls_material_is_an_invalid_argument() {
    let err = Client::builder()
        .add_root_certificate_pem(b"not a certificate")
        .build()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::InvalidArgument {
            field: "root_certificate"
        }
    );
    let err = Client::builder()
        .client_certificate_pem(b"nope", b"nope")
        .build()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::InvalidArgument {
            field: "client_certificate"
        }
    );
    let err = Client::builder().proxy("::not a url").build().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "proxy" });
}
