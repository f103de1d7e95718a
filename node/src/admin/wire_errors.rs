//! The error answers hyper writes on its own, made into ferry's JSON error.
//!
//! hyper answers a request head it cannot parse (a garbage request line:
//! 400, a URI over 64 KiB: 414, too many or too large headers: 431) by
//! writing a bare status line and closing; the request never reaches the
//! router, so those answers would have no JSON body and no `X-Ferry-Index`.
//! hyper offers no hook for them. [`ErrorHeads`] wraps the connection's
//! socket and follows the response stream hyper writes: each response head
//! (up to its blank line) is held until it is whole, then
//! - a head with `X-Ferry-Index` is the router's answer (the service puts
//!   the header on every response it makes): it goes out unchanged, and
//!   its body (`Content-Length` bytes; none after a HEAD request, a 204 or
//!   a 304) passes through untouched;
//! - a 1xx head (`100 Continue`) goes out unchanged, and the real answer
//!   follows;
//! - an error head without `X-Ferry-Index` is hyper's own: it is replaced
//!   by the JSON error of the same status, with `X-Ferry-Index` and
//!   `Connection: close`, and nothing hyper writes after it is sent (hyper
//!   closes such a connection).
//!
//! Anything it cannot frame (a chunked or close-delimited body, a head over
//! [`MAX_HEAD`]) switches the connection to pass-through. The service
//! buffers every response body, so that never happens with ferry's router.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::request::INDEX_HEADER;

/// Longest response head followed; a longer one switches to pass-through.
pub const MAX_HEAD: usize = 16 * 1024;

/// Makes the bytes of the JSON answer that replaces hyper's own error head
/// of this status.
pub type Replacement = Box<dyn Fn(u16) -> Vec<u8> + Send + Sync>;

/// What the service and the socket wrapper of one connection share.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Per request in order: whether its answer has no body on the wire
    /// whatever its `Content-Length` says (HEAD).
    bodiless: Mutex<VecDeque<bool>>,
    /// Bytes arrived since the last whole answer was written.
    read_since_answer: AtomicBool,
    /// At least one answer was written.
    answered: AtomicBool,
}

impl Exchange {
    /// The service got a request (in order); `head` if it is a HEAD request.
    pub fn request(&self, head: bool) {
        if let Ok(mut q) = self.bodiless.lock() {
            q.push_back(head);
        }
    }

    fn next_is_bodiless(&self) -> bool {
        self.bodiless.lock().ok().and_then(|mut q| q.pop_front()).unwrap_or(false)
    }

    /// Whether the connection is between requests: it has answered, and no
    /// byte of a next request has come since (an idle keep-alive).
    pub fn idle(&self) -> bool {
        self.answered.load(Relaxed) && !self.read_since_answer.load(Relaxed)
    }
}

/// Where the wrapper is in the response stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a response head.
    Head,
    /// Passing this many body bytes through.
    Body(u64),
    /// Not framing any more: everything passes through.
    Through,
    /// hyper's error head was replaced: what it writes after is dropped.
    Discard,
}

/// A socket whose hyper-made error heads are replaced (see the module doc).
pub struct ErrorHeads<S> {
    inner: S,
    phase: Phase,
    /// The response head being collected.
    head: Vec<u8>,
    /// Bytes taken from hyper and not yet written to `inner`.
    out: Vec<u8>,
    sent: usize,
    exchange: std::sync::Arc<Exchange>,
    replacement: Replacement,
}

impl<S> std::fmt::Debug for ErrorHeads<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorHeads").field("phase", &self.phase).field("pending", &self.out.len()).finish()
    }
}

/// What a response head says about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeadInfo {
    status: u16,
    indexed: bool,
    content_length: Option<u64>,
    chunked: bool,
}

/// Reads a whole response head (status line to blank line); `None` if it
/// is not one.
fn head_info(head: &[u8]) -> Option<HeadInfo> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.")?;
    let status: u16 = rest.get(2..5)?.parse().ok()?;
    let mut info = HeadInfo { status, indexed: false, content_length: None, chunked: false };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case(INDEX_HEADER) {
            info.indexed = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            info.content_length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            info.chunked = true;
        }
    }
    Some(info)
}

