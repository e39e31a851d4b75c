//! Input: turns an operator's file (CSV, JSONL, XLSX/ODS, or stdin) into validated
//! [`Record`]s, one at a time.
//!
//! [`open`] decides everything that can stop a run before anything is sent: the file
//! is readable, its encoding and layout are known, an e-mail and a name column exist.
//! After that a bad row is data (a [`Record`] whose `parsed` is an `Err`), never an
//! error; only an I/O failure midway ends the iteration. CSV and JSONL stream in
//! constant memory: nothing here may read a whole CSV or JSONL file. This module knows
//! nothing of customers, the API or the ledger.

mod columns;
mod csv;
mod extent;
mod jsonl;
mod results;
mod source;
mod validate;
mod xlsx;

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use columns::{Columns, Field, UnknownField, normalize_header};
pub use extent::{Extent, RowsTotal, rows_total};
pub use results::{RESULTS_COLUMNS, escape as escape_cell};

use crate::api::types::AccessStatus;
use source::Source;

/// How to read an input; every `None` means "work it out from the file".
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// CSV delimiter; `None` sniffs `,` `;` tab `|` from the header line.
    pub delimiter: Option<u8>,
    /// CSV/JSONL encoding label as encoding_rs knows them (`utf-8`, `utf-16le`,
    /// `windows-1252`, `latin1`, …); `None` detects (BOM, else UTF-8 if the first
    /// 64 KiB are valid UTF-8, else Windows-1252). A BOM always wins over the label.
    pub encoding: Option<String>,
    /// Workbook sheet to read; `None` is the first sheet.
    pub sheet: Option<String>,
    /// `None` goes by extension, and for stdin or an unknown extension by content.
    pub format: Option<Format>,
    /// `--map field=Column` overrides; they win over the aliases.
    pub map: Vec<(Field, String)>,
    /// Accept CSV cells that run over more than [`MULTILINE_LINES`] lines or
    /// [`MAX_CELL_BYTES`] bytes; by default such a file is refused.
    pub allow_multiline: bool,
}

/// The most bytes a cell may hold: past it the row is invalid. A real name or address
/// is far shorter; a longer cell is usually rows swallowed by a missing quote.
pub const MAX_CELL_BYTES: usize = 4 * 1024;

/// The most lines a quoted CSV cell may run over before the file is refused (unless
/// [`Options::allow_multiline`]): enough for an address or a note.
pub const MULTILINE_LINES: u64 = 8;

/// The kinds of input there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Delimited text: `.csv`, `.tsv`, `.txt`.
    Csv,
    /// One JSON object a line: `.jsonl`, `.ndjson`.
    Jsonl,
    /// A workbook: `.xlsx`, `.xlsm`, `.xls`, `.xlsb`, `.ods`.
    Sheet,
}

/// One row of the input, with where it came from and what it means.
#[derive(Debug, Clone)]
pub struct Record {
    /// Display name of the input (`<stdin>` for `-`).
    pub file: Arc<str>,
    /// 1-based line where the record starts (the header is line 1 of a CSV); the line of
    /// a JSONL file; the sheet's row number in a workbook.
    pub line: u64,
    /// The header this row is aligned to; shared by all rows.
    pub columns: Arc<Columns>,
    /// The row's cells aligned to `columns.names`. A ragged row keeps what it had; a
    /// JSONL line that is not an object is the one raw line.
    pub values: Vec<String>,
    /// The invitee, or every reason the row cannot be one.
    pub parsed: Result<Invitee, Vec<Problem>>,
    /// What is odd about a row that can still be sent (an address that mixes scripts).
    pub warnings: Vec<Problem>,
}

impl Record {
    /// The row's cells as the ledger keeps them: a JSON array of strings, exactly as
    /// `serde_json` writes it (the stored hash of the cells is taken over this text).
    /// A cell with nothing to escape is copied as it is.
    pub fn cells_json(&self) -> String {
        let len = self.values.iter().map(|v| v.len() + 3).sum::<usize>();
        let mut out = String::with_capacity(len + 2);
        out.push('[');
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
                let quoted = serde_json::to_string(value);
                out.push_str(quoted.as_deref().unwrap_or("\"\""));
            } else {
                out.push('"');
                out.push_str(value);
                out.push('"');
            }
        }
        out.push(']');
        out
    }

    /// The raw cell of `field` in this row, if a column holds it.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.columns
            .index_of(field)
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
    }
}

