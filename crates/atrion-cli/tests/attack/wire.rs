//! Raw HTTP/1.1 over `tokio::net::TcpStream`: what a hostile client sends, byte for byte,
//! from a chosen loopback address (Linux answers on all of 127/8).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The port of a `http://host:port` URL.
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("a port in the URL")
}

/// A connection to the server on `port` from the loopback address `src`.
pub async fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((src, 0))).unwrap();
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap()
}

/// An answer: its status, and its head and body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// A header's value, by its lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` (a whole HTTP/1.1 request; it should say `Connection: close`) on
/// `stream`, and reads the answer to the end. `None` if the server closed without a word.
pub async fn exchange(stream: &mut TcpStream, request: &str) -> Option<Answer> {
    // A write to a connection the server closed at once may fail: no answer.
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
    if raw.is_empty() {
        assert!(read.is_ok(), "the server neither answered nor closed within 30 s");
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    Some(Answer { status, head: head.to_owned(), body: body.to_owned() })
}

/// A one-request exchange from `src` to `port`.
pub async fn send(src: [u8; 4], port: u16, request: &str) -> Option<Answer> {
    let mut stream = connect_from(src, port).await;
    exchange(&mut stream, request).await
}

/// `GET path` with `Connection: close`.
pub fn get(port: u16, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
}

/// `POST path` with `body`, its content type and any extra header lines (each ending in
/// `\r\n`), with `Connection: close`.
pub fn post(host: &str, path: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the server closes `stream` (end of stream or reset) within 30 s, reading and
/// dropping anything it sends first.
pub async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The resident memory of process `pid`, in kB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
