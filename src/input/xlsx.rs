//! Workbooks (XLSX, XLSM, XLS, XLSB, ODS) through calamine: one sheet, its first
//! non-empty row the header, each later non-empty row a [`Record`] numbered as the
//! spreadsheet numbers it.
//!
//! calamine loads the sheet whole; that is the one input allowed to sit in memory.
//! Cells become the text a person sees in the sheet (`42`, not `42.0`; dates as ISO
//! 8601), never a float artefact. An error cell is a problem of its row, not a failure.

use std::io::Cursor;
use std::sync::Arc;

use calamine::{
    Data, ExcelDateTime, Range, Reader as _, Sheets, open_workbook_auto, open_workbook_auto_from_rs,
};

use super::extent::Extent;
use super::source::Source;
use super::{
    Columns, Error, Options, Problem, Reader, Record, Rows, build_record, resolve_columns,
};

/// Floats at or beyond this size print as floats, not integers: past 2^53 an f64 no
/// longer holds every integer exactly.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// The rows after the header.
pub(crate) struct SheetRows {
    file: Arc<str>,
    columns: Arc<Columns>,
    range: Range<Data>,
    /// The sheet's own 0-based row number of the range's first row.
    first_row: u64,
    next: usize,
}

/// Opens a workbook file.
pub(crate) fn open_path(path: &str, file: Arc<str>, opts: &Options) -> Result<Reader, Error> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Open { file, source });
    }
    match open_workbook_auto(path) {
        Ok(book) => open_book(book, file, opts),
        Err(source) => Err(Error::Workbook { file, source }),
    }
}

/// Reads a workbook from a stream. It has to be buffered whole: a zip is read from its
/// end.
pub(crate) fn open_buffered(
    source: Source,
    file: Arc<str>,
    opts: &Options,
) -> Result<Reader, Error> {
    let mut bytes = Vec::new();
    let mut reader = source.into_reader();
    if let Err(source) = std::io::Read::read_to_end(&mut reader, &mut bytes) {
        return Err(Error::Open { file, source });
    }
    match open_workbook_auto_from_rs(Cursor::new(bytes)) {
        Ok(book) => open_book(book, file, opts),
        Err(source) => Err(Error::Workbook { file, source }),
    }
}

fn open_book<RS>(mut book: Sheets<RS>, file: Arc<str>, opts: &Options) -> Result<Reader, Error>
where
    RS: std::io::Read + std::io::Seek,
{
    let names = book.sheet_names();
    let sheet = match &opts.sheet {
        None => names
            .first()
            .cloned()
            .ok_or(Error::Empty { file: file.clone() })?,
        Some(wanted) => names
            .iter()
            .find(|n| *n == wanted)
            .or_else(|| {
                names
                    .iter()
                    .find(|n| n.trim().eq_ignore_ascii_case(wanted.trim()))
            })
            .cloned()
            .ok_or_else(|| Error::UnknownSheet {
                file: file.clone(),
                sheet: wanted.clone(),
                available: names.clone(),
            })?,
    };
    let range = book
        .worksheet_range(&sheet)
        .map_err(|source| Error::Workbook {
            file: file.clone(),
            source,
        })?;
    let first_row = range.start().map_or(0, |(row, _)| u64::from(row));

    let mut next = 0;
    let header = loop {
        if next >= range.height() {
            return Err(Error::Empty { file });
        }
        let (cells, _) = row_text(&range, next);
        next += 1;
        if cells.iter().any(|c| !c.trim().is_empty()) {
            break cells;
        }
    };
    let mut names = header;
    while names.last().is_some_and(|n| n.trim().is_empty()) {
        names.pop();
    }
    let columns = Arc::new(resolve_columns(&file, names, &opts.map)?);
    let extent = Extent::of_rows(filled_rows(&range, next));
    let rows = SheetRows {
        file: file.clone(),
        columns: columns.clone(),
        range,
        first_row,
        next,
    };
    Ok(Reader::new(file, columns, Rows::Sheet(rows), extent))
}

/// The rows from `first` on with a cell that is not blank: the rows the sheet yields.
fn filled_rows(range: &Range<Data>, first: usize) -> u64 {
    let blank = |cell: &Data| match cell {
        Data::Empty => true,
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.trim().is_empty(),
        _ => false,
    };
    range
        .rows()
        .skip(first)
        .filter(|row| !row.iter().all(blank))
        .count() as u64
}

