//! How far a reader has got through its input, for a progress display: what is known
//! from the start (a file's size in bytes, a workbook's rows) and what has been read.
//!
//! Shared by the reader (which counts as it reads, on its own thread) and whoever shows
//! progress; atomics, so reading never waits on it. It decides nothing.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes read before rows per byte are trusted: readers take their input a buffer
/// (8 KiB, more when decoding) ahead of the rows they yield, so the first rows per byte
/// are low.
const MIN_SAMPLE: u64 = 64 * 1024;

/// What one input is known to hold, and how much of it has been read.
#[derive(Debug, Default)]
pub struct Extent {
    /// The input's size in bytes, when known before reading (a file, not a pipe).
    bytes: Option<u64>,
    /// The rows it holds, when known before reading (a workbook).
    rows_total: Option<u64>,
    /// Bytes taken from the input so far (a little ahead of the rows: readers buffer).
    consumed: Arc<AtomicU64>,
    /// Rows yielded so far.
    rows: AtomicU64,
    /// The input has been read to its end.
    done: AtomicBool,
}

/// How many rows the inputs hold, as far as can be told now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsTotal {
    /// No way to tell yet (a pipe, or nothing read).
    Unknown,
    /// Estimated from the bytes read so far and the rows they held.
    About(u64),
    /// Known: every input read to its end, or counted before reading.
    Exact(u64),
}

impl Extent {
    /// A text input of `bytes` bytes (if known), whose reading counts into `consumed`.
    pub(crate) fn of_bytes(bytes: Option<u64>, consumed: Arc<AtomicU64>) -> Extent {
        Extent {
            bytes,
            consumed,
            ..Extent::default()
        }
    }

    /// An input whose rows are counted before reading.
    pub(crate) fn of_rows(rows: u64) -> Extent {
        Extent {
            rows_total: Some(rows),
            ..Extent::default()
        }
    }

    /// One more row was read.
    pub(crate) fn row(&self) {
        self.rows.fetch_add(1, Ordering::Relaxed);
    }

    /// The input has no more rows.
    pub(crate) fn end(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// The rows of several inputs. The inputs still being read are estimated from their
/// sizes and the rows per byte of what has been read of any text input so far.
pub fn rows_total(extents: &[Arc<Extent>]) -> RowsTotal {
    let mut exact = 0u64;
    // Inputs still being read: their sizes and the rows read of them.
    let (mut open, mut open_size, mut open_rows) = (false, 0u64, 0u64);
    // Rows and the bytes that held them, of every text input.
    let (mut sample_rows, mut sample_bytes) = (0u64, 0u64);
    for e in extents {
        let done = e.done.load(Ordering::Relaxed);
        let read = e.rows.load(Ordering::Relaxed);
        match (done, e.rows_total, e.bytes) {
            (true, _, size) => {
                exact += read;
                if let Some(size) = size {
                    (sample_rows, sample_bytes) = (sample_rows + read, sample_bytes + size);
                }
            }
            (false, Some(total), _) => exact += total,
            (false, None, Some(size)) => {
                (open, open_size, open_rows) = (true, open_size + size, open_rows + read);
                let consumed = e.consumed.load(Ordering::Relaxed).min(size);
                if consumed >= MIN_SAMPLE.min(size) {
                    (sample_rows, sample_bytes) = (sample_rows + read, sample_bytes + consumed);
                }
            }
            (false, None, None) => return RowsTotal::Unknown,
        }
    }
    if !open {
        return RowsTotal::Exact(exact);
    }
    if sample_rows == 0 || sample_bytes == 0 {
        return RowsTotal::Unknown;
    }
    let about = (sample_rows as f64 * open_size as f64 / sample_bytes as f64).round() as u64;
    RowsTotal::About(exact + about.max(open_rows))
}

/// A reader that counts the bytes taken through it.
pub(crate) struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R, count: Arc<AtomicU64>) -> Counted<R> {
        Counted { inner, count }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(size: u64, consumed: u64, rows: u64) -> Arc<Extent> {
        let e = Extent::of_bytes(Some(size), Arc::new(AtomicU64::new(consumed)));
        e.rows.store(rows, Ordering::Relaxed);
        Arc::new(e)
    }

    #[test]
    fn the_rows_of_a_file_are_estimated_from_its_bytes() {
        // Too little read to tell.
        assert_eq!(rows_total(&[text(1000, 100, 10)]), RowsTotal::Unknown);
        let big = text(10 * MIN_SAMPLE, MIN_SAMPLE / 2, 100);
        assert_eq!(rows_total(&[big]), RowsTotal::Unknown);
        let big = text(10 * MIN_SAMPLE, MIN_SAMPLE, 100);
        assert_eq!(rows_total(&[big]), RowsTotal::About(1000));
        assert_eq!(rows_total(&[text(1000, 0, 0)]), RowsTotal::Unknown);
        // Two files: the sum of their sizes.
        let two = [text(1000, 1000, 100), text(3000, 0, 0)];
        assert_eq!(rows_total(&two), RowsTotal::About(400));
        // The first read to its end: the second is estimated from it.
        two[0].end();
        assert_eq!(rows_total(&two), RowsTotal::About(400));
        two[1].consumed.store(3000, Ordering::Relaxed);
        two[1].rows.store(250, Ordering::Relaxed);
        two[1].end();
        assert_eq!(rows_total(&two), RowsTotal::Exact(350));
    }

    #[test]
    fn read_to_the_end_or_counted_before_is_exact() {
        let e = text(1000, 1000, 7);
        e.end();
        assert_eq!(rows_total(std::slice::from_ref(&e)), RowsTotal::Exact(7));
        let sheet = Arc::new(Extent::of_rows(50));
        assert_eq!(rows_total(&[sheet, e]), RowsTotal::Exact(57));
        let pipe = Arc::new(Extent::of_bytes(None, Arc::default()));
        assert_eq!(rows_total(&[pipe]), RowsTotal::Unknown);
    }

    #[test]
    fn a_counted_reader_counts_what_passes() {
        let count = Arc::new(AtomicU64::new(0));
        let mut r = Counted::new(&b"hello world"[..], count.clone());
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 5);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 11);
    }
}
