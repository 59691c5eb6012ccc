//! The smallest HTTP/1.1 client etcd's JSON gateway needs: POST a JSON body
//! on a kept-alive connection (plain or TLS), read a `Content-Length` or
//! chunked answer, and (for watches) decode a chunked stream piece by piece
//! as it arrives.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::config::Member;
use crate::error::Error;

/// How long connecting (and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest body or chunk taken from the server (a larger announced size
/// is a protocol error, not an allocation).
pub const MAX_BODY: usize = 64 << 20;
/// How long one member may take to answer a unary request before the next
/// is asked.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's byte stream: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// Decrypted bytes rustls holds that no read took yet.
    fn tls_pending(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.process_new_packets().is_ok_and(|s| s.plaintext_bytes_to_read() > 0),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// One connection to a member's gateway.
pub struct Conn {
    reader: BufReader<Stream>,
    member: String,
}

/// What a failed handshake means, for the person reading the error.
fn handshake_error(member: &Member, e: &io::Error) -> Error {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        " (is the CA file the one that signed etcd's certificate, for this address?)"
    } else if text.contains("CertificateRequired") || text.contains("BadCertificate") || text.contains("alert") {
        " (etcd wants a client certificate it trusts: --store-cert and --store-key)"
    } else {
        ""
    };
    Error::Tls { endpoint: member.to_string(), reason: format!("{text}{hint}") }
}

impl Conn {
    /// Connects to `member`, with TLS when `tls` is given (the handshake
    /// done here, so that a refused certificate is said at once).
    pub fn connect(member: &Member, tls: Option<&Arc<ClientConfig>>) -> Result<Conn, Error> {
        let stream = TcpStream::connect_timeout(&member.addr, CONNECT_TIMEOUT)
            .map_err(|e| Error::Connect { endpoint: member.to_string(), source: e })?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(CONNECT_TIMEOUT)).ok();
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).ok();
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let name = ServerName::try_from(member.host.clone()).map_err(|e| Error::Tls {
                    endpoint: member.to_string(),
                    reason: format!("{:?} is not a TLS server name: {e}", member.host),
                })?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| Error::Tls { endpoint: member.to_string(), reason: e.to_string() })?;
                let mut t = StreamOwned::new(conn, stream);
                while t.conn.is_handshaking() {
                    match t.conn.complete_io(&mut t.sock) {
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                            return Err(Error::Connect { endpoint: member.to_string(), source: e })
                        }
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(handshake_error(member, &e)),
                        Err(e) => return Err(Error::Connect { endpoint: member.to_string(), source: e }),
                    }
                }
                Stream::Tls(Box::new(t))
            }
        };
        stream.tcp().set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        Ok(Conn { reader: BufReader::new(stream), member: member.to_string() })
    }

    /// The member, as `host:port`.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Caps how long each read may wait (at least 1 ms).
    pub fn set_read_timeout(&self, t: Duration) {
        self.reader.get_ref().tcp().set_read_timeout(Some(t.max(Duration::from_millis(1)))).ok();
    }

    fn io(&self, path: &str, e: io::Error) -> Error {
        // A member that refuses our certificate says so with an alert on the
        // first read after the handshake (TLS 1.3).
        if e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("alert") {
            return Error::Tls {
                endpoint: self.member.clone(),
                reason: format!("{e} (etcd wants a client certificate it trusts: --store-cert and --store-key)"),
            };
        }
        Error::Io { endpoint: self.member.clone(), path: path.to_string(), source: e }
    }

    /// Sends a POST of `body` to `path`, with etcd's auth token if any.
    pub fn send(&mut self, path: &str, body: &[u8], token: Option<&str>) -> Result<(), Error> {
        let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.member,
            body.len()
        );
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        let stream = self.reader.get_mut();
        stream.write_all(&msg).and_then(|()| stream.flush()).map_err(|e| self.io(path, e))
    }

    /// Reads the status line and headers; returns the status and whether
    /// the body is chunked (else its length).
    pub fn read_head(&mut self, path: &str) -> Result<(u16, Option<usize>), Error> {
        let mut line = String::new();
        let mut status = None;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(|e| self.io(path, e))?;
            if n == 0 {
                return Err(self.io(path, io::ErrorKind::UnexpectedEof.into()));
            }
            let l = line.trim_end();
            if status.is_none() {
                let code = l.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
                status = Some(code.ok_or_else(|| Error::Protocol(format!("bad status line {l:?} from {path}")))?);
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "content-length" {
                    let n = value.parse::<usize>().ok().filter(|n| *n <= MAX_BODY);
                    length = Some(n.ok_or_else(|| {
                        Error::Protocol(format!("bad Content-Length {value:?} from {path} (at most {MAX_BODY})"))
                    })?);
                } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let status = status.unwrap_or(0);
        match (chunked, length) {
            (true, _) => Ok((status, None)),
            (false, Some(n)) => Ok((status, Some(n))),
            // Only these have no body by definition.
            (false, None) if status == 204 || status == 304 => Ok((status, Some(0))),
            (false, None) => Err(Error::Protocol(format!("no Content-Length and not chunked, from {path}"))),
        }
    }

    /// Reads a whole body (after [`Conn::read_head`]).
    pub fn read_body(&mut self, path: &str, length: Option<usize>) -> Result<Vec<u8>, Error> {
        match length {
            Some(n) => {
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body).map_err(|e| self.io(path, e))?;
                Ok(body)
            }
            None => {
                let mut body = Vec::new();
                while let Some(chunk) = self.read_chunk(path)? {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(Error::Protocol(format!("a body of more than {MAX_BODY} bytes from {path}")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }

    /// Reads one chunk of a chunked body; `None` at the last one.
    pub fn read_chunk(&mut self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| self.io(path, e))?;
        if n == 0 {
            return Err(self.io(path, io::ErrorKind::UnexpectedEof.into()));
        }
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|n| *n <= MAX_BODY)
            .ok_or_else(|| Error::Protocol(format!("bad chunk size {size_text:?} from {path} (at most {MAX_BODY})")))?;
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).map_err(|e| self.io(path, e))?;
        chunk.truncate(size);
        Ok((size > 0).then_some(chunk))
    }

    /// Whether bytes are waiting (a chunk may be read without blocking for
    /// long).
    pub fn has_buffered(&mut self) -> bool {
        !self.reader.buffer().is_empty() || self.reader.get_mut().tls_pending()
    }

    /// Waits up to `timeout` for bytes to arrive; `false` on timeout.
    pub fn wait_readable(&mut self, timeout: Duration) -> Result<bool, Error> {
        if self.has_buffered() {
            return Ok(true);
        }
        let stream = self.reader.get_ref().tcp();
        stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).ok();
        let mut probe = [0u8; 1];
        let r = stream.peek(&mut probe);
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        match r {
            Ok(0) => Err(self.io("/v3/watch", io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(self.io("/v3/watch", e)),
        }
    }
}
