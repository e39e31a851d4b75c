//! Delimited text as spreadsheets write it: decoded to UTF-8, delimiter sniffed, the
//! header matched, then one [`Record`] per non-blank row with the line it starts on.
//!
//! Streams through the `csv` crate one record at a time: it must never hold more than
//! one row (plus the sniffed head of the file). A malformed row becomes a record with
//! problems, not an error.
//!
//! Line numbers are counted here, not taken from `csv::Position::line()`: that one is
//! one short after a CRLF (the `\n` is consumed with the next record) and does not see
//! the blank lines csv skips. [`LineTracker`] notes where line breaks pass and turns the
//! byte offset csv reports into the line the record really starts on.

use std::collections::VecDeque;
use std::io::{self, Cursor, Read};
use std::sync::Arc;

use ::csv::{ByteRecord, ErrorKind, ReaderBuilder};
use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

use super::source::{self, SNIFF_BYTES, Source};
use super::{
    Columns, Error, MAX_CELL_BYTES, MULTILINE_LINES, Options, Problem, Reader, Record, Rows,
    build_record, resolve_columns,
};

/// The rows after the header.
pub(crate) struct CsvRows {
    file: Arc<str>,
    columns: Arc<Columns>,
    reader: CsvReader,
    record: ByteRecord,
    /// The input is UTF-8 read as bytes: each row is checked and a bad byte named.
    raw_utf8: bool,
    allow_multiline: bool,
}

type CsvReader = ::csv::Reader<LineTracker<Box<dyn Read + Send>>>;

/// An input's text, ready for the csv crate.
struct Text {
    reader: CsvReader,
    /// The first line is Excel's `sep=` hint.
    sep_line: bool,
    raw_utf8: bool,
    /// The legacy encoding the text was guessed to be in.
    legacy: Option<&'static str>,
}

/// Works out the encoding and the delimiter and sets the csv crate on the text. UTF-8
/// is not decoded but read as bytes (a BOM dropped), so a stray byte can be named.
fn text(mut source: Source, file: &Arc<str>, opts: &Options) -> Result<Text, Error> {
    let encoding = source::encoding(&source.prefix, opts.encoding.as_deref(), file)?;
    let bom = Encoding::for_bom(&source.prefix);
    let raw_utf8 = encoding == UTF_8 && bom.is_none_or(|(enc, _)| enc == UTF_8);
    let legacy = (opts.encoding.is_none() && bom.is_none() && encoding == WINDOWS_1252)
        .then_some("Windows-1252");
    let (layout, stream): (_, Box<dyn Read + Send>) = if raw_utf8 {
        if let Some((_, len)) = bom {
            source.prefix.drain(..len);
        }
        let layout = source::sniff_layout(&source.prefix);
        (layout, Box::new(source.into_reader()))
    } else {
        let mut decoded = source.decode(encoding);
        let head = source::read_up_to(&mut decoded, SNIFF_BYTES).map_err(|source| Error::Open {
            file: file.clone(),
            source,
        })?;
        let layout = source::sniff_layout(&head);
        (layout, Box::new(Cursor::new(head).chain(decoded)))
    };
    let reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(opts.delimiter.unwrap_or(layout.delimiter))
        .from_reader(LineTracker::new(stream, raw_utf8));
    Ok(Text {
        reader,
        sep_line: layout.sep_line,
        raw_utf8,
        legacy,
    })
}

/// Detects the encoding and delimiter, reads the header and checks it.
pub(crate) fn open(source: Source, file: Arc<str>, opts: &Options) -> Result<Reader, Error> {
    let extent = source.extent();
    let Text {
        mut reader,
        sep_line,
        raw_utf8,
        legacy,
    } = text(source, &file, opts)?;
    let mut record = ByteRecord::new();
    if sep_line {
        read(&mut reader, &mut record, &file)?;
    }
    let header = loop {
        if read(&mut reader, &mut record, &file)?.is_none() {
            return Err(Error::Empty { file });
        }
        let cells = cells(&record);
        if cells.iter().any(|c| !c.trim().is_empty()) {
            break cells;
        }
    };
    let columns = Arc::new(resolve_columns(&file, header_names(header), &opts.map)?);
    let rows = CsvRows {
        file: file.clone(),
        columns: columns.clone(),
        reader,
        record,
        raw_utf8,
        allow_multiline: opts.allow_multiline,
    };
    let reader = Reader::new(file, columns, Rows::Csv(rows), extent);
    if let Some(encoding) = legacy {
        reader.notes.set_legacy(encoding);
    }
    Ok(reader)
}

