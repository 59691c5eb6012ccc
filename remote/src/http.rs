//! Just enough HTTP/1.1 for Docker's plugin protocol: `POST /Method` with a
//! JSON body, answered with a JSON body, over keep-alive connections on a
//! unix socket. Heads are parsed by `httparse`; bodies are framed by
//! `Content-Length` or chunked. No I/O beyond the stream it is given.

use std::io::{self, BufRead, Read, Write};

/// The most a head or a body may take: plugin messages are small.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;
const MAX_HEADERS: usize = 32;

/// A request: its method, path and body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads the head (up to the empty line). `None`: the peer closed the
/// connection before a new message.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(bad("connection closed inside a message head")) };
        }
        if head.len() > MAX_HEAD {
            return Err(bad("message head too large"));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(Some(head));
        }
        // Blank lines before a message are allowed (RFC 9112, 2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
        }
    }
}

/// How the body is framed, from the headers.
fn body_framing(headers: &[httparse::Header<'_>]) -> io::Result<Option<usize>> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value);
            if v.trim().eq_ignore_ascii_case("chunked") {
                return Ok(None);
            }
            return Err(bad(format!("unsupported transfer encoding {v:?}")));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            length = Some(v.ok_or_else(|| bad("bad Content-Length"))?);
        }
    }
    Ok(Some(length.unwrap_or(0)))
}

/// Reads a body framed as the headers say.
fn read_body(r: &mut impl BufRead, framing: Option<usize>) -> io::Result<Vec<u8>> {
    match framing {
        Some(n) if n > MAX_BODY => Err(bad(format!("body of {n} bytes is too large"))),
        Some(n) => {
            let mut body = vec![0; n];
            r.read_exact(&mut body)?;
            Ok(body)
        }
        None => read_chunked(r),
    }
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Reads the next request; `None` when the client closed the connection.
pub(crate) fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(head) = read_head(r)? else { return Ok(None) };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(e) => return Err(bad(format!("bad request head: {e}"))),
    }
    let (method, path) = (req.method.unwrap_or("").to_string(), req.path.unwrap_or("").to_string());
    let framing = body_framing(req.headers)?;
    let body = read_body(r, framing)?;
    Ok(Some(Request { method, path, body }))
}

/// Reads a response: its status and body (to the end of the connection
/// when it has neither a length nor chunks).
pub(crate) fn read_response(r: &mut dyn BufRead) -> io::Result<(u16, Vec<u8>)> {
    let mut r = r;
    let head = read_head(&mut r)?.ok_or_else(|| bad("connection closed before an answer"))?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete response head")),
        Err(e) => return Err(bad(format!("bad response head: {e}"))),
    }
    let status = resp.code.unwrap_or(0);
    let framed = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding"));
    let body = if framed {
        read_body(&mut r, body_framing(resp.headers)?)?
    } else {
        let mut all = Vec::new();
        std::io::Read::take(&mut r, MAX_BODY as u64).read_to_end(&mut all)?;
        all
    };
    Ok((status, body))
}

/// Writes a response with a JSON body.
pub(crate) fn write_response(w: &mut impl Write, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    w.write_all(&msg)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> io::Result<Option<Request>> {
        read_request(&mut io::BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn reads_a_request_with_a_length() {
        let r = parse("POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nContent-Length: 2\r\n\r\n{}").unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.body.as_slice()), ("POST", "/Plugin.Activate", &b"{}"[..]));
    }

    #[test]
    fn reads_chunked_bodies_and_keeps_the_connection() {
        let raw = "POST /A HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n\
                   POST /B HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut r = io::BufReader::new(raw.as_bytes());
        assert_eq!(read_request(&mut r).unwrap().unwrap().body, b"{\"a\":1}");
        assert_eq!(read_request(&mut r).unwrap().unwrap().path, "/B");
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn refuses_garbage_with_an_error() {
        assert!(parse("GARBAGE\r\n\r\n").is_err());
        assert!(parse("POST /A HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse("POST /A HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n").is_err());
        assert!(parse("POST /A HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}").is_err(), "short body");
        assert!(parse("POST /A HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    }
}
