//! Small loopback servers that inject faults between podrouter and the
//! real mail stack, or stand in for a server to record what was sent:
//!
//! - [`Proxy`]: a TCP relay that counts connections and can slow the
//!   server's replies (to make a drain last long enough to cut into).
//! - [`ImapDoubler`]: an IMAP relay that sends each FETCH response with a
//!   message body twice, one copy possibly empty, as Gmail does.
//! - [`SmtpSink`]: an SMTP server that accepts everything and records the
//!   raw bytes of each transaction (DATA still dot-stuffed).
//! - [`Greeter`]: a fake IMAP or SMTP server that does not offer STARTTLS
//!   and records whatever the client sends.
//!
//! Everything listens on 127.0.0.1 on a port of its own and runs on plain
//! threads; a listener stops when its handle is dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Accepts connections on a loopback port until dropped.
struct Listener {
    ip: String,
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Runs `serve` on its own thread for each accepted connection.
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        Self::start_at("127.0.0.1", serve)
    }

    /// [`Listener::start`] on another loopback address.
    fn start_at(ip: &str, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let serve = Arc::clone(&serve);
                thread::spawn(move || serve(conn));
            }
        });
        Listener {
            ip: ip.to_owned(),
            port,
            stop,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((self.ip.as_str(), self.port));
    }
}

/// Copies `from` to `to` until either side closes, waiting `delay`
/// before each chunk; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A counting TCP relay to a loopback port.
pub struct Proxy {
    listener: Listener,
    /// When each connection was accepted.
    accepted: Arc<Mutex<Vec<Instant>>>,
}

impl Proxy {
    /// Relays to `upstream`, delaying each chunk of the server's replies
    /// by `delay`. A connection the upstream refuses is closed at once
    /// (and still counted).
    pub fn start(upstream: u16, delay: Duration) -> Proxy {
        Self::start_at("127.0.0.1", upstream, delay)
    }

    /// [`Proxy::start`] listening on another loopback address.
    pub fn start_at(ip: &str, upstream: u16, delay: Duration) -> Proxy {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&accepted);
        let listener = Listener::start_at(ip, move |client| {
            log.lock().unwrap().push(Instant::now());
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(c2, s2, Duration::ZERO));
            pump(server, client, delay);
        });
        Proxy { listener, accepted }
    }

    /// The port to point podrouter at.
    pub fn port(&self) -> u16 {
        self.listener.port
    }

    /// Connections accepted in `[from, to)`.
    pub fn connections_between(&self, from: Instant, to: Instant) -> usize {
        let accepted = self.accepted.lock().unwrap();
        accepted.iter().filter(|t| **t >= from && **t < to).count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// One IMAP response: text, and where its single literal sits, if any.
struct Response {
    bytes: Vec<u8>,
    /// (start of the `{n}` marker, start of the data, length) per literal.
    literals: Vec<(usize, usize, usize)>,
}

/// Reads one full IMAP response (a line plus its literals).
fn read_response(r: &mut impl BufRead) -> Option<Response> {
    let mut bytes = Vec::new();
    let mut literals = Vec::new();
    loop {
        let before = bytes.len();
        if r.read_until(b'\n', &mut bytes).ok()? == 0 {
            return None;
        }
        let line = &bytes[before..];
        let Some(n) = literal_size(line) else {
            return Some(Response { bytes, literals });
        };
        let marker = bytes.len() - line.len() + line.iter().rposition(|b| *b == b'{').unwrap();
        let start = bytes.len();
        bytes.resize(start + n, 0);
        r.read_exact(&mut bytes[start..]).ok()?;
        literals.push((marker, start, n));
    }
}

/// `n` when a line ends with `{n}\r\n`.
fn literal_size(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// The same FETCH response with its body literal emptied.
fn emptied(resp: &Response) -> Vec<u8> {
    let (marker, start, n) = resp.literals[0];
    let mut out = resp.bytes[..marker].to_vec();
    out.extend_from_slice(b"{0}\r\n");
    out.extend_from_slice(&resp.bytes[start + n..]);
    out
}

/// An IMAP relay that doubles every FETCH response carrying a body.
pub struct ImapDoubler {
    listener: Listener,
    /// FETCH responses doubled so far.
    pub doubled: Arc<AtomicUsize>,
}

impl ImapDoubler {
    /// Relays to the IMAP server on `upstream`. The k-th body response is
    /// sent as (empty, real), (real, real) or (real, empty), in turn.
    pub fn start(upstream: u16) -> ImapDoubler {
        let doubled = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&doubled);
        let listener = Listener::start(move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(c2, s2, Duration::ZERO));
            double_fetches(server, client, &count);
        });
        ImapDoubler { listener, doubled }
    }

    /// The port to point podrouter at.
    pub fn port(&self) -> u16 {
        self.listener.port
    }
}