/// Reads a CSV file through once, before any row is used, and refuses it when a quoted
/// cell runs over many lines (see [`multiline_span`]) unless `opts` allows that. A file
/// that cannot be read here is left for the real read to report.
pub(crate) fn check_multiline(path: &str, file: &Arc<str>, opts: &Options) -> Result<(), Error> {
    if opts.allow_multiline || matches!(holds_quote(path), Ok(false)) {
        return Ok(());
    }
    let Ok(source) = Source::open(path, file) else {
        return Ok(());
    };
    let mut reader = text(source, file, opts)?.reader;
    let mut record = ByteRecord::new();
    while let Ok(Some(line)) = read(&mut reader, &mut record, file) {
        if let Some((_, first, last, bytes)) = multiline_span(&record, line) {
            return Err(Error::MultilineField {
                file: file.clone(),
                first,
                last,
                bytes,
            });
        }
    }
    Ok(())
}

/// Whether the file holds a `"` byte anywhere. Without one no cell is quoted, so none
/// holds a line break, and the pass of [`check_multiline`] has nothing to find. Every
/// encoding read here writes `"` with that byte (UTF-16 as `22 00` or `00 22`); a
/// search for one byte reads the file a hundred times faster than parsing it.
fn holds_quote(path: &str) -> io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].contains(&b'"') {
            return Ok(true);
        }
    }
}

/// The first cell of a record that runs over more than [`MULTILINE_LINES`] lines, or
/// over more than one line and [`MAX_CELL_BYTES`] bytes: (position, first line, last
/// line, bytes). `line` is the line the record starts on.
fn multiline_span(record: &ByteRecord, line: u64) -> Option<(usize, u64, u64, usize)> {
    // Nearly every record has no line break at all: one pass over its bytes tells.
    let breaks = record
        .as_slice()
        .iter()
        .fold(false, |any, b| any | (*b == b'\n') | (*b == b'\r'));
    if !breaks {
        return None;
    }
    let mut first = line;
    for (i, cell) in record.iter().enumerate() {
        let body = cell
            .iter()
            .rposition(|b| *b != b'\n' && *b != b'\r')
            .map_or(&cell[..0], |end| &cell[..=end]);
        let breaks = line_breaks(body);
        if breaks > 0 && (breaks + 1 > MULTILINE_LINES || cell.len() > MAX_CELL_BYTES) {
            return Some((i, first, first + breaks, cell.len()));
        }
        first += line_breaks(cell);
    }
    None
}

/// Line breaks as the reader counts them: `\r\n`, `\n`, or a lone `\r`.
fn line_breaks(bytes: &[u8]) -> u64 {
    let lone_cr = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        .count();
    let newlines = bytes.iter().filter(|b| **b == b'\n').count();
    (newlines + lone_cr) as u64
}

impl CsvRows {
    pub(crate) fn next(&mut self) -> Option<Result<Record, Error>> {
        loop {
            let line = match read(&mut self.reader, &mut self.record, &self.file) {
                Ok(None) => return None,
                Ok(Some(line)) => line,
                Err(e) => return Some(Err(e)),
            };
            let span = multiline_span(&self.record, line);
            if let Some((_, first, last, bytes)) = span
                && !self.allow_multiline
            {
                // A stream cannot be read twice: it stops here instead.
                return Some(Err(Error::MultilineField {
                    file: self.file.clone(),
                    first,
                    last,
                    bytes,
                }));
            }
            let (values, bad) = checked_cells(&self.record);
            let mut problems: Vec<Problem> = bad
                .and_then(|cell| self.bad_byte(line, cell))
                .into_iter()
                .collect();
            // Accepted long cells are notes: one that is sent (a name) makes the row invalid.
            let width = self.columns.names.len();
            let sent = span.is_some_and(|(cell, ..)| cell >= width || self.columns.is_field(cell));
            let span = span.map(|(_, first, last, bytes)| Problem {
                column: None,
                value: String::new(),
                message: format!(
                    "a quoted cell runs over lines {first}-{last} ({bytes} bytes): a closing \
                     quote is probably missing on line {first}"
                ),
            });
            if sent && let Some(span) = &span {
                problems.insert(0, span.clone());
            }
            if let Some(mut record) =
                build_record(&self.file, line, &self.columns, values, problems)
            {
                if let (false, Some(span), Err(problems)) = (sent, span, &mut record.parsed) {
                    problems.insert(0, span);
                }
                return Some(Ok(record));
            }
        }
    }