impl SheetRows {
    pub(crate) fn next(&mut self) -> Option<Result<Record, Error>> {
        while self.next < self.range.height() {
            let index = self.next;
            self.next += 1;
            let (values, errors) = row_text(&self.range, index);
            let problems = errors
                .into_iter()
                .map(|(col, text)| Problem {
                    column: self.columns.names.get(col).cloned(),
                    value: text.clone(),
                    message: format!(
                        "the cell holds the spreadsheet error {text}: fix the formula or type \
                         the value in"
                    ),
                })
                .collect();
            let line = self.first_row + index as u64 + 1;
            if let Some(record) = build_record(&self.file, line, &self.columns, values, problems) {
                return Some(Ok(record));
            }
        }
        None
    }
}

/// The text of every cell of a range row, and which columns hold error cells.
fn row_text(range: &Range<Data>, row: usize) -> (Vec<String>, Vec<(usize, String)>) {
    let mut errors = Vec::new();
    let cells = (0..range.width())
        .map(|col| {
            let cell = range.get((row, col)).unwrap_or(&Data::Empty);
            let text = cell_text(cell);
            if matches!(cell, Data::Error(_)) {
                errors.push((col, text.clone()));
            }
            text
        })
        .collect();
    (cells, errors)
}

/// A cell as the person who typed it would write it.
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => float_text(*f),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => datetime_text(dt),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => e.to_string(),
    }
}

