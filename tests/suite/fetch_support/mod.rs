//! Real HTTP servers on 127.0.0.1 for the fetch tests: an origin with ranges, ETags and
//! configurable misbehaviour (drop the connection, ignore ranges, fail first, redirect, claim
//! a longer Content-Length than the body), and a forward proxy that records what went through
//! it. One thread per connection, one request per connection (`Connection: close`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What a path answers.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Vec<u8>,
    /// Answer a redirect to this path instead of a body.
    pub redirect: Option<String>,
    /// Answer this status (with a short text body) instead of the body.
    pub status: Option<u16>,
    /// Answer these statuses first, one request each, then behave normally.
    pub fail_first: Vec<u16>,
    /// Send the headers and only this many body bytes, then close; once.
    pub drop_after_once: Option<usize>,
    /// Send this many body bytes then close, on every request.
    pub drop_after_always: Option<usize>,
    /// Answer 200 with the whole body even when a range is asked for.
    pub ignore_range: bool,
    /// Pause this long after every 64 KiB of body.
    pub throttle: Option<Duration>,
    /// Send no ETag and no Last-Modified.
    pub no_validators: bool,
    /// Claim this many bytes more in Content-Length than the body has (then close early).
    pub extra_length: usize,
}

impl Route {
    pub fn body(body: impl Into<Vec<u8>>) -> Self {
        Route { body: body.into(), ..Route::default() }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
    body_bytes: HashMap<String, u64>,
}

pub struct Server {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Server { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state.lock().unwrap().routes.insert(path.to_owned(), route);
    }

    /// Requests for `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.state.lock().unwrap().seen.iter().filter(|seen| seen.path == path).cloned().collect()
    }

    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// Body bytes written for `path` (what the client was sent, not what it kept).
    pub fn body_bytes(&self, path: &str) -> u64 {
        self.state.lock().unwrap().body_bytes.get(path).copied().unwrap_or(0)
    }
}

fn read_head(stream: &TcpStream) -> Option<(String, String, HashMap<String, String>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    Some((method, target, headers))
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let Some((_method, target, headers)) = read_head(&stream) else { return };
    let path = target.split('?').next().unwrap_or(&target).to_owned();
    let route = {
        let mut state = state.lock().unwrap();
        let seen = Seen { path: path.clone(), target: target.clone(), headers: headers.clone() };
        state.seen.push(seen);
        let Some(route) = state.routes.get_mut(&path) else {
            drop(state);
            let _ = respond_status(&mut stream, 404);
            return;
        };
        let snapshot = route.clone();
        if !route.fail_first.is_empty() {
            route.fail_first.remove(0);
        }
        route.drop_after_once = None;
        snapshot
    };
    if let Some(&status) = route.fail_first.first() {
        let _ = respond_status(&mut stream, status);
        return;
    }
    if let Some(status) = route.status {
        let _ = respond_status(&mut stream, status);
        return;
    }
    if let Some(location) = &route.redirect {
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes());
        return;
    }
    let etag = format!("\"{:016x}\"", fnv(&route.body));
    let validators = if route.no_validators {
        String::new()
    } else {
        format!("ETag: {etag}\r\nLast-Modified: Tue, 01 Jan 2030 00:00:00 GMT\r\n")
    };
    let len = route.body.len();
    let range_start = headers
        .get("range")
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.strip_suffix('-'))
        .and_then(|start| start.parse::<usize>().ok())
        .filter(|_| !route.ignore_range)
        .filter(|_| headers.get("if-range").is_none_or(|if_range| *if_range == etag));
    let (head, start) = match range_start {
        Some(start) if start >= len => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            (head, len)
        }
        Some(start) => {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\n{validators}Content-Range: bytes {start}-{}/{len}\r\n\
                 Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                len - 1,
                len - start + route.extra_length
            );
            (head, start)
        }
        None => {
            let accept = if route.ignore_range { "" } else { "Accept-Ranges: bytes\r\n" };
            let head = format!(
                "HTTP/1.1 200 OK\r\n{validators}{accept}Content-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                len + route.extra_length
            );
            (head, 0)
        }
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let limit = route.drop_after_once.or(route.drop_after_always);
    let mut end = len;
    if let Some(limit) = limit {
        end = end.min(start + limit);
    }
    let mut at = start;
    while at < end {
        let next = (at + 64 * 1024).min(end);
        if stream.write_all(&route.body[at..next]).is_err() {
            break;
        }
        *state.lock().unwrap().body_bytes.entry(path.clone()).or_default() += (next - at) as u64;
        at = next;
        if let Some(pause) = route.throttle {
            thread::sleep(pause);
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn respond_status(stream: &mut TcpStream, status: u16) -> std::io::Result<()> {
    let body = format!("status {status}\n");
    let head = format!(
        "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A forward HTTP proxy: takes absolute-form requests, forwards them to the origin, and
/// records each target it was asked for.
pub struct Proxy {
    pub port: u16,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let shared = targets.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let targets = shared.clone();
                thread::spawn(move || forward(stream, &targets));
            }
        });
        Proxy { port, targets }
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn forward(client: TcpStream, targets: &Mutex<Vec<String>>) {
    let Some((method, target, headers)) = read_head(&client) else { return };
    targets.lock().unwrap().push(target.clone());
    let Some(rest) = target.strip_prefix("http://") else { return };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut origin) = TcpStream::connect(authority) else { return };
    let mut head = format!("{method} {} HTTP/1.1\r\n", if path.is_empty() { "/" } else { path });
    for (name, value) in &headers {
        if name != "proxy-connection" && name != "connection" {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    if origin.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut client = client;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        match origin.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if client.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}