    /// For UTF-8 read as bytes: the first byte of the current record that is not UTF-8
    /// (in `cell`, the first cell that is not), by line and column, as a problem of
    /// that cell.
    fn bad_byte(&self, line: u64, cell: usize) -> Option<Problem> {
        if !self.raw_utf8 {
            return None;
        }
        let start = self.record.position().map_or(0, |p| p.byte());
        let end = self.reader.position().byte();
        let raw = self.reader.get_ref().kept(start, end);
        // Blank lines csv skipped before the record are already counted in `line`.
        let raw = match raw.iter().position(|b| *b != b'\n' && *b != b'\r') {
            Some(i) => &raw[i..],
            None => &raw[..],
        };
        let at = std::str::from_utf8(raw).err()?.valid_up_to();
        let line_start = raw[..at]
            .iter()
            .rposition(|b| *b == b'\n' || *b == b'\r')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&raw[line_start..at])
            .chars()
            .count()
            + 1;
        let bad_line = line + line_breaks(&raw[..line_start]);
        let place = if bad_line == line {
            String::new()
        } else {
            format!("on line {bad_line}, ")
        };
        Some(Problem {
            column: self.columns.names.get(cell).cloned(),
            value: String::new(),
            message: format!(
                "{place}byte 0x{:02X} at column {column} is not UTF-8: save the file as \
                 UTF-8, or name its encoding with --encoding",
                raw[at]
            ),
        })
    }
}

/// Reads the next record and returns the line it starts on; `None` at the end.
fn read(
    reader: &mut CsvReader,
    record: &mut ByteRecord,
    file: &Arc<str>,
) -> Result<Option<u64>, Error> {
    match reader.read_byte_record(record) {
        Ok(false) => Ok(None),
        Ok(true) => {
            let start = record.position().map_or(0, |p| p.byte());
            Ok(Some(reader.get_mut().line_at(start)))
        }
        Err(e) => {
            let start = e.position().map_or(0, |p| p.byte());
            let line = reader.get_mut().line_at(start);
            let message = e.to_string();
            let source = match e.into_kind() {
                ErrorKind::Io(source) => source,
                _ => io::Error::other(message),
            };
            Err(Error::Read {
                file: file.clone(),
                line,
                source,
            })
        }
    }
}

/// Passes bytes through and remembers where the line breaks (`\r\n`, `\n`, or a lone
/// `\r`) are, so that a byte offset can be turned into a line number.
///
/// Only breaks at or after the last offset asked about are kept: with csv asking once
/// a record, that is csv's read-ahead buffer and the current record, never the file.
struct LineTracker<R> {
    inner: R,
    /// Bytes passed through so far.
    offset: u64,
    /// Offsets of the `\r` and `\n` bytes not yet counted into `breaks_before`.
    pending: VecDeque<(u64, u8)>,
    /// Line breaks wholly before `pending`.
    breaks_before: u64,
    /// Whether the bytes themselves are kept (from the last offset asked about on).
    keep: bool,
    window: VecDeque<u8>,
    /// The offset of `window[0]`.
    window_start: u64,
}

impl<R> LineTracker<R> {
    fn new(inner: R, keep: bool) -> Self {
        LineTracker {
            inner,
            offset: 0,
            pending: VecDeque::new(),
            breaks_before: 0,
            keep,
            window: VecDeque::new(),
            window_start: 0,
        }
    }

    /// The kept bytes from `start` to `end` (empty unless keeping).
    fn kept(&self, start: u64, end: u64) -> Vec<u8> {
        let from = start.saturating_sub(self.window_start) as usize;
        let to = (end.saturating_sub(self.window_start) as usize).min(self.window.len());
        self.window.range(from.min(to)..to).copied().collect()
    }

