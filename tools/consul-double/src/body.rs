//! Response bodies, including the broken ones faults need, and the final
//! response assembly (gzip, Content-Length vs chunked, fault delivery).

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use hyper::{HeaderMap, Response, StatusCode};

/// gziphandler's `DefaultMinSize`.
pub const GZIP_MIN_SIZE: usize = 1400;
/// Go's `net/http` sends Content-Length only when the handler wrote less than
/// its 2048-byte chunking buffer before finishing; larger bodies are chunked.
const GO_CHUNKING_BUFFER: usize = 2048;

#[derive(Debug)]
pub struct BodyError(&'static str);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

/// The body types the server sends.
pub enum ReplyBody {
    /// Known length (Content-Length).
    Full(Option<Bytes>),
    /// Unknown length (Transfer-Encoding: chunked).
    Chunked(Option<Bytes>),
    /// Declares `declared` bytes, sends `first`, then fails (connection closed).
    Truncated {
        first: Option<Bytes>,
        declared: u64,
        /// Pause after the partial body so it is flushed before the abort.
        pause: Pin<Box<tokio::time::Sleep>>,
    },
    /// Declares `declared` bytes and never sends any.
    Stall { declared: u64 },
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match this {
            ReplyBody::Full(b) | ReplyBody::Chunked(b) => {
                Poll::Ready(b.take().map(|b| Ok(Frame::data(b))))
            }
            ReplyBody::Truncated { first, pause, .. } => match first.take() {
                Some(b) if !b.is_empty() => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => {
                    // Pending first, so hyper flushes what it has; then fail.
                    std::task::ready!(pause.as_mut().poll(_cx));
                    Poll::Ready(Some(Err(BodyError("body truncated by fault injection"))))
                }
            },
            ReplyBody::Stall { .. } => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Full(b) | ReplyBody::Chunked(b) => b.is_none(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReplyBody::Chunked(_) => SizeHint::default(),
            ReplyBody::Truncated { declared, .. } | ReplyBody::Stall { declared } => {
                SizeHint::with_exact(*declared)
            }
        }
    }
}

/// How a reply is put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Normal,
    /// `truncate_body` fault.
    Truncate,
    /// `headers_then_stall` fault.
    Stall,
}

/// A response before transport concerns are applied.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Content-Length set by the handler itself (`?raw`): never chunked.
    pub explicit_length: bool,
    /// Wrapped by Consul's gziphandler (all API endpoints).
    pub gzip_wrapped: bool,
    pub delivery: Delivery,
}

pub const TEXT_PLAIN_UTF8: &str = "text/plain; charset=utf-8";
pub const APPLICATION_JSON: &str = "application/json";

impl Reply {
    pub fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            explicit_length: false,
            gzip_wrapped: false,
            delivery: Delivery::Normal,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.set_header(name, value);
        self
    }

    pub fn set_header(&mut self, name: &'static str, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Plain-text error as Consul writes them.
    pub fn text(status: StatusCode, msg: impl Into<String>) -> Reply {
        Reply::new(status)
            .header("content-type", TEXT_PLAIN_UTF8)
            .body(msg.into())
    }

    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Reply {
        Reply::new(status)
            .header("content-type", APPLICATION_JSON)
            .body(body)
    }
}

/// Whether `Accept-Encoding` gives gzip a q-value > 0 (gziphandler).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    for v in headers.get_all("accept-encoding") {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',') {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case("gzip") {
                continue;
            }
            let mut q = 1.0f64;
            for param in it {
                if let Some((k, val)) = param.trim().split_once('=') {
                    if k.trim() == "q" {
                        q = val.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            if q > 0.0 {
                return true;
            }
        }
    }
    false
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    enc.write_all(data).ok()?;
    enc.finish().ok()
}

/// Applies gzip, framing and fault delivery, producing the hyper response.
pub fn finish(mut reply: Reply, accept_gzip: bool) -> Response<ReplyBody> {
    let mut body = reply.body;
    let mut chunked = false;
    if reply.gzip_wrapped {
        reply
            .headers
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if accept_gzip && body.len() >= GZIP_MIN_SIZE {
            if let Some(z) = gzip(&body) {
                body = Bytes::from(z);
                reply
                    .headers
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                reply.headers.remove(CONTENT_LENGTH);
                chunked = true;
            }
        }
    }
    if !chunked && !reply.explicit_length && body.len() >= GO_CHUNKING_BUFFER {
        chunked = true;
    }
    let out_body = match reply.delivery {
        Delivery::Normal if chunked => ReplyBody::Chunked(Some(body)),
        Delivery::Normal => {
            if body.is_empty() {
                ReplyBody::Full(None)
            } else {
                ReplyBody::Full(Some(body))
            }
        }
        Delivery::Truncate => {
            let declared = (body.len() as u64).max(1);
            reply
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(declared));
            ReplyBody::Truncated {
                first: Some(body.slice(..body.len() / 2)),
                declared,
                pause: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(20))),
            }
        }
        Delivery::Stall => {
            let declared = body.len() as u64;
            reply
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(declared));
            ReplyBody::Stall { declared }
        }
    };
    let mut resp = Response::new(out_body);
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            "accept-encoding",
            HeaderValue::from_static("deflate, gzip;q=0.5"),
        );
        assert!(accepts_gzip(&h));
        h.insert("accept-encoding", HeaderValue::from_static("gzip;q=0"));
        assert!(!accepts_gzip(&h));
        h.insert("accept-encoding", HeaderValue::from_static("identity"));
        assert!(!accepts_gzip(&h));
    }
}