impl<S> ErrorHeads<S> {
    /// Wraps `inner`; `replacement` renders the JSON answer for a status.
    pub fn new(inner: S, exchange: std::sync::Arc<Exchange>, replacement: Replacement) -> Self {
        Self { inner, phase: Phase::Head, head: Vec::new(), out: Vec::new(), sent: 0, exchange, replacement }
    }

    /// Takes bytes of `buf` into the head being collected, up to its end;
    /// returns how many, and decides what to send once the head is whole.
    fn take_head(&mut self, buf: &[u8]) -> usize {
        let old = self.head.len();
        self.head.extend_from_slice(buf);
        let from = old.saturating_sub(3);
        let end = self.head[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| from + p + 4);
        let Some(end) = end else {
            if self.head.len() > MAX_HEAD {
                self.out = std::mem::take(&mut self.head);
                self.phase = Phase::Through;
            }
            return buf.len();
        };
        self.head.truncate(end);
        let head = std::mem::take(&mut self.head);
        self.decide(head);
        end - old
    }

    /// What to send for the whole response head `head`.
    fn decide(&mut self, head: Vec<u8>) {
        let Some(info) = head_info(&head) else {
            self.out = head;
            self.phase = Phase::Through;
            return;
        };
        match info.status {
            101 => self.phase = Phase::Through,
            100..=199 => {}
            _ if info.indexed => {
                let bodiless = self.exchange.next_is_bodiless() || matches!(info.status, 204 | 304);
                self.phase = match (bodiless, info.content_length, info.chunked) {
                    (true, _, _) => Phase::Body(0),
                    (false, Some(n), false) => Phase::Body(n),
                    // Chunked or close-delimited: not followed further.
                    _ => Phase::Through,
                };
                if self.phase == Phase::Body(0) {
                    self.answered();
                }
            }
            s if s >= 400 => {
                self.out = (self.replacement)(s);
                self.phase = Phase::Discard;
                return;
            }
            _ => self.phase = Phase::Through,
        }
        self.out = head;
        if self.phase == Phase::Body(0) {
            self.phase = Phase::Head;
        }
    }

    fn answered(&self) {
        self.exchange.answered.store(true, Relaxed);
        self.exchange.read_since_answer.store(false, Relaxed);
    }
}

impl<S: AsyncWrite + Unpin> ErrorHeads<S> {
    /// Writes out what was taken from hyper and not sent yet.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorHeads<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        match this.phase {
            Phase::Through => Pin::new(&mut this.inner).poll_write(cx, buf),
            Phase::Discard => Poll::Ready(Ok(buf.len())),
            Phase::Body(left) => {
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..take]))?;
                let left = left - n as u64;
                this.phase = if left == 0 { Phase::Head } else { Phase::Body(left) };
                if left == 0 {
                    this.answered();
                }
                Poll::Ready(Ok(n))
            }
            Phase::Head => {
                let n = this.take_head(buf);
                // Best effort now; poll_flush finishes it.
                if let Poll::Ready(Err(e)) = this.poll_out(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorHeads<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            this.exchange.read_since_answer.store(true, Relaxed);
        }
        Poll::Ready(r)
    }
}

