//! A minimal keep-alive HTTP/1.1 client connection for the load generator.
//!
//! One request at a time, written in a single `write_all`, answer read into a reused
//! buffer and framed by `Content-Length`. hyper's client hands every request through a
//! channel to a separate connection task: on a 2-core machine shared with the server
//! under test, those task hops made the generator slower than `wrk`. This does one task,
//! no channel, no per-request header map. Only what our server sends is understood
//! (`Content-Length` bodies); anything else is an error and the connection is replaced.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One connection to `authority`.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed by earlier responses.
    start: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    /// Connects (with `TCP_NODELAY`: requests are small and latency is measured).
    pub async fn connect(authority: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            start: 0,
        })
    }

    /// Sends one complete request and returns the status and the body of its answer.
    pub async fn round_trip(&mut self, request: &[u8]) -> io::Result<(u16, &[u8])> {
        self.stream.write_all(request).await?;
        // Drop what earlier answers used; keep any bytes already read past them.
        self.buf.drain(..self.start);
        self.start = 0;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too long"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .filter(|_| head.starts_with("HTTP/1."))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed status line"))?;
        let length = content_length(head).ok_or_else(|| bad("response without Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        self.start = head_end + length;
        Ok((status, &self.buf[head_end..self.start]))
    }

    async fn fill(&mut self) -> io::Result<()> {
        let len = self.buf.len();
        self.buf.resize(len + 4096, 0);
        let n = self.stream.read(&mut self.buf[len..]).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(e);
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_found_case_insensitively() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(content_length(head), Some(12));
        assert_eq!(content_length("HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn pipelined_bytes_past_one_answer_are_kept_for_the_next() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 64];
            let _ = s.read(&mut req).await.unwrap();
            // Both answers in one write: the second must survive the first read.
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 409 Conflict\r\ncontent-length: 3\r\n\r\nno!",
            )
            .await
            .unwrap();
            let _ = s.read(&mut req).await;
        });
        let mut c = Conn::connect(&addr).await.unwrap();
        let (status, body) = c.round_trip(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!((status, body), (200, &b"ok"[..]));
        let (status, body) = c.round_trip(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!((status, body), (409, &b"no!"[..]));
    }
}