/// A row that passed validation: what an invitation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Invitee {
    /// Trimmed, as typed (case kept); the ledger key is computed elsewhere.
    pub email: String,
    /// Trimmed, inner whitespace folded; first + " " + last when from two columns.
    pub name: String,
    /// Trimmed; `None` when empty.
    pub customer: Option<String>,
    pub customer_id: Option<i64>,
    /// Trimmed; `None` when empty.
    pub customer_reference: Option<String>,
    pub status: Option<AccessStatus>,
    /// The access user id to ask for.
    pub user_id: Option<i64>,
}

/// Why a row cannot be sent, worded for the person who fixes the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The header name of the offending column; `None` when it is the whole row.
    pub column: Option<String>,
    /// The offending value, trimmed (empty when the trouble is that it is missing).
    pub value: String,
    /// What is wrong and what to do; reads on its own.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why an input cannot be read. All but [`Error::Read`] come from [`open`], before a
/// single row: the caller stops with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing, is a directory, or cannot be read.
    #[error("{file}: cannot read the file: {source}")]
    Open {
        file: Arc<str>,
        #[source]
        source: io::Error,
    },
    /// The input is not a sheet at all: an image, an archive, binary data.
    #[error(
        "{file}: not a spreadsheet: it looks like {looks}; give a CSV, JSONL, XLSX or ODS file"
    )]
    NotASheet { file: Arc<str>, looks: String },
    /// A quoted CSV cell runs over many lines: most likely a closing quote is missing
    /// and the rows below were merged into it.
    #[error(
        "{file}:{first}-{last}: a quoted cell runs from line {first} to line {last} \
         ({bytes} bytes), so those lines would be read as one row; a closing quote (\") \
         is probably missing on line {first}: fix it, or pass --allow-multiline-fields \
         if the cell is meant to be that long"
    )]
    MultilineField {
        file: Arc<str>,
        first: u64,
        last: u64,
        bytes: usize,
    },
    /// The input holds nothing, or nothing but blank lines: there is no header.
    #[error("{file}: the file is empty: expected a header row and then one invitee a row")]
    Empty { file: Arc<str> },
    /// `encoding` is not a label encoding_rs can decode.
    #[error("{file}: unknown encoding \"{label}\": use utf-8, utf-16le, utf-16be or windows-1252")]
    UnknownEncoding { file: Arc<str>, label: String },
    /// The workbook is damaged, protected, or not a workbook at all.
    #[error("{file}: cannot read the workbook: {source}")]
    Workbook {
        file: Arc<str>,
        #[source]
        source: calamine::Error,
    },
    /// `sheet` names a sheet the workbook does not have.
    #[error(
        "{file}: there is no sheet \"{sheet}\"; the sheets are {}",
        quote_list(available)
    )]
    UnknownSheet {
        file: Arc<str>,
        sheet: String,
        available: Vec<String>,
    },
    /// No column is an e-mail column by name, and no `--map email=…` says which is.
    #[error(
        "{file}: no e-mail column among the columns found: {}; say which one it is, \
         e.g. --map email=\"{}\"",
        quote_list(found), printable(example.as_deref().unwrap_or("E-mail Address"))
    )]
    NoEmailColumn {
        file: Arc<str>,
        found: Vec<String>,
        /// The column most likely meant, for the hint.
        example: Option<String>,
    },
    /// No name column, and no first or last name column either.
    #[error(
        "{file}: no name column (nor first and last name columns) among the columns found: \
         {}; say which one it is, e.g. --map name=\"{}\", or --map first_name=… and \
         --map last_name=…",
        quote_list(found), printable(example.as_deref().unwrap_or("Full Name"))
    )]
    NoNameColumn {
        file: Arc<str>,
        found: Vec<String>,
        /// The column most likely meant, for the hint.
        example: Option<String>,
    },
    /// A `--map field=Column` names a column the header does not have.
    #[error(
        "{file}: --map {field}=\"{0}\": there is no column \"{0}\"; the columns \
         found are {1}",
        printable(column),
        quote_list(found)
    )]
    MissingMapColumn {
        file: Arc<str>,
        field: Field,
        column: String,
        found: Vec<String>,
    },
    /// A JSONL input whose first lines hold no JSON object to take the columns from.
    #[error(
        "{file}: line {line} is not a JSON object ({}); JSONL needs one object a line",
        printable(detail)
    )]
    NotJsonl {
        file: Arc<str>,
        line: u64,
        detail: String,
    },
    /// Reading failed partway (disk, pipe, network share); the rows before were
    /// delivered, the rest cannot be.
    #[error("{file}: reading stopped near line {line}: {source}")]
    Read {
        file: Arc<str>,
        line: u64,
        #[source]
        source: io::Error,
    },
}