/// A whole HTTP/1.1 error response: the JSON `body`, `X-Ferry-Index`, and
/// `Connection: close` (it is the connection's last answer).
pub fn error_response(status: axum::http::StatusCode, body: &[u8], index: u64) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{INDEX_HEADER}: {index}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        out.push_str("retry-after: 1\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn wrapper(exchange: Arc<Exchange>) -> ErrorHeads<Vec<u8>> {
        ErrorHeads::new(Vec::new(), exchange, Box::new(|s| format!("JSON {s}").into_bytes()))
    }

    /// Writes `chunks` one `write` call each (as hyper may split them),
    /// flushes, and returns what reached the socket.
    async fn through(exchange: Arc<Exchange>, chunks: &[&[u8]]) -> io::Result<String> {
        let mut w = wrapper(exchange);
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let n = w.write(rest).await?;
                rest = &rest[n..];
            }
        }
        w.flush().await?;
        Ok(String::from_utf8_lossy(&w.inner).into_owned())
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-ferry-index: 3\r\n\r\nhello";
    const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";

    #[tokio::test]
    async fn hyper_error_heads_are_replaced_and_the_routers_answers_kept() -> io::Result<()> {
        let ex = Arc::new(Exchange::default());
        assert_eq!(through(ex.clone(), &[HYPER_400]).await?, "JSON 400");
        for s in ["414 URI Too Long", "431 Request Header Fields Too Large"] {
            let head = format!("HTTP/1.1 {s}\r\ncontent-length: 0\r\n\r\n");
            assert_eq!(through(ex.clone(), &[head.as_bytes()]).await?, format!("JSON {}", &s[..3]));
        }
        // A keep-alive answer, then hyper's error for the next request,
        // split anywhere (a body that looks like a head is not one).
        let mut all = OK.to_vec();
        all.extend_from_slice(HYPER_400);
        let expected = format!("{}JSON 400", String::from_utf8_lossy(OK));
        for cut in 1..all.len() {
            ex.request(false);
            let (a, b) = all.split_at(cut);
            assert_eq!(through(ex.clone(), &[a, b]).await?, expected, "cut at {cut}");
        }
        let tricky = b"HTTP/1.1 200 OK\r\nX-Ferry-Index: 3\r\ncontent-length: 28\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n";
        ex.request(false);
        assert_eq!(through(ex.clone(), &[tricky]).await?, String::from_utf8_lossy(tricky));
        Ok(())
    }

    #[tokio::test]
    async fn continue_head_and_bodiless_answers_are_framed() -> io::Result<()> {
        let ex = Arc::new(Exchange::default());
        let cont: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        ex.request(false);
        let out = through(ex.clone(), &[cont, OK, HYPER_400]).await?;
        assert_eq!(out, format!("HTTP/1.1 100 Continue\r\n\r\n{}JSON 400", String::from_utf8_lossy(OK)));
        // A HEAD answer says content-length: 5 and has no body.
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-ferry-index: 3\r\n\r\n";
        ex.request(true);
        assert_eq!(
            through(ex.clone(), &[head, HYPER_400]).await?,
            format!("{}JSON 400", String::from_utf8_lossy(head))
        );
        let no_content: &[u8] = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\nx-ferry-index: 3\r\n\r\n";
        ex.request(false);
        let out = through(ex.clone(), &[no_content, HYPER_400]).await?;
        assert_eq!(out, format!("{}JSON 400", String::from_utf8_lossy(no_content)));
        Ok(())
    }

    #[tokio::test]
    async fn what_cannot_be_framed_passes_through() -> io::Result<()> {
        let ex = Arc::new(Exchange::default());
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-ferry-index: 1\r\n\r\n";
        ex.request(false);
        let out = through(ex.clone(), &[chunked, HYPER_400]).await?;
        assert_eq!(out.as_bytes(), [chunked, HYPER_400].concat());
        let huge = vec![b'x'; MAX_HEAD + 10];
        assert_eq!(through(ex.clone(), &[&huge]).await?.len(), huge.len());
        Ok(())
    }

    #[tokio::test]
    async fn idle_means_answered_and_nothing_read_since() -> io::Result<()> {
        let ex = Arc::new(Exchange::default());
        assert!(!ex.idle(), "nothing answered yet");
        ex.request(false);
        through(ex.clone(), &[OK]).await?;
        assert!(ex.idle());
        ex.read_since_answer.store(true, Relaxed);
        assert!(!ex.idle());
        Ok(())
    }

    #[test]
    fn error_responses_are_whole() {
        let r = error_response(axum::http::StatusCode::SERVICE_UNAVAILABLE, b"{}", 9);
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        for h in
            ["content-length: 2\r\n", "x-ferry-index: 9\r\n", "retry-after: 1\r\n", "connection: close\r\n"]
        {
            assert!(text.contains(h), "{h:?} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n{}"), "{text}");
    }
}