    /// The line of the first byte at or after `offset` that is not a line break (csv
    /// reports where a record's search began; blank lines may come before it).
    fn line_at(&mut self, offset: u64) -> u64 {
        if self.keep {
            let cut = (offset.saturating_sub(self.window_start) as usize).min(self.window.len());
            self.window.drain(..cut);
            self.window_start += cut as u64;
        }
        while let Some(&(at, byte)) = self.pending.front()
            && at < offset
        {
            self.pending.pop_front();
            let crlf = byte == b'\r' && self.pending.front() == Some(&(at + 1, b'\n'));
            if !crlf {
                self.breaks_before += 1;
            }
        }
        let mut line = self.breaks_before + 1;
        // Everything before `offset` is counted, so a run of breaks at `offset` sits at
        // the front: those are the blank lines csv skipped before the record.
        let run = self
            .pending
            .iter()
            .enumerate()
            .take_while(|(i, (at, _))| *at == offset + *i as u64);
        for (i, &(at, byte)) in run {
            let crlf = byte == b'\r' && self.pending.get(i + 1) == Some(&(at + 1, b'\n'));
            if !crlf {
                line += 1;
            }
        }
        line
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.keep {
            self.window.extend(&buf[..n]);
        }
        for (i, &b) in buf.iter().take(n).enumerate() {
            if b == b'\n' || b == b'\r' {
                self.pending.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The cells as text. The stream is already UTF-8, so nothing is lost here.
fn cells(record: &ByteRecord) -> Vec<String> {
    checked_cells(record).0
}

/// The cells as text, each checked once, and the first that is not UTF-8 (its bad
/// bytes become U+FFFD).
fn checked_cells(record: &ByteRecord) -> (Vec<String>, Option<usize>) {
    let mut bad = None;
    let mut values = Vec::with_capacity(record.len());
    for (i, cell) in record.iter().enumerate() {
        values.push(match std::str::from_utf8(cell) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                bad.get_or_insert(i);
                String::from_utf8_lossy(cell).into_owned()
            }
        });
    }
    (values, bad)
}

/// The header names as written, without the empty cells a spreadsheet pads it with
/// and without a stray second BOM.
fn header_names(mut names: Vec<String>) -> Vec<String> {
    while names.last().is_some_and(|n| n.trim().is_empty()) {
        names.pop();
    }
    if let Some(first) = names.first_mut()
        && let Some(rest) = first.strip_prefix('\u{FEFF}')
    {
        *first = rest.to_string();
    }
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Field, Options, Problem, open_stream};
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    fn emails(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.parsed.as_ref().unwrap().email.clone())
            .collect()
    }