/// Most header names an error message lists before it says "and N more".
const LISTED_COLUMNS: usize = 40;

fn quote_list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    let mut out: Vec<String> = names
        .iter()
        .take(LISTED_COLUMNS)
        .map(|n| format!("\"{}\"", printable(n)))
        .collect();
    if names.len() > LISTED_COLUMNS {
        out.push(format!("and {} more", names.len() - LISTED_COLUMNS));
    }
    out.join(", ")
}

/// `text` with every control character written as an escape (`\u{1b}`), so that no
/// message can move the cursor, ring the bell or recolour an operator's terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Opens an input and checks its header; `-` is stdin. Every failure here means
/// "nothing can be read from this file" (exit 2). Rows come from the [`Reader`].
pub fn open(path: &str, opts: &Options) -> Result<Reader, Error> {
    if path == "-" {
        return open_stream("<stdin>", io::stdin(), opts);
    }
    let file: Arc<str> = Arc::from(path);
    let named = opts.format.or_else(|| source::format_by_extension(path));
    if named == Some(Format::Sheet) {
        return xlsx::open_path(path, file, opts);
    }
    let source = Source::open(path, &file)?;
    refuse_non_sheets(&source, &file)?;
    let format = match (opts.format, source::sniff_format(&source.prefix)) {
        (Some(format), _) => format,
        // A workbook saved under a text name still reads as a workbook.
        (None, Format::Sheet) => Format::Sheet,
        (None, sniffed) => named.unwrap_or(sniffed),
    };
    match format {
        Format::Csv => {
            let reader = csv::open(source, file.clone(), opts)?;
            csv::check_multiline(path, &file, opts)?;
            Ok(reader)
        }
        Format::Jsonl => jsonl::open(source, file, opts),
        Format::Sheet => xlsx::open_path(path, file, opts),
    }
}

/// Refuses an input that is no sheet at all (an image, an archive, binary data).
fn refuse_non_sheets(source: &Source, file: &Arc<str>) -> Result<(), Error> {
    match source::not_a_sheet(&source.prefix) {
        Some(looks) => Err(Error::NotASheet {
            file: file.clone(),
            looks: looks.to_string(),
        }),
        None => Ok(()),
    }
}

/// Opens an input that is a stream rather than a file (what [`open`] does for `-`),
/// shown as `name` in records and messages. Without `opts.format` the content decides:
/// a workbook by its magic bytes, JSONL when it starts with `{`, else CSV. CSV and
/// JSONL stream; a workbook is buffered whole, as a zip must be.
pub fn open_stream(
    name: &str,
    reader: impl io::Read + Send + 'static,
    opts: &Options,
) -> Result<Reader, Error> {
    let file: Arc<str> = Arc::from(name);
    let source = Source::from_reader(Box::new(reader), &file)?;
    refuse_non_sheets(&source, &file)?;
    match opts
        .format
        .unwrap_or_else(|| source::sniff_format(&source.prefix))
    {
        Format::Csv => csv::open(source, file, opts),
        Format::Jsonl => jsonl::open(source, file, opts),
        Format::Sheet => xlsx::open_buffered(source, file, opts),
    }
}

/// Matches a header, failing the way [`open`] promises when a needed field is missing.
fn resolve_columns(
    file: &Arc<str>,
    names: Vec<String>,
    map: &[(Field, String)],
) -> Result<Columns, Error> {
    let (columns, missing) = Columns::assign(names, map);
    if let Some(i) = missing
        && let Some((field, column)) = map.get(i)
    {
        return Err(Error::MissingMapColumn {
            file: file.clone(),
            field: *field,
            column: column.clone(),
            found: columns.names,
        });
    }
    if !columns.has(Field::Email) {
        let example = columns.guess(Field::Email).map(str::to_string);
        return Err(Error::NoEmailColumn {
            file: file.clone(),
            found: columns.names,
            example,
        });
    }
    if ![Field::Name, Field::FirstName, Field::LastName]
        .into_iter()
        .any(|f| columns.has(f))
    {
        let example = columns.guess(Field::Name).map(str::to_string);
        return Err(Error::NoNameColumn {
            file: file.clone(),
            found: columns.names,
            example,
        });
    }
    Ok(columns)
}

