//! Following a chunked response body as it passes through unchanged, to know where it ends
//! (so the upstream connection can carry the next request) and to refuse a malformed one
//! before it reaches the browser as something else.

/// The longest chunk-size line (size and extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its chunked body was malformed")]
pub(crate) struct BadChunking;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; its bytes so far are in `line`.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// After a chunk's data: `\r` expected (`false`) or `\n` (`true`).
    DataEnd(bool),
    /// After the last chunk: trailer lines, each counted from its start.
    Trailers { line: usize, cr: bool },
    /// The body is complete.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug)]
pub(crate) struct ChunkedScan {
    state: State,
    line: Vec<u8>,
    trailers: usize,
}

impl ChunkedScan {
    pub(crate) fn new() -> Self {
        Self { state: State::Size, line: Vec::new(), trailers: 0 }
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
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataEnd(false) } else { State::Data(left) };
                }
                State::DataEnd(lf) => {
                    let want = if lf { b'\n' } else { b'\r' };
                    if bytes[i] != want {
                        return Err(BadChunking);
                    }
                    i += 1;
                    self.state = if lf { State::Size } else { State::DataEnd(true) };
                }
                State::Size => {
                    let b = bytes[i];
                    i += 1;
                    self.line.push(b);
                    if b == b'\n' {
                        let size = match httparse::parse_chunk_size(&self.line) {
                            Ok(httparse::Status::Complete((_, size))) => size,
                            _ => return Err(BadChunking),
                        };
                        self.line.clear();
                        self.state = if size == 0 { State::Trailers { line: 0, cr: false } } else { State::Data(size) };
                    } else if self.line.len() > MAX_SIZE_LINE {
                        return Err(BadChunking);
                    }
                }
                State::Trailers { line, cr } => {
                    let b = bytes[i];
                    i += 1;
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(BadChunking);
                    }
                    self.state = match (cr, b) {
                        (true, b'\n') if line == 0 => State::Done,
                        (true, b'\n') => State::Trailers { line: 0, cr: false },
                        (true, _) => return Err(BadChunking),
                        (false, b'\r') => State::Trailers { line, cr: true },
                        (false, _) => State::Trailers { line: line + 1, cr: false },
                    };
                }
            }
        }
        Ok(i)
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
            b"4\nRust\r\n0\r\n\r\n",
            b"-1\r\n",
            b"0\r\nX-Trailer: 1\rX\r\n\r\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(scan(bad, 1), Err(BadChunking), "{}", String::from_utf8_lossy(bad));
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_SIZE_LINE + 1]].concat();
        assert_eq!(scan(&long_line, 100), Err(BadChunking));
        let endless_trailers = [b"0\r\n".as_slice(), &b"X: y\r\n".repeat(MAX_TRAILERS)].concat();
        assert_eq!(scan(&endless_trailers, 1000), Err(BadChunking));
    }
}
