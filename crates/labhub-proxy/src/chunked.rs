//! Following a chunked response body as it passes through unchanged, to know where it ends
//! (so the upstream connection can carry the next request) and to refuse a malformed one
//! before it reaches the browser as something else.
//!
//! The grammar and the limits are those of hyper's client (`proto/h1/decode.rs`), which reads
//! the same bodies on the general path, so both paths accept exactly the same ones: a chunk
//! size is hex digits, then blanks, a `;` extension or the end of its line; every line ends
//! with CR LF (a bare LF is refused, in extensions too); trailers are read as header fields,
//! and refused unless they parse as such. The property tests check the two agree.

use http::{HeaderName, HeaderValue};

/// The most chunk-extension bytes in one body (hyper's `CHUNKED_EXTENSIONS_LIMIT`).
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;
/// The trailer section's size limit (hyper's `TRAILER_LIMIT`): it is refused on reaching it.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// The most trailer fields (hyper's default `max_headers`).
const MAX_TRAILERS: usize = 100;

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its chunked body was malformed")]
pub(crate) struct BadChunking;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    Start,
    /// More digits of the size.
    Size,
    /// Blanks after the size.
    SizeBlanks,
    /// A chunk extension, up to its line's CR.
    Extension,
    /// The LF of a size line.
    SizeLf,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// After the last chunk, or a trailer line: a CR (the end) or a trailer line.
    EndCr,
    /// The final LF.
    EndLf,
    /// Inside a trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The body is complete.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug)]
pub(crate) struct ChunkedScan {
    state: State,
    size: u64,
    extension_bytes: u64,
    /// The trailer section as read, checked at its end; allocated only when there is one.
    trailers: Option<Vec<u8>>,
    trailer_lines: usize,
}

impl ChunkedScan {
    pub(crate) fn new() -> Self {
        Self { state: State::Start, size: 0, extension_bytes: 0, trailers: None, trailer_lines: 0 }
    }