/// Copies the server's responses to the client, doubling FETCH bodies.
fn double_fetches(server: TcpStream, mut client: TcpStream, count: &AtomicUsize) {
    let mut reader = BufReader::new(server.try_clone().unwrap());
    while let Some(resp) = read_response(&mut reader) {
        let is_body_fetch = resp.bytes.starts_with(b"* ")
            && contains(&resp.bytes, b" FETCH (")
            && contains(&resp.bytes, b"BODY[]")
            && resp.literals.len() == 1;
        let out: Vec<Vec<u8>> = if is_body_fetch {
            let k = count.fetch_add(1, Ordering::SeqCst);
            let real = resp.bytes.clone();
            match k % 3 {
                0 => vec![emptied(&resp), real],
                1 => vec![real.clone(), real],
                _ => vec![real, emptied(&resp)],
            }
        } else {
            vec![resp.bytes]
        };
        if out.iter().any(|b| client.write_all(b).is_err()) {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

/// Whether `hay` holds `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One SMTP transaction as the sink saw it.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    /// The MAIL FROM line's argument.
    pub from: String,
    /// The RCPT TO arguments.
    pub rcpt: Vec<String>,
    /// The DATA bytes exactly as sent, dot-stuffed, ending with CRLF.CRLF.
    pub data: Vec<u8>,
}

/// An SMTP server that accepts everything and records it.
pub struct SmtpSink {
    listener: Listener,
    /// Finished transactions.
    pub transactions: Arc<Mutex<Vec<Transaction>>>,
    /// Every byte every client sent, per connection.
    pub transcripts: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl SmtpSink {
    /// Starts the sink; `auth` makes it offer and accept AUTH PLAIN/LOGIN.
    pub fn start(auth: bool) -> SmtpSink {
        let transactions = Arc::new(Mutex::new(Vec::new()));
        let transcripts = Arc::new(Mutex::new(Vec::new()));
        let (t, s) = (Arc::clone(&transactions), Arc::clone(&transcripts));
        let listener = Listener::start(move |conn| {
            let transcript = sink_session(conn, auth, &t);
            s.lock().unwrap().push(transcript);
        });
        SmtpSink {
            listener,
            transactions,
            transcripts,
        }
    }

    /// The port to point podrouter at.
    pub fn port(&self) -> u16 {
        self.listener.port
    }

    /// The transactions so far.
    pub fn taken(&self) -> Vec<Transaction> {
        self.transactions.lock().unwrap().clone()
    }
}

/// Serves one SMTP session; returns everything the client sent.
fn sink_session(conn: TcpStream, auth: bool, out: &Mutex<Vec<Transaction>>) -> Vec<u8> {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut seen = Vec::new();
    let mut tx = Transaction::default();
    let _ = w.write_all(b"220 sink.localhost ESMTP\r\n");
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if auth => {
                b"250-sink.localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n"
            }
            "EHLO" => b"250-sink.localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 sink.localhost\r\n",
            "AUTH" => b"235 2.7.0 ok\r\n",
            "MAIL" => {
                tx = Transaction {
                    from: text[4..].trim().to_owned(),
                    ..Transaction::default()
                };
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" => {
                tx.rcpt.push(text[4..].trim().to_owned());
                b"250 2.1.5 ok\r\n"
            }
            "DATA" => {
                let _ = w.write_all(b"354 go ahead\r\n");
                let Some(data) = read_data(&mut r) else { break };
                seen.extend_from_slice(&data);
                tx.data = data;
                out.lock().unwrap().push(std::mem::take(&mut tx));
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                let _ = w.write_all(b"221 2.0.0 bye\r\n");
                break;
            }
            "RSET" | "NOOP" => b"250 2.0.0 ok\r\n",
            _ => b"500 5.5.1 what\r\n",
        };
        if w.write_all(reply).is_err() {
            break;
        }
    }
    seen
}

/// Reads DATA up to and including the first CRLF.CRLF.
fn read_data(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let before = data.len();
        if r.read_until(b'\n', &mut data).ok()? == 0 {
            return None;
        }
        let line = &data[before..];
        let at_line_start = before == 0 || data[..before].ends_with(b"\r\n");
        if at_line_start && line == b".\r\n" {
            return Some(data);
        }
    }
}

/// Which protocol a [`Greeter`] pretends to speak.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    Imap,
    Smtp,
}

/// A fake server that never offers STARTTLS and records what it got.
pub struct Greeter {
    listener: Listener,
    /// Everything clients sent.
    pub received: Arc<Mutex<Vec<u8>>>,
}

impl Greeter {
    /// Starts a fake server for `protocol`.
    pub fn start(protocol: Protocol) -> Greeter {
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let listener = Listener::start(move |conn| greet(conn, protocol, &log));
        Greeter { listener, received }
    }

    /// The port to point podrouter at.
    pub fn port(&self) -> u16 {
        self.listener.port
    }

    /// What clients sent so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// Answers like a server without STARTTLS, refusing STARTTLS if asked.
fn greet(conn: TcpStream, protocol: Protocol, log: &Mutex<Vec<u8>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let hello: &[u8] = match protocol {
        Protocol::Imap => b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE] fake ready\r\n",
        Protocol::Smtp => b"220 fake.localhost ESMTP\r\n",
    };
    let _ = w.write_all(hello);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        log.lock().unwrap().extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let reply = match protocol {
            Protocol::Imap => imap_reply(&text),
            Protocol::Smtp => smtp_reply(&text),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
}

fn imap_reply(line: &str) -> String {
    let mut words = line.split_whitespace();
    let tag = words.next().unwrap_or("*");
    match words.next().unwrap_or("").to_ascii_uppercase().as_str() {
        "CAPABILITY" => {
            format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE\r\n{tag} OK done\r\n")
        }
        "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
        "LOGIN" | "AUTHENTICATE" => format!("{tag} NO not here\r\n"),
        _ => format!("{tag} BAD not supported\r\n"),
    }
}

fn smtp_reply(line: &str) -> String {
    let verb = line.split_whitespace().next().unwrap_or("");
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => "250-fake.localhost\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n".into(),
        "QUIT" => "221 bye\r\n".into(),
        "STARTTLS" => "502 5.5.1 not offered\r\n".into(),
        _ => "250 ok\r\n".into(),
    }
}
