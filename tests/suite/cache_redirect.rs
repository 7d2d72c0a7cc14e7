//! Registry credentials are never forwarded to another host on a redirect (issue 27): a
//! loopback "registry" that answers the connection probe with a 307 to a second listener on
//! another port (another origin, as a registry redirecting blob or manifest reads to a storage
//! host does). The first sees the Basic credentials; the second must not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use strata::cache::{Cache, CacheUrl, Credentials, CredentialsFrom};
use strata::events::Events;

/// Serves `reply(request head)` to every connection, recording each request head.
fn serve(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<String>>>,
    reply: impl Fn(&str) -> String + Send + 'static,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let response = reply(&head);
            seen.lock().unwrap().push(head);
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_with_the_registry_on_a_cross_host_redirect() {
    let registry = TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let registry_port = registry.local_addr().unwrap().port();
    let elsewhere_port = elsewhere.local_addr().unwrap().port();
    let at_registry = Arc::new(Mutex::new(Vec::new()));
    let at_elsewhere = Arc::new(Mutex::new(Vec::new()));
    serve(registry, at_registry.clone(), move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        if !head.to_lowercase().contains("authorization:") {
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned()
        } else if path == "/v2/" {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_owned()
        } else {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere_port}{path}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        }
    });
    serve(elsewhere, at_elsewhere.clone(), |_| {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#;
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    });
    let url =
        CacheUrl::parse(&format!("oci+http://127.0.0.1:{registry_port}/strata/cache")).unwrap();
    let credentials =
        Credentials::Basic { user: "runner".to_owned(), password: "s3cret-pass".to_owned() };
    let connected =
        Cache::connect(&url, &credentials, &CredentialsFrom::Environment, &Events::none()).await;
    eprintln!("connect: {:?}", connected.as_ref().map(|_| ()).map_err(ToString::to_string));
    let registry_heads = at_registry.lock().unwrap().clone();
    let elsewhere_heads = at_elsewhere.lock().unwrap().clone();
    assert!(
        registry_heads.iter().any(|head| head.to_lowercase().contains("authorization: basic")),
        "the registry itself gets the credentials: {registry_heads:#?}"
    );
    assert!(!elsewhere_heads.is_empty(), "the redirect was followed: {registry_heads:#?}");
    for head in &elsewhere_heads {
        assert!(!head.to_lowercase().contains("authorization"), "forwarded: {head}");
    }
}
