use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A CA and a leaf for `localhost` and 127.0.0.1 signed by it, as PEM files in a directory.
pub(crate) struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub files: TlsFiles,
}

pub(crate) fn pki(common_name: &str) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "influx-ha test CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let ca_path = write("ca.pem", ca.pem());
    let files = TlsFiles {
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", leaf_key.serialize_pem()),
    };
    TestPki {
        ca: ca_path,
        files,
        dir,
    }
}

/// Serves TLS connections with `tls`: each reads five bytes and sends them back.
async fn echo_server(tls: Arc<ServerTls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = tls.acceptor();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(stream).await {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// Connects with `config`, says hello, returns the server certificate's DER.
async fn hello(addr: SocketAddr, config: ClientConfig) -> Result<Vec<u8>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"hello");
    let (_, conn) = s.get_ref();
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default())
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_and_others_do_not() {
    let pki = pki("first");
    let tls = Arc::new(ServerTls::new(pki.files.clone()).expect("loads"));
    let addr = echo_server(tls).await;
    let trusted = client_config(Some(&pki.ca)).expect("client config");
    hello(addr, trusted).await.expect("handshake with the CA");
    let other = super::tests::pki("other");
    let untrusting = client_config(Some(&other.ca)).expect("client config");
    let err = hello(addr, untrusting).await.expect_err("unknown CA");
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_and_keeps_it_on_error() {
    let pki = pki("before");
    let tls = Arc::new(ServerTls::new(pki.files.clone()).expect("loads"));
    let addr = echo_server(tls.clone()).await;
    let before = hello(addr, client_config(Some(&pki.ca)).expect("cfg"))
        .await
        .expect("handshake");

    // A broken key file: refused, the running certificate stays.
    std::fs::write(&pki.files.key, "not a key").expect("write");
    let err = tls.load(None).map(|_| ()).expect_err("broken key");
    assert!(err.to_string().contains("key.pem"), "{err}");
    let still = hello(addr, client_config(Some(&pki.ca)).expect("cfg"))
        .await
        .expect("handshake");
    assert_eq!(still, before);

    // New files in place (a renewed certificate from another CA): used from now on.
    let renewed = super::tests::pki("after");
    std::fs::copy(&renewed.files.cert, &pki.files.cert).expect("copy");
    std::fs::copy(&renewed.files.key, &pki.files.key).expect("copy");
    tls.install(tls.load(None).expect("reloads"));
    let after = hello(addr, client_config(Some(&renewed.ca)).expect("cfg"))
        .await
        .expect("handshake with the new certificate");
    assert_ne!(after, before);
}

#[test]
fn unusable_files_are_named() {
    let pki = pki("x");
    let other = super::tests::pki("y");
    let mismatched = TlsFiles {
        cert: pki.files.cert.clone(),
        key: other.files.key.clone(),
    };
    let err = ServerTls::new(mismatched).expect_err("key of another certificate");
    assert!(
        err.to_string().contains("do not make a usable certificate"),
        "{err}"
    );
    let missing = TlsFiles {
        cert: pki.dir.path().join("nope.pem"),
        key: pki.files.key.clone(),
    };
    let err = ServerTls::new(missing).expect_err("missing file");
    assert!(err.to_string().contains("certificate file"), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let err = client_config(Some(&pki.files.key)).expect_err("a key is not a CA");
    assert!(err.to_string().contains("CA file"), "{err}");
}