    fn lines(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.line).collect()
    }

    const PEOPLE: &str = "E-mail Address{d}Full Name{d}Company\n\
                          ann@example.com{d}Ann Example{d}Acme\n\
                          bob@example.com{d}Bob Example{d}Acme\n";

    #[test]
    fn sniffs_each_delimiter() {
        for d in [",", ";", "\t", "|"] {
            let text = PEOPLE.replace("{d}", d);
            let recs = read_all("p.csv", text.as_bytes(), &opts());
            assert_eq!(
                emails(&recs),
                ["ann@example.com", "bob@example.com"],
                "{d:?}"
            );
            let inv = recs[0].parsed.as_ref().unwrap();
            assert_eq!(inv.name, "Ann Example");
            assert_eq!(inv.customer.as_deref(), Some("Acme"));
        }
    }

    #[test]
    fn a_given_delimiter_wins() {
        let text = "email;name;x|y\na@example.com;A;1|2\n";
        let o = Options {
            delimiter: Some(b';'),
            ..opts()
        };
        let recs = read_all("d.csv", text.as_bytes(), &o);
        assert_eq!(recs[0].columns.names, ["email", "name", "x|y"]);
        assert_eq!(recs[0].values, ["a@example.com", "A", "1|2"]);
    }

    #[test]
    fn excel_sep_line_is_skipped() {
        let recs = read_all("s.csv", b"sep=;\nEmail;Name\na@example.com;A\n", &opts());
        assert_eq!(recs[0].columns.names, ["Email", "Name"]);
        assert_eq!(recs[0].line, 3);
    }

    /// The 1252 text "Email;Name;Company / zoé@example.com;Zoë “Zee” Dubois;Café €uro".
    const CP1252: &[u8] =
        b"Email;Name;Company\r\nzo\xE9@example.com;Zo\xEB \x93Zee\x94 Dubois;Caf\xE9 \x80uro\r\n";

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in text.encode_utf16() {
            let bytes = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            out.extend_from_slice(&bytes);
        }
        out
    }

    const ACCENTED: &str =
        "Email\tName\tCompany\r\nzoé@example.com\tZoë “Zee” Dubois\tCafé €uro\r\n";

    fn check_accented(recs: &[Record]) {
        assert_eq!(recs.len(), 1);
        let inv = recs[0].parsed.as_ref().unwrap();
        assert_eq!(inv.email, "zoé@example.com");
        assert_eq!(inv.name, "Zoë “Zee” Dubois");
        assert_eq!(inv.customer.as_deref(), Some("Café €uro"));
        assert_eq!(recs[0].columns.names[0], "Email");
        assert_eq!(recs[0].line, 2);
    }

    #[test]
    fn utf8_with_and_without_bom() {
        check_accented(&read_all("u.csv", ACCENTED.as_bytes(), &opts()));
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(ACCENTED.as_bytes());
        check_accented(&read_all("u.csv", &bom, &opts()));
    }

    #[test]
    fn utf16_with_bom() {
        check_accented(&read_all("le.csv", &utf16(ACCENTED, false), &opts()));
        check_accented(&read_all("be.csv", &utf16(ACCENTED, true), &opts()));
    }

    #[test]
    fn utf16_without_bom_by_label_or_by_nuls() {
        let bare = &utf16(ACCENTED, false)[2..];
        check_accented(&read_all("le.csv", bare, &opts()));
        let o = Options {
            encoding: Some("utf-16le".to_string()),
            ..opts()
        };
        check_accented(&read_all("le.csv", bare, &o));
    }

    #[test]
    fn windows_1252_detected_and_by_label() {
        check_accented(&read_all("w.csv", CP1252, &opts()));
        let o = Options {
            encoding: Some("latin1".to_string()),
            ..opts()
        };
        check_accented(&read_all("w.csv", CP1252, &o));
    }

    #[test]
    fn invalid_utf8_after_the_sniffed_head_is_flagged() {
        let mut text = b"Email,Name\n".to_vec();
        let filler = "a@example.com,Filler Row\n";
        while text.len() < SNIFF_BYTES + 100 {
            text.extend_from_slice(filler.as_bytes());
        }
        text.extend_from_slice(b"b@example.com,Jos\xE9\n");
        let recs = read_all("late.csv", &text, &opts());
        let last = recs.last().unwrap();
        let problems = last.parsed.as_ref().unwrap_err();
        assert!(problems[0].message.contains("--encoding"), "{problems:?}");
        assert!(recs[..recs.len() - 1].iter().all(|r| r.parsed.is_ok()));
    }

    #[test]
    fn a_stray_byte_in_utf8_is_named_by_line_and_column() {
        let bytes = b"Email,Name\nann@example.com,Zo\xC3\xAB\nb@example.com,\"Jos\xE9\nRuiz\"\n";
        let (_d, reader) = open_bytes("s.csv", bytes, &opts());
        let reader = reader.unwrap();
        let notes = reader.notes();
        let recs: Vec<Record> = reader.map(Result::unwrap).collect();
        assert_eq!(recs[0].parsed.as_ref().unwrap().name, "Zoë");
        let problems = recs[1].parsed.as_ref().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].column.as_deref(), Some("Name"));
        assert!(
            problems[0]
                .message
                .starts_with("byte 0xE9 at column 19 is not UTF-8"),
            "{problems:?}"
        );
        assert!(notes.lines().is_empty(), "{:?}", notes.lines());
    }

    #[test]
    fn a_legacy_file_says_what_it_was_read_as() {
        let (_d, reader) = open_bytes("w.csv", CP1252, &opts());
        let reader = reader.unwrap();
        let notes = reader.notes();
        assert_eq!(reader.count(), 1);
        assert!(
            notes.lines()[0].contains("read as Windows-1252"),
            "{:?}",
            notes.lines()
        );
    }

    #[test]
    fn a_cell_over_many_lines_refuses_the_file_unless_allowed() {
        let mut text = String::from("Email,Name\na@example.com,\"Ann\n");
        for i in 0..20 {
            text.push_str(&format!("u{i}@example.com,U{i}\n"));
        }
        let (_d, reader) = open_bytes("m.csv", text.as_bytes(), &opts());
        let err = reader.err().unwrap();
        assert!(
            err.to_string()
                .contains("m.csv:2-22: a quoted cell runs from line 2 to line 22"),
            "{err}"
        );
        let allow = Options {
            allow_multiline: true,
            ..opts()
        };
        let recs = read_all("m.csv", text.as_bytes(), &allow);
        assert_eq!(recs.len(), 1);
        let problems = recs[0].parsed.as_ref().unwrap_err();
        assert!(problems[0].message.contains("lines 2-22"), "{problems:?}");
        // A stream cannot be read twice: it stops at the cell.
        let stream = open_stream("<stdin>", io::Cursor::new(text.into_bytes()), &opts()).unwrap();
        let last = stream.last().unwrap();
        assert!(matches!(
            last,
            Err(Error::MultilineField {
                first: 2,
                last: 22,
                ..
            })
        ));
    }

    /// The pass before reading is skipped only for a file with no quote at all: a quote
    /// past the first block read still has the file checked and refused.
    #[test]
    fn a_quote_anywhere_in_the_file_has_it_checked_for_long_cells() {
        let mut text = String::from("Email,Name\n");
        let mut i = 0;
        while text.len() < 600 * 1024 {
            text.push_str(&format!("u{i}@example.com,User {i}\n"));
            i += 1;
        }
        let (_d, plain) = open_bytes("q.csv", text.as_bytes(), &opts());
        assert_eq!(plain.unwrap().count(), i);
        text.push_str("late@example.com,\"Late\n");
        for j in 0..20 {
            text.push_str(&format!("v{j}@example.com,V{j}\n"));
        }
        let (_d, reader) = open_bytes("q.csv", text.as_bytes(), &opts());
        let err = reader.err().unwrap();
        assert!(matches!(err, Error::MultilineField { .. }), "{err}");
    }

    #[test]
    fn a_cell_over_many_lines_is_found_whatever_its_line_breaks() {
        let record = |cells: &[&[u8]]| ByteRecord::from(cells.to_vec());
        assert_eq!(multiline_span(&record(&[b"a@x.io", b"Ann"]), 5), None);
        assert_eq!(multiline_span(&record(&[b"a@x.io", b"A\nB"]), 5), None);
        for breaks in [&b"\n"[..], b"\r", b"\r\n"] {
            let long: Vec<u8> = [&b"x"[..], breaks].concat().repeat(9);
            let at = multiline_span(&record(&[b"A\nB", &long]), 5);
            assert_eq!(at, Some((1, 6, 14, long.len())), "{breaks:?}");
        }
    }

    #[test]
    fn quoted_delimiters_quotes_and_newlines_keep_line_numbers() {
        let text = "Email,Name,Notes\n\
                    a@example.com,\"Doe, Ann\",\"says \"\"hi\"\"\"\n\
                    b@example.com,Bob,\"two\nlines\r\nand three\"\n\
                    c@example.com,\"Cat\nCole\",x\n\
                    d@example.com,Dan,\n";
        let recs = read_all("q.csv", text.as_bytes(), &opts());
        assert_eq!(lines(&recs), [2, 3, 6, 8]);
        assert_eq!(recs[0].values, ["a@example.com", "Doe, Ann", "says \"hi\""]);
        assert_eq!(recs[1].values[2], "two\nlines\r\nand three");
        assert_eq!(recs[2].parsed.as_ref().unwrap().name, "Cat Cole");
    }

    #[test]
    fn blank_lines_are_skipped_and_counted() {
        let text = "\n\nEmail,Name\n\na@example.com,A\n\r\n   \n,,\nb@example.com,B";
        let recs = read_all("b.csv", text.as_bytes(), &opts());
        assert_eq!(emails(&recs), ["a@example.com", "b@example.com"]);
        assert_eq!(lines(&recs), [5, 9]);
    }

    #[test]
    fn line_numbers_with_crlf_and_lone_cr() {
        let crlf = "Email,Name\r\n\r\na@example.com,\"A\r\nB\"\r\nb@example.com,B\r\n";
        assert_eq!(
            lines(&read_all("crlf.csv", crlf.as_bytes(), &opts())),
            [3, 5]
        );
        let cr = "Email,Name\ra@example.com,A\r\rb@example.com,B\r";
        assert_eq!(lines(&read_all("cr.csv", cr.as_bytes(), &opts())), [2, 4]);
        let mixed = "\r\n\nEmail,Name\n\r\n\ra@example.com,A";
        assert_eq!(lines(&read_all("mix.csv", mixed.as_bytes(), &opts())), [6]);
    }

    #[test]
    fn a_files_rows_are_estimated_from_its_size_while_it_is_read() {
        use super::super::{RowsTotal, rows_total};
        let rows = (0..20_000).map(|i| format!("u{i:05}@example.com,User {i:05}\n"));
        let text: String = std::iter::once("email,name\n".to_string())
            .chain(rows)
            .collect();
        let (_dir, reader) = open_bytes("big.csv", text.as_bytes(), &opts());
        let mut reader = reader.unwrap();
        let extent = [reader.extent()];
        assert_eq!(rows_total(&extent), RowsTotal::Unknown, "nothing read yet");
        reader.by_ref().take(5_000).for_each(drop);
        let RowsTotal::About(about) = rows_total(&extent) else {
            panic!("{:?}", rows_total(&extent))
        };
        assert!((19_000..=21_000).contains(&about), "{about}");
        reader.for_each(drop);
        assert_eq!(rows_total(&extent), RowsTotal::Exact(20_000));
    }

    #[test]
    fn line_tracker_forgets_what_it_has_passed() {
        let mut text = String::from("Email,Name\n");
        for i in 0..5_000 {
            text.push_str(&format!("u{i}@example.com,U\r\n"));
        }
        let source = Source::new(text.into_bytes(), Box::new(io::empty()));
        let mut reader = open(source, Arc::from("t"), &opts()).unwrap();
        let mut last = 0;
        for rec in reader.by_ref().take(4_000) {
            last = rec.unwrap().line;
        }
        assert_eq!(last, 4_001);
        let Rows::Csv(rows) = &reader.rows else {
            panic!("not csv")
        };
        assert!(rows.reader.get_ref().pending.len() < 1_000);
    }

    #[test]
    fn trailing_empty_columns_are_ignored() {
        let text = "Email,Name,,,\na@example.com,A,,,\nb@example.com,B\nc@example.com,C, ,,\n";
        let recs = read_all("t.csv", text.as_bytes(), &opts());
        assert_eq!(recs[0].columns.names, ["Email", "Name"]);
        assert!(recs.iter().all(|r| r.parsed.is_ok()), "{recs:?}");
        assert!(recs.iter().all(|r| r.values.len() == 2));
    }

    #[test]
    fn ragged_rows_are_records_with_a_problem() {
        let text = "Email,Name,Company\n\
                    a@example.com,A\n\
                    b@example.com,B,Acme,oops,\n\
                    c@example.com,C,Acme\n";
        let recs = read_all("r.csv", text.as_bytes(), &opts());
        assert_eq!(recs.len(), 3);
        let short = recs[0].parsed.as_ref().unwrap_err();
        assert_eq!(
            short[0],
            Problem {
                column: None,
                value: String::new(),
                message: "row has 2 cells, the header has 3: a delimiter or quote is \
                          probably missing or extra in this row"
                    .to_string()
            }
        );
        assert_eq!(recs[0].values, ["a@example.com", "A"]);
        let long = recs[1].parsed.as_ref().unwrap_err();
        assert!(
            long[0]
                .message
                .starts_with("row has 4 cells, the header has 3")
        );
        assert_eq!(recs[1].values.len(), 5);
        assert!(recs[2].parsed.is_ok());
        assert_eq!(lines(&recs), [2, 3, 4]);
    }

    #[test]
    fn first_and_last_name_columns_are_joined() {
        let text = "Email;First Name;Surname;Name\n\
                    a@example.com;Ann;Lee;\n\
                    b@example.com;Bob;Ray;Robert Ray\n";
        let recs = read_all("n.csv", text.as_bytes(), &opts());
        assert_eq!(recs[0].parsed.as_ref().unwrap().name, "Ann Lee");
        assert_eq!(recs[1].parsed.as_ref().unwrap().name, "Robert Ray");
        assert!(recs[0].columns.has(Field::FirstName));
    }

    #[test]
    fn a_bad_row_does_not_stop_the_rest() {
        let text = "Email,Name,Status\n\
                    not-an-address,,weird\n\
                    b@example.com,B,active\n";
        let recs = read_all("v.csv", text.as_bytes(), &opts());
        let problems = recs[0].parsed.as_ref().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].column.as_deref(), Some("Email"));
        assert_eq!(problems[0].value, "not-an-address");
        assert!(recs[1].parsed.is_ok());
    }

    #[test]
    fn other_columns_are_kept() {
        let text = "Notes,Email,Name,Region\nvip,a@example.com,A,North\n";
        let recs = read_all("k.csv", text.as_bytes(), &opts());
        assert_eq!(recs[0].columns.names, ["Notes", "Email", "Name", "Region"]);
        assert_eq!(recs[0].values, ["vip", "a@example.com", "A", "North"]);
    }

    #[test]
    fn reader_reports_file_and_columns() {
        let (_d, r) = open_bytes("f.csv", b"Email,Name\n", &opts());
        let r = r.unwrap();
        assert!(r.file().ends_with("f.csv"));
        assert_eq!(r.columns().names, ["Email", "Name"]);
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn streams_many_rows() {
        // Not a memory measurement, just a smoke test that nothing is collected up front.
        struct Rows(u64);
        impl Read for Rows {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Ok(0);
                }
                self.0 -= 1;
                let row = format!("u{}@example.com,User {}\n", self.0, self.0);
                let n = row.len().min(buf.len());
                buf[..n].copy_from_slice(&row.as_bytes()[..n]);
                Ok(n)
            }
        }
        let source = Source::new(b"email,name\n".to_vec(), Box::new(Rows(20_000)));
        let reader = open(source, Arc::from("gen"), &opts()).unwrap();
        let mut n = 0;
        for rec in reader {
            assert!(rec.unwrap().parsed.is_ok());
            n += 1;
        }
        assert_eq!(n, 20_000);
    }

    #[test]
    fn fixtures_all_hold_the_same_invitees() {
        let expected = ["ann.lee@example.com", "bob.ray@example.org"];
        for name in [
            "utf8.csv",
            "utf8_bom.csv",
            "utf16le.csv",
            "utf16be.csv",
            "windows1252.csv",
            "pipes.csv",
            "pipe.tsv",
            "tabs.tsv",
            "quoted.csv",
            "first_last.csv",
        ] {
            let reader = super::super::open(&fixture(name), &opts()).unwrap();
            let recs: Vec<Record> = reader.map(Result::unwrap).collect();
            assert!(recs.len() >= 4, "{name}: {recs:?}");
            assert!(recs.iter().all(|r| r.parsed.is_ok()), "{name}: {recs:?}");
            assert_eq!(emails(&recs[..2]), expected, "{name}");
            let zoe = invitee_starting(&recs, "zoe");
            assert_eq!(zoe.name, "Zoë Dubois", "{name}");
            assert_eq!(zoe.customer.as_deref(), Some("Café Société"), "{name}");
        }
    }

    #[test]
    fn ragged_fixture_reports_and_continues() {
        let reader = super::super::open(&fixture("ragged.csv"), &opts()).unwrap();
        let recs: Vec<Record> = reader.map(Result::unwrap).collect();
        let verdicts: Vec<(u64, bool)> = recs.iter().map(|r| (r.line, r.parsed.is_ok())).collect();
        assert_eq!(
            verdicts,
            [(2, true), (3, false), (4, true), (6, false), (7, true)]
        );
        let short = &recs[1].parsed.as_ref().unwrap_err()[0];
        assert!(
            short
                .message
                .starts_with("row has 2 cells, the header has 4")
        );
        let long = &recs[3].parsed.as_ref().unwrap_err()[0];
        assert!(
            long.message
                .starts_with("row has 6 cells, the header has 4")
        );
    }

    #[test]
    fn quoted_fixture_lines_and_cells() {
        let reader = super::super::open(&fixture("quoted.csv"), &opts()).unwrap();
        let recs: Vec<Record> = reader.map(Result::unwrap).collect();
        assert_eq!(lines(&recs), [2, 3, 6, 8, 10]);
        assert_eq!(recs[0].values[3], "Prefers \"Ann\", not \"Annie\"");
        assert_eq!(
            recs[1].values[3],
            "Line one\nline two, with a comma\nline three"
        );
        assert_eq!(recs[3].values[1], "Margaret “Mags” Smith");
        assert_eq!(recs[4].values[3], "semi;colons|pipes\ttabs");
    }
}
