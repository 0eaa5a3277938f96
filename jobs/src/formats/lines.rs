//! Lines of a byte stream, read in large blocks and lent out without a copy per line.

use std::io::{ErrorKind, Read};

/// The block read at a time: small enough to stay in the core's cache while its lines are
/// parsed; a line longer than this grows the buffer.
const BLOCK: usize = 256 << 10;

/// A line may not be longer than this: a file without line breaks is not a bill, and reading
/// it whole would break the promise of bounded memory.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// Why the next line could not be read.
pub(crate) enum LineError {
    /// The reader failed.
    Io(std::io::Error),
    /// A line passed `MAX_LINE` bytes.
    TooLong,
}

pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    /// The next line starts here.
    start: usize,
    /// Bytes read end here.
    end: usize,
    /// Where the search for the next line break goes on (the bytes before it have none).
    scanned: usize,
    eof: bool,
}

impl<R: Read> Lines<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; BLOCK],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
        }
    }

    /// The next line with its `\n` (the last line may have none); `None` at the end.
    #[inline]
    pub(crate) fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        loop {
            if let Some(p) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let s = self.start;
                self.start = self.scanned + p + 1;
                self.scanned = self.start;
                return Ok(Some(&self.buf[s..self.start]));
            }
            self.scanned = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let s = self.start;
                self.start = self.end;
                return Ok(Some(&self.buf[s..self.end]));
            }
            self.fill()?;
        }
    }

    /// Moves the unfinished line to the front and reads more behind it.
    fn fill(&mut self) -> Result<(), LineError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_LINE {
                return Err(LineError::TooLong);
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn all(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut lines = Lines::new(Trickle { data, step });
        let mut out = Vec::new();
        while let Ok(Some(l)) = lines.next_line() {
            out.push(l.to_vec());
        }
        out
    }

    #[test]
    fn lines_come_whole_across_reads_and_blocks() {
        let data = b"a,b\r\nccc\n\nlast";
        for step in [1, 2, 3, 100] {
            assert_eq!(
                all(data, step),
                vec![
                    b"a,b\r\n".to_vec(),
                    b"ccc\n".to_vec(),
                    b"\n".to_vec(),
                    b"last".to_vec()
                ]
            );
        }
        // Lines that straddle the block boundary, and one longer than a block.
        let mut big = Vec::new();
        let long = vec![b'x'; BLOCK + 10];
        for i in 0..(BLOCK / 7 + 3) {
            big.extend_from_slice(format!("{i:05}\n").as_bytes());
        }
        big.extend_from_slice(&long);
        big.push(b'\n');
        big.extend_from_slice(b"end\n");
        let got = all(&big, 1 << 16);
        assert_eq!(got.len(), BLOCK / 7 + 3 + 2);
        assert_eq!(got[1000], b"01000\n".to_vec());
        assert_eq!(got[got.len() - 2].len(), BLOCK + 11);
        assert_eq!(got[got.len() - 1], b"end\n".to_vec());
    }
}