/// Shapes one row's cells against the header and validates them. `None` when every
/// cell is blank: such a row is not a record at all.
///
/// Cells past the header are dropped when empty (spreadsheets pad rows); a row with
/// fewer cells, or more non-empty ones, is ragged and reported as such. The outcome
/// cells of a results sheet are dropped and its other cells unescaped first.
fn build_record(
    file: &Arc<str>,
    line: u64,
    columns: &Arc<Columns>,
    mut values: Vec<String>,
    mut problems: Vec<Problem>,
) -> Option<Record> {
    let width = columns.names.len();
    if columns.outcome > 0 {
        if values.len() > width {
            let end = values.len().min(width + columns.outcome);
            values.drain(width..end);
        }
        values.iter_mut().for_each(results::unescape);
    }
    if values.iter().all(|v| v.trim().is_empty()) {
        return None;
    }
    let used = values
        .iter()
        .rposition(|v| !v.trim().is_empty())
        .map_or(0, |i| i + 1);
    if values.len() > width && used <= width {
        values.truncate(width);
    }
    oversized_cells(columns, &values, &mut problems);
    let parsed = if values.len() != width {
        let have = if values.len() > width {
            used
        } else {
            values.len()
        };
        let ragged = Problem {
            column: None,
            value: String::new(),
            message: format!(
                "row has {have} cells, the header has {width}: a delimiter or quote is \
                 probably missing or extra in this row"
            ),
        };
        problems.insert(0, ragged);
        Err(problems)
    } else {
        match validate::validate(columns, &values) {
            Ok(inv) if problems.is_empty() => Ok(inv),
            Ok(_) => Err(problems),
            Err(mut more) => {
                // An error cell already explains why its column fails validation.
                more.retain(|p| {
                    p.column.is_none() || !problems.iter().any(|q| q.column == p.column)
                });
                problems.append(&mut more);
                Err(problems)
            }
        }
    };
    let parsed = parsed.map_err(|mut problems| {
        problems.iter_mut().for_each(Problem::make_printable);
        problems
    });
    let mut warnings = parsed
        .as_ref()
        .map_or_else(|_| Vec::new(), |who| validate::warnings(columns, who));
    warnings.iter_mut().for_each(Problem::make_printable);
    Some(Record {
        file: file.clone(),
        line,
        columns: columns.clone(),
        values,
        parsed,
        warnings,
    })
}

/// A problem for every cell larger than [`MAX_CELL_BYTES`], naming its column and size.
fn oversized_cells(columns: &Columns, values: &[String], problems: &mut Vec<Problem>) {
    for (i, value) in values.iter().enumerate() {
        if value.len() > MAX_CELL_BYTES {
            let column = columns
                .names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column {}", i + 1));
            problems.push(Problem {
                column: Some(column),
                value: String::new(),
                message: format!(
                    "the cell holds {} bytes, more than the {MAX_CELL_BYTES} a cell may \
                     hold: a quote is probably missing, or the column is not one to import",
                    value.len()
                ),
            });
        }
    }
}

impl Problem {
    /// Escapes control characters in the value and the message (see [`printable`]).
    fn make_printable(&mut self) {
        if let Cow::Owned(v) = printable(&self.value) {
            self.value = v;
        }
        if let Cow::Owned(m) = printable(&self.message) {
            self.message = m;
        }
        if let Some(Cow::Owned(c)) = self.column.as_deref().map(printable) {
            self.column = Some(c);
        }
    }
}

/// What a reader learned about its input as a whole, for the summary of a command:
/// shared with the caller, who keeps it while the reader is consumed.
#[derive(Debug, Default)]
pub struct Notes {
    file: Arc<str>,
    /// The legacy encoding the file was read as, when it was not Unicode.
    legacy: Mutex<Option<&'static str>>,
    rows: AtomicU64,
    mixed_scripts: AtomicU64,
}

impl Notes {
    fn new(file: &Arc<str>) -> Notes {
        Notes {
            file: file.clone(),
            ..Notes::default()
        }
    }

    /// Records that the input was decoded as a legacy (non-Unicode) encoding.
    fn set_legacy(&self, encoding: &'static str) {
        if let Ok(mut legacy) = self.legacy.lock() {
            *legacy = Some(encoding);
        }
    }