/// `42` for an integral float, the shortest round-trip text otherwise.
fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < EXACT_INTEGER_LIMIT {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// ISO 8601: a date alone when there is no time of day, else date and time; a
/// duration as `PT…`.
fn datetime_text(dt: &ExcelDateTime) -> String {
    if dt.is_duration() {
        let total_ms = (dt.as_f64() * 86_400_000.0).round() as i64;
        let sign = if total_ms < 0 { "-" } else { "" };
        let ms = total_ms.unsigned_abs();
        let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        return if milli == 0 {
            format!("{sign}PT{h}H{m}M{s}S")
        } else {
            format!("{sign}PT{h}H{m}M{s}.{milli:03}S")
        };
    }
    let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
    if (h, mi, s, ms) == (0, 0, 0, 0) {
        format!("{y:04}-{mo:02}-{d:02}")
    } else if ms == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{fixture, invitee_starting};
    use super::super::{Field, Options, open};
    use super::*;
    use calamine::{CellErrorType, ExcelDateTimeType};

    fn read(name: &str, opts: &Options) -> Vec<Record> {
        open(&fixture(name), opts)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn cells_read_as_people_write_them() {
        assert_eq!(cell_text(&Data::Float(42.0)), "42");
        assert_eq!(cell_text(&Data::Float(-3.0)), "-3");
        assert_eq!(cell_text(&Data::Float(0.1)), "0.1");
        assert_eq!(cell_text(&Data::Float(1.5e20)), "150000000000000000000");
        assert_eq!(cell_text(&Data::Float(f64::NAN)), "NaN");
        assert_eq!(cell_text(&Data::Int(7)), "7");
        assert_eq!(cell_text(&Data::Bool(true)), "true");
        assert_eq!(cell_text(&Data::Error(CellErrorType::NA)), "#N/A");
        let date = ExcelDateTime::new(45_717.0, ExcelDateTimeType::DateTime, false);
        assert_eq!(cell_text(&Data::DateTime(date)), "2025-03-01");
        let datetime = ExcelDateTime::new(45_717.5, ExcelDateTimeType::DateTime, false);
        assert_eq!(cell_text(&Data::DateTime(datetime)), "2025-03-01T12:00:00");
        let duration = ExcelDateTime::new(1.5 / 24.0, ExcelDateTimeType::TimeDelta, false);
        assert_eq!(cell_text(&Data::DateTime(duration)), "PT1H30M0S");
    }

    fn check_fixture(recs: &[Record]) {
        assert!(recs.len() >= 4, "{recs:?}");
        let ann = recs[0].parsed.as_ref().unwrap();
        assert_eq!(ann.email, "ann.lee@example.com");
        assert_eq!(ann.customer_id, Some(1001));
        assert_eq!(recs[0].line, 2);
        let idx = |name: &str| {
            recs[0]
                .columns
                .names
                .iter()
                .position(|n| n == name)
                .unwrap()
        };
        assert_eq!(recs[0].values[idx("Customer ID")], "1001");
        assert_eq!(recs[0].values[idx("Invited On")], "2025-03-01");
        assert_eq!(
            recs[0].columns.name_of(Field::Email),
            Some("E-mail Address")
        );
        let zoe = invitee_starting(recs, "zoe");
        assert_eq!(zoe.name, "Zoë Dubois");
        assert_eq!(zoe.customer.as_deref(), Some("Café Société"));
    }

    #[test]
    fn a_workbook_knows_its_rows_before_they_are_read() {
        for name in ["invitees.xlsx", "invitees.ods"] {
            let reader = open(&fixture(name), &Options::default()).unwrap();
            let extent = [reader.extent()];
            let before = super::super::rows_total(&extent);
            let rows = reader.count() as u64;
            assert_eq!(before, super::super::RowsTotal::Exact(rows), "{name}");
        }
    }

    #[test]
    fn reads_the_xlsx_fixture() {
        check_fixture(&read("invitees.xlsx", &Options::default()));
    }

    #[test]
    fn reads_the_ods_fixture() {
        check_fixture(&read("invitees.ods", &Options::default()));
    }

    #[test]
    fn picks_a_sheet_by_name() {
        let opts = Options {
            sheet: Some("invitees".to_string()),
            ..Options::default()
        };
        check_fixture(&read("invitees.xlsx", &opts));
        let opts = Options {
            sheet: Some("Nope".to_string()),
            ..Options::default()
        };
        let err = open(&fixture("invitees.xlsx"), &opts).err().unwrap();
        assert!(matches!(err, Error::UnknownSheet { .. }), "{err}");
        assert!(err.to_string().contains("\"Invitees\""), "{err}");
    }

    #[test]
    fn error_cells_are_problems_and_rows_keep_their_sheet_numbers() {
        let mut range = Range::new((3, 1), (7, 4));
        let header = ["Email", "Name", "Customer ID", "Joined"];
        for (col, name) in header.iter().enumerate() {
            range.set_value((3, 1 + col as u32), Data::String(name.to_string()));
        }
        range.set_value((4, 1), Data::String("a@example.com".to_string()));
        range.set_value((4, 2), Data::String("Ann".to_string()));
        range.set_value((4, 3), Data::Error(CellErrorType::Ref));
        // Row 6 (index 5) stays empty and is skipped.
        range.set_value((6, 1), Data::String("b@example.com".to_string()));
        range.set_value((6, 2), Data::String("Bob".to_string()));
        range.set_value((6, 3), Data::Float(1002.0));
        range.set_value((7, 5), Data::String("stray".to_string()));

        let file: Arc<str> = Arc::from("t.xlsx");
        let names = header.iter().map(|s| s.to_string()).collect();
        let columns = Arc::new(super::super::resolve_columns(&file, names, &[]).unwrap());
        let mut rows = SheetRows {
            file,
            columns,
            range,
            first_row: 3,
            next: 1,
        };
        let first = rows.next().unwrap().unwrap();
        assert_eq!(first.line, 5);
        let problems = first.parsed.unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].column.as_deref(), Some("Customer ID"));
        assert_eq!(problems[0].value, "#REF!");
        assert_eq!(
            problems[0].to_string(),
            "Customer ID: the cell holds the spreadsheet error #REF!: fix the formula or \
             type the value in"
        );
        let second = rows.next().unwrap().unwrap();
        assert_eq!(second.line, 7);
        assert_eq!(second.parsed.unwrap().customer_id, Some(1002));
        let stray = rows.next().unwrap().unwrap();
        assert_eq!(stray.line, 8);
        assert!(
            stray.parsed.unwrap_err()[0]
                .message
                .starts_with("row has 5 cells")
        );
        assert!(rows.next().is_none());
    }

    #[test]
    fn a_broken_workbook_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.xlsx");
        std::fs::write(&path, b"PK\x03\x04 not really a zip").unwrap();
        let err = open(path.to_str().unwrap(), &Options::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Workbook { .. }), "{err}");
        let err = open("/nonexistent/x.xlsx", &Options::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Open { .. }), "{err}");
    }
}
