//! A real HTTP/1.1 server on 127.0.0.1 for fetcher tests, hand-written over
//! `std::net` so each fault is exactly what the test asks for: ranges (206/416),
//! error statuses, bodies cut short, slow drips, servers that ignore `Range`.
//! Every request is recorded so tests can assert what the client sent.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers to one request for a path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body, or 206/416 when the request has `Range: bytes=N-`.
    Body(Vec<u8>),
    /// 200 with the whole body even when a range was asked for.
    IgnoreRange(Vec<u8>),
    /// An empty response with this status.
    Status(u16),
    /// Like `Body`, but the connection closes once byte `cut_at` (absolute offset)
    /// would be sent, with `Content-Length` promising the rest.
    CutAt { body: Vec<u8>, cut_at: usize },
    /// Like `Body`, sent `chunk` bytes at a time with `delay` in between.
    Drip {
        body: Vec<u8>,
        chunk: usize,
        delay: Duration,
    },
}

/// A request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// Replies per path, used in order; the last one repeats.
    routes: HashMap<String, Vec<Reply>>,
    requests: Vec<Request>,
}

pub struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    /// Starts listening on an ephemeral loopback port; the accept thread lives as
    /// long as the test process.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Server { port, state }
    }

    /// Sets the replies for `path` (e.g. `/files/a.tgz`).
    pub fn route(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty());
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), replies);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Request {
        method,
        path: path.clone(),
        headers,
    };
    let range_start = req
        .header("Range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(req);
        match st.routes.get_mut(&path) {
            Some(list) if list.len() > 1 => Some(list.remove(0)),
            Some(list) => Some(list[0].clone()),
            None => None,
        }
    };
    let mut out = conn;
    match reply {
        None => status(&mut out, 404),
        Some(Reply::Status(code)) => status(&mut out, code),
        Some(Reply::IgnoreRange(body)) => send(&mut out, &body, None, body.len(), None),
        Some(Reply::Body(body)) => send(&mut out, &body, range_start, body.len(), None),
        Some(Reply::CutAt { body, cut_at }) => send(&mut out, &body, range_start, cut_at, None),
        Some(Reply::Drip { body, chunk, delay }) => send(
            &mut out,
            &body,
            range_start,
            body.len(),
            Some((chunk, delay)),
        ),
    }
}

fn status(out: &mut TcpStream, code: u16) -> std::io::Result<()> {
    let body = format!("status {code}\n");
    write!(
        out,
        "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    )?;
    out.flush()
}

/// Sends `body` from `range_start` (206) or whole (200), stopping at `cut_at`.
fn send(
    out: &mut TcpStream,
    body: &[u8],
    range_start: Option<usize>,
    cut_at: usize,
    drip: Option<(usize, Duration)>,
) -> std::io::Result<()> {
    let len = body.len();
    let start = match range_start {
        Some(s) if s >= len => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return out.flush();
        }
        Some(s) => {
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - s
            )?;
            s
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
            )?;
            0
        }
    };
    let end = cut_at.clamp(start, len);
    match drip {
        None => out.write_all(&body[start..end])?,
        Some((chunk, delay)) => {
            for piece in body[start..end].chunks(chunk.max(1)) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(delay);
            }
        }
    }
    out.flush()?;
    // Closing early (cut_at < len) leaves the client short of Content-Length.
    out.shutdown(std::net::Shutdown::Both)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