    fn count(&self, record: &Record) {
        self.rows.fetch_add(1, Ordering::Relaxed);
        if !record.warnings.is_empty() {
            self.mixed_scripts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the input ended with a header and not a single row (in cron, usually a
    /// truncated export).
    pub fn no_rows(&self) -> bool {
        self.rows.load(Ordering::Relaxed) == 0
    }

    /// One line for each thing the operator should know about the input as a whole.
    pub fn lines(&self) -> Vec<String> {
        let file = &self.file;
        let mut out = Vec::new();
        if let Some(enc) = self.legacy.lock().ok().and_then(|l| *l) {
            out.push(format!(
                "{file}: read as {enc} (not UTF-8 and no byte-order mark); if the names look \
                 wrong, name the encoding with --encoding"
            ));
        }
        let mixed = self.mixed_scripts.load(Ordering::Relaxed);
        if mixed > 0 {
            let rows = if mixed == 1 { "row has" } else { "rows have" };
            out.push(format!(
                "{file}: {mixed} {rows} an e-mail address that mixes scripts (e.g. a \
                 Cyrillic letter among Latin ones); see them with bbinvite validate"
            ));
        }
        if self.no_rows() {
            out.push(format!(
                "{file}: a header and no rows: nothing to read (a truncated export?)"
            ));
        }
        out
    }
}

/// The rows of one opened input. Yields `Ok(Record)` for every non-blank row, good or
/// bad; an `Err` only when reading itself fails, after which it yields nothing more.
pub struct Reader {
    file: Arc<str>,
    columns: Arc<Columns>,
    rows: Rows,
    done: bool,
    notes: Arc<Notes>,
    extent: Arc<Extent>,
}

enum Rows {
    Csv(csv::CsvRows),
    Jsonl(jsonl::JsonlRows),
    Sheet(xlsx::SheetRows),
}

impl Reader {
    fn new(file: Arc<str>, columns: Arc<Columns>, rows: Rows, extent: Extent) -> Reader {
        let notes = Arc::new(Notes::new(&file));
        Reader {
            file,
            columns,
            rows,
            done: false,
            notes,
            extent: Arc::new(extent),
        }
    }

    /// How far through its input the reader is, as it reads (for progress).
    pub fn extent(&self) -> Arc<Extent> {
        self.extent.clone()
    }

    /// What is learned about the input as it is read; complete once the reader is done.
    pub fn notes(&self) -> Arc<Notes> {
        self.notes.clone()
    }

    /// Display name of the input (`<stdin>` for `-`).
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// The header as found. For JSONL these are the keys seen so far: a later object
    /// with new keys appends them (its records carry the longer list).
    pub fn columns(&self) -> &Arc<Columns> {
        &self.columns
    }
}

impl Iterator for Reader {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match &mut self.rows {
            Rows::Csv(rows) => rows.next(),
            Rows::Jsonl(rows) => rows.next(),
            Rows::Sheet(rows) => rows.next(),
        };
        match &next {
            None | Some(Err(_)) => {
                self.done = true;
                self.extent.end();
            }
            Some(Ok(record)) => {
                self.extent.row();
                self.notes.count(record);
                if !Arc::ptr_eq(&record.columns, &self.columns)
                    && record.columns.names.len() > self.columns.names.len()
                {
                    self.columns = record.columns.clone();
                }
            }
        }
        next
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testutil {
    use super::*;
    use std::io::Write;

    /// Writes `bytes` to a temp file named `name` and opens it.
    pub fn open_bytes(
        name: &str,
        bytes: &[u8],
        opts: &Options,
    ) -> (tempfile::TempDir, Result<Reader, Error>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let reader = open(path.to_str().unwrap(), opts);
        (dir, reader)
    }

    /// Opens `bytes` as `name` and reads every record; panics on any error.
    pub fn read_all(name: &str, bytes: &[u8], opts: &Options) -> Vec<Record> {
        let (_dir, reader) = open_bytes(name, bytes, opts);
        reader.unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    }

    /// The path of a checked-in fixture.
    pub fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// Owned strings, as a header row holds them.
    pub fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The first valid invitee whose e-mail starts with `prefix`.
    pub fn invitee_starting<'a>(records: &'a [Record], prefix: &str) -> &'a Invitee {
        records
            .iter()
            .find_map(|r| {
                r.parsed
                    .as_ref()
                    .ok()
                    .filter(|i| i.email.starts_with(prefix))
            })
            .unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn reader_and_error_can_cross_threads() {
        fn assert_send<T: Send + 'static>() {}
        fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
        assert_send::<Reader>();
        assert_error::<Error>();
    }

    #[test]
    fn missing_file_is_an_open_error_naming_it() {
        let err = open("/nonexistent/invitees.csv", &Options::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Open { .. }));
        assert!(err.to_string().starts_with("/nonexistent/invitees.csv: "));
    }

    #[test]
    fn a_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path().to_str().unwrap(), &Options::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Open { .. }), "{err}");
    }

    #[test]
    fn empty_inputs_are_errors() {
        for (name, bytes) in [
            ("e.csv", &b""[..]),
            ("e.csv", b"\n\r\n  \n"),
            ("e.csv", b"\xEF\xBB\xBF"),
            ("e.csv", b",,,\n"),
            ("e.jsonl", b"\n\n"),
        ] {
            let (_d, r) = open_bytes(name, bytes, &Options::default());
            assert!(
                matches!(r, Err(Error::Empty { .. })),
                "{bytes:?}: {:?}",
                r.err()
            );
        }
    }

    #[test]
    fn no_email_column_lists_the_columns_and_how_to_map() {
        let (_d, r) = open_bytes(
            "x.csv",
            b"Contact;Mail Adr;Full Name\n",
            &Options::default(),
        );
        let err = r.err().unwrap();
        assert!(matches!(err, Error::NoEmailColumn { .. }));
        let msg = err.to_string();
        assert!(msg.contains("x.csv: no e-mail column"), "{msg}");
        assert!(
            msg.contains("\"Contact\", \"Mail Adr\", \"Full Name\""),
            "{msg}"
        );
        assert!(msg.contains("--map email=\"Mail Adr\""), "{msg}");
    }

    #[test]
    fn no_name_column_is_an_error() {
        let (_d, r) = open_bytes("x.csv", b"Email,Username,Company\n", &Options::default());
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("no name column"), "{msg}");
        assert!(msg.contains("--map name=\"Username\""), "{msg}");
    }

    #[test]
    fn map_overrides_aliases() {
        let opts = Options {
            map: vec![
                (Field::Email, "work-mail".to_string()),
                (Field::Name, "Who".to_string()),
            ],
            ..Options::default()
        };
        let recs = read_all(
            "m.csv",
            b"Email,Work Mail,Who\nold@example.com,new@example.com,Ann\n",
            &opts,
        );
        let inv = recs[0].parsed.as_ref().unwrap();
        assert_eq!(inv.email, "new@example.com");
        assert_eq!(inv.name, "Ann");
        assert_eq!(recs[0].columns.name_of(Field::Email), Some("Work Mail"));
    }

    #[test]
    fn map_to_a_missing_column_is_an_error() {
        let opts = Options {
            map: vec![(Field::Email, "E-mail Address".to_string())],
            ..Options::default()
        };
        let (_d, r) = open_bytes("m.csv", b"Email,Name\n", &opts);
        let err = r.err().unwrap();
        assert!(matches!(err, Error::MissingMapColumn { .. }));
        assert!(err.to_string().ends_with(
            "m.csv: --map email=\"E-mail Address\": there is no column \"E-mail Address\"; \
             the columns found are \"Email\", \"Name\""
        ));
    }

    #[test]
    fn unknown_encoding_is_an_error() {
        let opts = Options {
            encoding: Some("ebcdic-klingon".to_string()),
            ..Options::default()
        };
        let (_d, r) = open_bytes("x.csv", b"email,name\n", &opts);
        assert!(matches!(r, Err(Error::UnknownEncoding { .. })));
    }

    #[test]
    fn problems_display_with_their_column() {
        let p = Problem {
            column: Some("E-mail".to_string()),
            value: "x".to_string(),
            message: "bad".to_string(),
        };
        assert_eq!(p.to_string(), "E-mail: bad");
        let p = Problem { column: None, ..p };
        assert_eq!(p.to_string(), "bad");
    }

    #[test]
    fn format_comes_from_content_when_the_name_says_nothing() {
        let recs = read_all(
            "data.dat",
            b"{\"email\":\"a@example.com\",\"name\":\"A\"}\n",
            &Options::default(),
        );
        assert_eq!(recs.len(), 1);
        assert!(recs[0].parsed.is_ok());
        let recs = read_all(
            "data.dat",
            b"email|name\na@example.com|A\n",
            &Options::default(),
        );
        assert!(recs[0].parsed.is_ok());
    }

    #[test]
    fn streams_sniff_their_format() {
        let read = |bytes: &'static [u8]| -> Vec<Record> {
            open_stream("<stdin>", bytes, &Options::default())
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let recs = read(b"  {\"email\":\"a@example.com\",\"name\":\"A\"}\n");
        assert_eq!(&*recs[0].file, "<stdin>");
        assert_eq!(recs[0].columns.names, ["email", "name"]);
        let recs = read(b"email;name\na@example.com;A\n");
        assert_eq!(recs[0].values, ["a@example.com", "A"]);
        let recs = read(b"\xFF\xFEe\0m\0a\0i\0l\0\t\0n\0a\0m\0e\0\n\0x\0@\0e\0.\0c\0o\0\t\0X\0");
        assert_eq!(recs[0].values, ["x@e.co", "X"]);
        let xlsx = std::fs::read(fixture("invitees.xlsx")).unwrap();
        let recs: Vec<Record> = open_stream("<stdin>", io::Cursor::new(xlsx), &Options::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[0].get(Field::CustomerId), Some("1001"));
    }

    #[test]
    fn an_empty_stream_is_an_error() {
        let err = open_stream("<stdin>", io::empty(), &Options::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "<stdin>: the file is empty: expected a header row and then one invitee a row"
        );
    }

    #[test]
    fn a_given_format_wins_over_the_name() {
        let opts = Options {
            format: Some(Format::Jsonl),
            ..Options::default()
        };
        let recs = read_all(
            "x.csv",
            b"{\"email\":\"a@example.com\",\"name\":\"A\"}\n",
            &opts,
        );
        assert!(recs[0].parsed.is_ok());
    }

    #[test]
    fn a_workbook_under_a_csv_name_reads_as_a_workbook() {
        let xlsx = std::fs::read(fixture("invitees.xlsx")).unwrap();
        let recs = read_all("export.csv", &xlsx, &Options::default());
        assert_eq!(recs.len(), 5);
    }

    /// A million generated rows stream through in constant memory. Slow in a debug
    /// build, so run on demand: `cargo test --lib million -- --ignored`.
    #[test]
    #[ignore]
    fn a_million_rows_stream() {
        struct Rows {
            next: u64,
            pending: Vec<u8>,
        }
        impl io::Read for Rows {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                while self.pending.len() < buf.len() && self.next < 1_000_000 {
                    let n = self.next;
                    self.next += 1;
                    let row = format!("user{n}@example.com,User {n},Customer {}\n", n % 977);
                    self.pending.extend_from_slice(row.as_bytes());
                }
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending.drain(..n);
                Ok(n)
            }
        }
        let rows = Rows {
            next: 0,
            pending: b"E-mail,Name,Company\n".to_vec(),
        };
        let reader = open_stream("gen.csv", rows, &Options::default()).unwrap();
        let mut count = 0u64;
        let mut last = 0;
        for record in reader {
            let record = record.unwrap();
            assert!(record.parsed.is_ok());
            last = record.line;
            count += 1;
        }
        assert_eq!(count, 1_000_000);
        assert_eq!(last, 1_000_001);
    }

    #[test]
    fn record_get_reads_a_field_cell() {
        let recs = read_all(
            "g.csv",
            b"Name,E-mail\nAnn,ann@example.com\n",
            &Options::default(),
        );
        assert_eq!(recs[0].get(Field::Email), Some("ann@example.com"));
        assert_eq!(recs[0].get(Field::Customer), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod prop {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::{
        Just, ProptestConfig, Strategy, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };

    const HEADER: [&str; 4] = ["email", "name", "customer", "extra"];

    /// Opens `bytes` and drains it; any outcome but a panic is fine.
    fn drain(name: &str, bytes: &[u8], opts: &Options) {
        let (_dir, reader) = open_bytes(name, bytes, opts);
        if let Ok(reader) = reader {
            for record in reader.flatten() {
                let _ = record.parsed.map(|inv| inv.email.len());
            }
        }
    }

    /// Arbitrary bytes with a good chance of the characters that matter to a CSV.
    fn csvish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => any::<u8>(),
            2 => proptest::sample::select(b",;\t|\"\r\n @.{}[]:".to_vec()),
            1 => proptest::sample::select(b"emailnameEMAILNAME".to_vec()),
        ];
        proptest::collection::vec(byte, 0..400)
    }

    fn table() -> impl Strategy<Value = Vec<Vec<String>>> {
        let cell = prop_oneof![
            3 => any::<String>(),
            2 => "[a-z ,;\"\r\n|\t]{0,8}",
            1 => Just(String::new()),
        ];
        proptest::collection::vec(proptest::collection::vec(cell, 4), 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn csv_reader_never_panics(bytes in csvish()) {
            drain("fuzz.csv", &bytes, &Options::default());
            let mut with_header = b"email,name\n".to_vec();
            with_header.extend_from_slice(&bytes);
            drain("fuzz.csv", &with_header, &Options::default());
        }

        #[test]
        fn csv_reader_never_panics_in_other_encodings(
            bytes in csvish(),
            label in proptest::sample::select(vec!["utf-16le", "utf-16be", "windows-1252", "utf-8"]),
        ) {
            let opts = Options { encoding: Some(label.to_string()), ..Options::default() };
            drain("fuzz.csv", &bytes, &opts);
        }

        #[test]
        fn jsonl_reader_never_panics(bytes in csvish()) {
            drain("fuzz.jsonl", &bytes, &Options::default());
            let mut with_object = b"{\"email\":\"a@b.co\",\"name\":\"A\"}\n".to_vec();
            with_object.extend_from_slice(&bytes);
            drain("fuzz.jsonl", &with_object, &Options::default());
        }

        #[test]
        fn csv_written_by_the_csv_crate_reads_back(rows in table()) {
            let mut writer = ::csv::Writer::from_writer(Vec::new());
            writer.write_record(HEADER).unwrap();
            for row in &rows {
                writer.write_record(row).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let records = read_all("round.csv", &bytes, &Options::default());

            let mut expected = Vec::new();
            let mut line = 2u64;
            for row in &rows {
                if !row.iter().all(|c| c.trim().is_empty()) {
                    expected.push((line, row.clone()));
                }
                line += 1 + row.iter().map(|c| line_breaks(c)).sum::<u64>();
            }
            prop_assert_eq!(records.len(), expected.len());
            for (record, (line, row)) in records.iter().zip(&expected) {
                prop_assert_eq!(&record.values, row);
                prop_assert_eq!(&record.columns.names, &HEADER);
                // Exact even when cells hold line breaks: the record's first line.
                prop_assert_eq!(record.line, *line);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A results sheet as `--results` and `export` write it (each cell escaped,
        /// the outcome block after the input's columns) reads back as its input.
        #[test]
        fn a_results_sheet_reads_back_as_its_input(
            rows in table(),
            outcome in proptest::collection::vec("[-=+@' a-z0-9]{0,6}", 6),
        ) {
            let mut writer = ::csv::Writer::from_writer(Vec::new());
            let header = HEADER.iter().map(|c| escape_cell(c)).chain(RESULTS_COLUMNS.map(String::from));
            writer.write_record(header).unwrap();
            for row in &rows {
                let cells = row.iter().chain(&outcome).map(|c| escape_cell(c));
                writer.write_record(cells).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let records = read_all("results.csv", &bytes, &Options::default());
            let expected: Vec<&Vec<String>> = rows
                .iter()
                .filter(|row| !row.iter().all(|c| c.trim().is_empty()))
                .collect();
            prop_assert_eq!(records.len(), expected.len());
            for (record, row) in records.iter().zip(expected) {
                prop_assert_eq!(&record.columns.names, &HEADER);
                prop_assert_eq!(&record.values, row);
            }
        }

        /// The cells' JSON is `serde_json`'s to the byte: the hash of it stored by an
        /// earlier release must match the hash taken now.
        #[test]
        fn cells_json_is_what_serde_json_writes(
            values in proptest::collection::vec("(\\PC|[\\x00-\\x1F\"\\\\\u{7f}\u{2028}])*", 0..6),
        ) {
            let record = Record {
                file: Arc::from("x.csv"),
                line: 2,
                columns: Arc::new(Columns::assign(Vec::new(), &[]).0),
                values: values.clone(),
                parsed: Err(Vec::new()),
                warnings: Vec::new(),
            };
            prop_assert_eq!(record.cells_json(), serde_json::to_string(&values).unwrap());
        }

        #[test]
        fn jsonl_written_by_serde_json_reads_back(rows in table()) {
            let mut text = String::new();
            for row in &rows {
                let object: serde_json::Map<String, serde_json::Value> = HEADER
                    .iter()
                    .zip(row)
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                    .collect();
                text.push_str(&serde_json::Value::Object(object).to_string());
                text.push('\n');
            }
            let (_dir, reader) = open_bytes("round.jsonl", text.as_bytes(), &Options::default());
            if rows.is_empty() {
                let empty = matches!(reader, Err(Error::Empty { .. }));
                prop_assert!(empty, "an empty JSONL file must not open");
                return Ok(());
            }
            let records: Vec<Record> = reader.unwrap().map(Result::unwrap).collect();
            let expected: Vec<(u64, &Vec<String>)> = (1u64..)
                .zip(&rows)
                .filter(|(_, row)| !row.iter().all(|c| c.trim().is_empty()))
                .collect();
            prop_assert_eq!(records.len(), expected.len());
            for (record, (line, row)) in records.iter().zip(expected) {
                prop_assert_eq!(&record.values, row);
                prop_assert_eq!(record.line, line);
            }
        }
    }

    /// Line breaks as the reader counts them: `\r\n`, `\n`, or a lone `\r`.
    fn line_breaks(s: &str) -> u64 {
        s.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64
    }
}
