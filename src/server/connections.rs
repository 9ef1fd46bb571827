//! Keeping connections in bounds, and JSON on the answers hyper writes itself.
//!
//! - [`ConnectionLimits`]: the per-process connection cap (`http.max_connections`) and the
//!   counters of connections refused over it or cut by a timeout;
//! - [`JsonRefusals`]: the socket as hyper sees it, which gives the bodiless answers hyper
//!   writes for a request it cannot parse (400, 414, 431) the API's JSON error body.
//!
//! The header-read timeout is kept by each HTTP thread's watchdog (see
//! `http_threads`); the body-read timeout where bodies are read (`body::JsonBody`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use metrics::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection was closed by the server before its client was done.
#[derive(Debug, Clone, Copy)]
pub enum CutReason {
    /// The request head did not arrive within `http.header_read_timeout_ms`.
    HeaderTimeout,
    /// The request body did not arrive within `http.body_read_timeout_ms`.
    BodyTimeout,
}

/// The connection cap of one process, shared by its HTTP threads, and its counters.
#[derive(Clone)]
pub struct ConnectionLimits(Arc<Shared>);

struct Shared {
    cap: usize,
    open: AtomicUsize,
    header_read_timeout: Duration,
    refused: Counter,
    cut: [Counter; 2],
}

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "content-length: 64\r\n",
    "retry-after: 1\r\n",
    "connection: close\r\n\r\n",
    r#"{"error":"busy","message":"too many connections, retry shortly"}"#
)
.as_bytes();

impl ConnectionLimits {
    /// At most `cap` connections at once; `refused` counts those turned away, `cut` (by
    /// [`CutReason`]) those closed by a timeout.
    pub fn new(cap: usize, header_read_timeout: Duration, refused: Counter, cut: [Counter; 2]) -> Self {
        ConnectionLimits(Arc::new(Shared {
            cap: cap.max(1),
            open: AtomicUsize::new(0),
            header_read_timeout,
            refused,
            cut,
        }))
    }

    /// How long a request head may take (`http.header_read_timeout_ms`).
    pub fn header_read_timeout(&self) -> Duration {
        self.0.header_read_timeout
    }

    /// Counts a connection cut for `reason`.
    pub fn cut(&self, reason: CutReason) {
        self.0.cut[reason as usize].increment(1);
    }

    /// A place for one more connection, held until the returned guard is dropped; `None` when
    /// the cap is reached.
    pub fn try_open(&self) -> Option<OpenConnection> {
        let taken = self.0.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < self.0.cap).then_some(open + 1)
        });
        taken.ok().map(|_| OpenConnection(self.clone()))
    }

    /// Answers `stream` 503 `busy` and closes it, without waiting for the client. The
    /// answer fits a fresh socket's send buffer, so it is written at once; the client's
    /// request is read (and dropped) for a moment first, because closing a socket with
    /// unread data resets the connection, and the client might lose the answer.
    pub fn refuse(&self, mut stream: TcpStream) {
        self.0.refused.increment(1);
        if stream.try_write(REFUSAL).is_err() {
            return;
        }
        tokio::spawn(async move {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }
}

/// One open connection (see [`ConnectionLimits::try_open`]).
pub struct OpenConnection(ConnectionLimits);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0 .0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket for hyper, which rewrites the answers hyper makes up itself.
///
/// hyper answers a request it cannot parse (bad request line or header, head over its
/// buffer, target too long) with a status, `content-length: 0` and no body, and offers no
/// hook to change that. Those heads are recognised as written: a 4xx or 5xx status line
/// followed at once by `content-length: 0` (every answer of the API's own has a
/// `content-type` first). Everything else passes through untouched.
pub struct JsonRefusals<T> {
    inner: T,
    // The rewritten answer, how much of it is written, and how many of hyper's bytes it
    // stands for (reported written once all of it is).
    rewritten: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonRefusals<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        JsonRefusals { inner, rewritten: None }
    }
}

/// The JSON version of `head` when it is one of hyper's own bodiless error answers.
fn json_refusal(head: &[u8]) -> Option<Vec<u8>> {
    const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
    // Answers with a body (all of the API's: hyper writes a small answer's head and body in
    // one go) end in their body, so nearly every write is passed over here. Then "HTTP/1.1
    // 431 ...": the status starts at byte 9.
    if !head.ends_with(b"\r\n\r\n")
        || head.len() < 13
        || !head.starts_with(b"HTTP/1.")
        || !matches!(head[9], b'4' | b'5')
    {
        return None;
    }
    // The API's own answers (every one has a body with its type) are told apart at once.
    let line_end = head[..head.len().min(80)].windows(2).position(|w| w == b"\r\n")? + 2;
    if head[line_end..].starts_with(b"content-type:") {
        return None;
    }
    let head_end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = &head[line_end - 2..head_end - 2];
    let empty = headers.windows(EMPTY.len()).position(|w| w == EMPTY)? + line_end - 2;
    if headers.windows(15).any(|w| w == b"\r\ncontent-type:") {
        return None;
    }
    let (code, message) = match &head[9..12] {
        b"431" => ("headers_too_large", "request head too large"),
        b"414" => ("uri_too_long", "request target too long"),
        b"400" => ("bad_request", "malformed HTTP request"),
        [b'4', ..] => ("bad_request", "request refused by the HTTP layer"),
        _ => ("error", "the HTTP layer failed"),
    };
    let body = format!(r#"{{"error":"{code}","message":"{message}"}}"#);
    let mut answer = Vec::with_capacity(head.len() + body.len() + 48);
    answer.extend_from_slice(&head[..empty]);
    answer.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    answer.extend_from_slice(body.len().to_string().as_bytes());
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&head[empty + EMPTY.len()..head_end]);
    answer.extend_from_slice(body.as_bytes());
    answer.extend_from_slice(&head[head_end..]);
    Some(answer)
}

impl<T: Write + Unpin> JsonRefusals<T> {
    /// Writes the rewritten answer (if any); `Some(n)`: it stood for `n` bytes of hyper's.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, written, stands_for)) = &mut self.rewritten else {
            return Poll::Ready(Ok(None));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let stands_for = *stands_for;
        self.rewritten = None;
        Poll::Ready(Ok(Some(stands_for)))
    }
}

impl<T: Read + Unpin> Read for JsonRefusals<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for JsonRefusals<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewritten.is_none() {
            match json_refusal(buf) {
                Some(answer) => this.rewritten = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_rewritten(cx).map_ok(|n| n.unwrap_or(0))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewritten.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            match first.and_then(|head| json_refusal(head).map(|answer| (answer, head.len()))) {
                Some((answer, len)) => this.rewritten = Some((answer, 0, len)),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_rewritten(cx).map_ok(|n| n.unwrap_or(0))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_says_its_length() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{text}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "busy");
    }

    #[test]
    fn only_hypers_own_bodiless_errors_are_rewritten() {
        for (hyper, code) in [
            (
                &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n"[..],
                "headers_too_large",
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
                "bad_request",
            ),
        ] {
            let answer = String::from_utf8(json_refusal(hyper).unwrap()).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            let status_line = std::str::from_utf8(hyper).unwrap().split("\r\n").next().unwrap();
            assert!(head.starts_with(status_line), "{head}");
            assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
            assert!(
                head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
                "{head}"
            );
            assert!(
                head.ends_with("\r\ndate: x") && !head.contains("content-length: 0"),
                "{head}"
            );
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"], code);
        }
        for untouched in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 37\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\":\"sold_out\"}",
            b"",
        ] {
            assert_eq!(json_refusal(untouched), None, "{}", String::from_utf8_lossy(untouched));
        }
    }
}
