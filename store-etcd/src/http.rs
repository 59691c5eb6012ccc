//! The smallest HTTP/1.1 client etcd's JSON gateway needs: POST a JSON body
//! on a kept-alive connection, read a `Content-Length` or chunked answer,
//! and (for watches) decode a chunked stream piece by piece as it arrives.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::Error;

/// How long connecting and a single answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest body or chunk taken from the server (a larger announced size
/// is a protocol error, not an allocation).
pub const MAX_BODY: usize = 64 << 20;
/// How long a unary request may wait for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to the gateway.
pub struct Conn {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Conn {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Result<Conn, Error> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| Error::Connect { endpoint: addr.to_string(), source: e })?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).ok();
        Ok(Conn { reader: BufReader::new(stream), addr })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn io(&self, path: &str, e: io::Error) -> Error {
        Error::Io { endpoint: self.addr.to_string(), path: path.to_string(), source: e }
    }

    /// Sends a POST of `body` to `path`.
    pub fn send(&mut self, path: &str, body: &[u8]) -> Result<(), Error> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.reader.get_mut().write_all(&msg).map_err(|e| self.io(path, e))
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

    /// Whether buffered bytes are waiting (a chunk may be read without
    /// blocking).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Waits up to `timeout` for bytes to arrive; `false` on timeout.
    pub fn wait_readable(&mut self, timeout: Duration) -> Result<bool, Error> {
        if self.has_buffered() {
            return Ok(true);
        }
        let stream = self.reader.get_ref();
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