    /// Whether the body ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`; returns how many belong to the body (fewer than given only once it
    /// ended: the rest came after it).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, BadChunking> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok(i)
    }

    /// The state after one byte outside a chunk's data.
    fn step(&mut self, b: u8) -> Result<State, BadChunking> {
        let digit = |b: u8| char::from(b).to_digit(16).map(u64::from);
        Ok(match (self.state, b) {
            (State::Start, _) => {
                self.size = digit(b).ok_or(BadChunking)?;
                State::Size
            }
            (State::Size, _) if digit(b).is_some() => {
                let d = digit(b).unwrap_or_default();
                self.size = self.size.checked_mul(16).and_then(|s| s.checked_add(d)).ok_or(BadChunking)?;
                State::Size
            }
            (State::Size | State::SizeBlanks, b' ' | b'\t') => State::SizeBlanks,
            (State::Size | State::SizeBlanks, b';') => State::Extension,
            (State::Size | State::SizeBlanks | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(BadChunking),
            (State::Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes >= MAX_EXTENSION_BYTES {
                    return Err(BadChunking);
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
            (State::SizeLf, b'\n') => State::Data(std::mem::take(&mut self.size)),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Start,
            (State::EndCr, b'\r') => {
                self.keep_trailer_byte(b, false)?;
                State::EndLf
            }
            (State::EndCr, _) => {
                self.keep_trailer_byte(b, true)?;
                State::Trailer
            }
            (State::Trailer, _) => {
                self.keep_trailer_byte(b, true)?;
                if b == b'\r' { State::TrailerLf } else { State::Trailer }
            }
            (State::TrailerLf, b'\n') => {
                if self.trailer_lines >= MAX_TRAILERS {
                    return Err(BadChunking);
                }
                self.trailer_lines += 1;
                self.keep_trailer_byte(b, true)?;
                State::EndCr
            }
            (State::EndLf, b'\n') => {
                self.keep_trailer_byte(b, false)?;
                match &self.trailers {
                    Some(section) if !trailers_parse(section, self.trailer_lines) => return Err(BadChunking),
                    _ => State::Done,
                }
            }
            _ => return Err(BadChunking),
        })
    }

    /// Keeps a byte of the trailer section (starting it when `start`, else only if started).
    fn keep_trailer_byte(&mut self, b: u8, start: bool) -> Result<(), BadChunking> {
        let section = match &mut self.trailers {
            Some(section) => section,
            None if start => self.trailers.insert(Vec::with_capacity(64)),
            None => return Ok(()),
        };
        section.push(b);
        if section.len() >= MAX_TRAILER_BYTES { Err(BadChunking) } else { Ok(()) }
    }
}

/// Whether a trailer section of `lines` CR LF-ended lines parses as header fields, as hyper
/// reads it (room for as many fields as lines, so a bare LF splitting a line is refused).
fn trailers_parse(section: &[u8], lines: usize) -> bool {
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => fields
            .iter()
            .all(|f| HeaderName::from_bytes(f.name.as_bytes()).is_ok() && HeaderValue::from_bytes(f.value).is_ok()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; the number of bytes taken, or the error.
    fn scan(body: &[u8], step: usize) -> Result<(usize, bool), BadChunking> {
        let mut s = ChunkedScan::new();
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = s.feed(piece)?;
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((taken, s.is_done()))
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_and_trailers_whatever_the_pieces() {
        let body = b"4\r\nRust\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(scan(body, step), Ok((body.len(), true)), "in pieces of {step}");
        }
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(scan(&with_next, 5), Ok((body.len(), true)), "bytes after the body are not taken");
        assert_eq!(scan(b"0\r\n\r\n", 1), Ok((5, true)));
        let padded = b"00000000000000000004 \t;x\r\nRust\r\n0\r\n\r\n";
        assert_eq!(scan(padded, 3), Ok((padded.len(), true)), "as hyper reads it");
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(scan(b"4\r\nRu", 2), Ok((5, false)));
        assert_eq!(scan(b"4\r\nRust\r\n0\r\n", 3), Ok((12, false)));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"zz\r\nRust\r\n0\r\n\r\n"[..],
            b"4\r\nRustX\r\n0\r\n\r\n",
            b"-1\r\n",
            b" 4\r\nRust\r\n0\r\n\r\n",
            b"4 4\r\nRust\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX-Trailer: 1\rX\r\n\r\n",
            b"0\r\nX Trailer: 1\r\n\r\n",
        ] {
            assert_eq!(scan(bad, 1), Err(BadChunking), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_bare_lf_ends_no_line() {
        for bad in [
            &b"4\nRust\r\n0\r\n\r\n"[..],
            b"4;ext\nRust\r\n0\r\n\r\n",
            b"4\r\nRust\n0\r\n\r\n",
            b"0\n\r\n",
            b"0\r\n\r\r\n",
            // Two fields in what hyper counts as one line: refused as it refuses them.
            b"0\r\nA: 1\nB: 2\r\n\r\n",
        ] {
            assert_eq!(scan(bad, 1), Err(BadChunking), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hypers_limits_apply() {
        let extensions = |n: usize| [b"1;".as_slice(), &vec![b'x'; n], b"\r\nx\r\n0\r\n\r\n"].concat();
        let most = extensions(16 * 1024 - 1);
        assert_eq!(scan(&most, 100), Ok((most.len(), true)));
        assert_eq!(scan(&extensions(16 * 1024), 100), Err(BadChunking));
        let trailers = |n: usize| [b"0\r\n".as_slice(), &b"X: y\r\n".repeat(n), b"\r\n"].concat();
        assert_eq!(scan(&trailers(100), 7), Ok((605, true)));
        assert_eq!(scan(&trailers(101), 7), Err(BadChunking));
        let long = [b"0\r\nX: ".as_slice(), &vec![b'y'; MAX_TRAILER_BYTES], b"\r\n\r\n"].concat();
        assert_eq!(scan(&long, 1000), Err(BadChunking));
    }
}
