//! JSON Lines: one object a line, its keys the columns (those of the first object, in
//! order, and any new key appended when a later object brings one).
//!
//! Reads one line at a time: it must never hold more than a line (plus the few lines
//! it looks ahead for the first object). A line that is not an object is a record with
//! a problem, never the end of the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::source::{self, Source};
use super::{
    Columns, Error, Options, Problem, Reader, Record, Rows, build_record, resolve_columns,
};

/// How many non-blank lines may come before the first object. Beyond that the input is
/// not JSONL, and buffering more would break the constant-memory promise.
const LOOKAHEAD_LINES: usize = 100;

/// Longest stretch of a broken line repeated in its problem's `value` (the record's
/// `values` keep it whole).
const SHOWN_CHARS: usize = 200;

/// The lines after the first object.
pub(crate) struct JsonlRows {
    file: Arc<str>,
    columns: Arc<Columns>,
    map: Vec<(super::Field, String)>,
    /// Where each key's value goes in `values`.
    slots: HashMap<String, usize>,
    lines: BufReader<Box<dyn Read + Send>>,
    line: u64,
    buf: Vec<u8>,
    /// Lines read while looking for the first object, still to be handed out.
    pending: std::collections::VecDeque<(u64, Parsed)>,
}

/// One non-blank line, understood.
enum Parsed {
    Object(Map<String, Value>),
    /// The raw line and why it is not an object.
    Broken(String, String),
}

/// Reads up to the first object, whose keys become the columns, and checks them.
pub(crate) fn open(source: Source, file: Arc<str>, opts: &Options) -> Result<Reader, Error> {
    let encoding = source::encoding(&source.prefix, opts.encoding.as_deref(), &file)?;
    let extent = source.extent();
    let decoded: Box<dyn Read + Send> = Box::new(source.decode(encoding));
    let mut rows = JsonlRows {
        file: file.clone(),
        columns: Arc::new(Columns::assign(Vec::new(), &[]).0),
        map: opts.map.clone(),
        slots: HashMap::new(),
        lines: BufReader::new(decoded),
        line: 0,
        buf: Vec::new(),
        pending: std::collections::VecDeque::new(),
    };

    let first = loop {
        let Some(next) = rows.next_line() else {
            return Err(match rows.pending.front() {
                None => Error::Empty { file },
                Some((line, parsed)) => not_jsonl(&file, *line, parsed),
            });
        };
        let (line, parsed) = next?;
        let found = match &parsed {
            Parsed::Object(object) => Some(object.keys().cloned().collect::<Vec<_>>()),
            Parsed::Broken(..) => None,
        };
        rows.pending.push_back((line, parsed));
        if let Some(keys) = found {
            break keys;
        }
        if rows.pending.len() >= LOOKAHEAD_LINES {
            let (line, parsed) = &rows.pending[0];
            return Err(not_jsonl(&file, *line, parsed));
        }
    };

    rows.slots = first
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    rows.columns = Arc::new(resolve_columns(&file, first, &opts.map)?);
    let columns = rows.columns.clone();
    Ok(Reader::new(file, columns, Rows::Jsonl(rows), extent))
}

fn not_jsonl(file: &Arc<str>, line: u64, parsed: &Parsed) -> Error {
    let detail = match parsed {
        Parsed::Broken(_, why) => why.clone(),
        Parsed::Object(_) => String::new(),
    };
    Error::NotJsonl {
        file: file.clone(),
        line,
        detail,
    }
}

impl JsonlRows {
    pub(crate) fn next(&mut self) -> Option<Result<Record, Error>> {
        loop {
            let (line, parsed) = match self.pending.pop_front() {
                Some(p) => p,
                None => match self.next_line()? {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                },
            };
            if let Some(record) = self.record(line, parsed) {
                return Some(Ok(record));
            }
        }
    }

    /// The next non-blank line, parsed; `None` at the end.
    fn next_line(&mut self) -> Option<Result<(u64, Parsed), Error>> {
        loop {
            self.buf.clear();
            match self.lines.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => self.line += 1,
                Err(source) => {
                    return Some(Err(Error::Read {
                        file: self.file.clone(),
                        line: self.line + 1,
                        source,
                    }));
                }
            }
            let text = String::from_utf8_lossy(&self.buf);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let parsed = match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(object)) => Parsed::Object(object),
                Ok(other) => Parsed::Broken(text.to_string(), format!("it is {}", kind_of(&other))),
                Err(e) => Parsed::Broken(text.to_string(), json_error(&e)),
            };
            return Some(Ok((self.line, parsed)));
        }
    }

    fn record(&mut self, line: u64, parsed: Parsed) -> Option<Record> {
        match parsed {
            Parsed::Object(object) => {
                self.add_new_keys(&object);
                let mut values = vec![String::new(); self.columns.names.len()];
                for (key, value) in object {
                    if let Some(&i) = self.slots.get(&key)
                        && let Some(slot) = values.get_mut(i)
                    {
                        *slot = text_of(value);
                    }
                }
                build_record(&self.file, line, &self.columns, values, Vec::new())
            }
            Parsed::Broken(raw, why) => {
                let shown: String = raw.chars().take(SHOWN_CHARS).collect();
                let shown = super::printable(&shown).into_owned();
                Some(Record {
                    file: self.file.clone(),
                    line,
                    columns: self.columns.clone(),
                    values: vec![raw],
                    parsed: Err(vec![Problem {
                        column: None,
                        value: shown,
                        message: format!(
                            "line is not a JSON object: {why}; write one {{\"email\": …, \
                             \"name\": …}} object on each line"
                        ),
                    }]),
                    warnings: Vec::new(),
                })
            }
        }
    }

    /// Appends keys never seen before to a new, longer header shared from here on.
    fn add_new_keys(&mut self, object: &Map<String, Value>) {
        let new: Vec<&String> = object
            .keys()
            .filter(|k| !self.slots.contains_key(*k))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut names = self.columns.names.clone();
        for key in new {
            self.slots.insert(key.clone(), names.len());
            names.push(key.clone());
        }
        // The map's columns were all in the first object, so nothing can be missing.
        self.columns = Arc::new(Columns::assign(names, &self.map).0);
    }
}

/// serde_json's message without its "at line 1" (the line is the record's).
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(what) => format!("{what} (at character {})", e.column()),
        None => message,
    }
}

/// A JSON value as the text of a cell.
fn text_of(value: Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        nested @ (Value::Array(_) | Value::Object(_)) => nested.to_string(),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Field, Options};
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn objects_become_records_in_key_order() {
        let text = r#"{"email":"a@example.com","name":"Ann","customer_id":42,"vip":true,"tags":["x"],"note":null}
{"name":"Bob","email":"b@example.com","customer_id":7.0,"vip":false}
"#;
        let recs = read_all("x.jsonl", text.as_bytes(), &opts());
        assert_eq!(
            recs[0].columns.names,
            ["email", "name", "customer_id", "vip", "tags", "note"]
        );
        assert_eq!(
            recs[0].values,
            ["a@example.com", "Ann", "42", "true", "[\"x\"]", ""]
        );
        assert_eq!(
            recs[1].values,
            ["b@example.com", "Bob", "7.0", "false", "", ""]
        );
        assert_eq!(recs[1].parsed.as_ref().unwrap().customer_id, Some(7));
        assert_eq!(recs[0].line, 1);
        assert_eq!(recs[1].line, 2);
    }

    #[test]
    fn a_broken_line_is_a_record_and_the_run_goes_on() {
        let text = "{\"email\":\"a@example.com\",\"name\":\"Ann\"}\n\
                    \n\
                    {\"email\": \"b@example.com\", \"name\": \n\
                    [1,2]\n\
                    {\"email\":\"c@example.com\",\"name\":\"Cy\"}\n";
        let recs = read_all("b.jsonl", text.as_bytes(), &opts());
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 3, 4, 5]
        );
        let broken = recs[1].parsed.as_ref().unwrap_err();
        assert!(
            broken[0]
                .message
                .starts_with("line is not a JSON object: EOF while parsing"),
            "{broken:?}"
        );
        assert_eq!(recs[1].values, ["{\"email\": \"b@example.com\", \"name\":"]);
        let array = recs[2].parsed.as_ref().unwrap_err();
        assert!(array[0].message.contains("it is an array"));
        assert!(recs[3].parsed.is_ok());
    }

    #[test]
    fn broken_lines_before_the_first_object_are_kept() {
        let text = "not json\n{\"email\":\"a@example.com\",\"name\":\"Ann\"}\n";
        let recs = read_all("b.jsonl", text.as_bytes(), &opts());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].line, 1);
        assert!(recs[0].parsed.is_err());
        assert_eq!(recs[0].columns.names, ["email", "name"]);
    }

    #[test]
    fn no_object_at_all_is_not_jsonl() {
        let (_d, r) = open_bytes("n.jsonl", b"email,name\na,b\n", &opts());
        let err = r.err().unwrap();
        assert!(matches!(err, Error::NotJsonl { line: 1, .. }), "{err}");
        let mut many = String::new();
        for _ in 0..LOOKAHEAD_LINES + 5 {
            many.push_str("[]\n");
        }
        many.push_str("{\"email\":\"a@example.com\",\"name\":\"A\"}\n");
        let (_d, r) = open_bytes("n.jsonl", many.as_bytes(), &opts());
        assert!(matches!(r, Err(Error::NotJsonl { .. })));
    }

    #[test]
    fn later_keys_extend_the_columns() {
        let text = "{\"email\":\"a@example.com\",\"first\":\"Ann\"}\n\
                    {\"email\":\"b@example.com\",\"first\":\"Bob\",\"last\":\"Ray\",\"Company\":\"Acme\"}\n\
                    {\"email\":\"c@example.com\",\"first\":\"Cy\"}\n";
        let (_d, r) = open_bytes("e.jsonl", text.as_bytes(), &opts());
        let mut reader = r.unwrap();
        let first = reader.next().unwrap().unwrap();
        assert_eq!(first.columns.names, ["email", "first"]);
        assert_eq!(first.values.len(), 2);
        let second = reader.next().unwrap().unwrap();
        assert_eq!(second.columns.names, ["email", "first", "last", "Company"]);
        let inv = second.parsed.as_ref().unwrap();
        assert_eq!(inv.name, "Bob Ray");
        assert_eq!(inv.customer.as_deref(), Some("Acme"));
        assert!(second.columns.has(Field::Customer));
        assert_eq!(reader.columns().names.len(), 4);
        let third = reader.next().unwrap().unwrap();
        assert!(Arc::ptr_eq(&second.columns, &third.columns));
        assert_eq!(third.values, ["c@example.com", "Cy", "", ""]);
    }

    #[test]
    fn crlf_bom_and_empty_objects() {
        let text = "\u{FEFF}{\"Email\":\"a@example.com\",\"Full Name\":\"Ann\"}\r\n{}\r\n{\"Email\":\"b@example.com\",\"Full Name\":\"B\"}\r\n";
        let recs = read_all("c.jsonl", text.as_bytes(), &opts());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].line, 3);
        assert!(recs.iter().all(|r| r.parsed.is_ok()));
    }

    #[test]
    fn broken_fixture() {
        let reader = super::super::open(&fixture("broken.jsonl"), &opts()).unwrap();
        let recs: Vec<Record> = reader.map(Result::unwrap).collect();
        let (good, bad): (Vec<&Record>, Vec<&Record>) = recs.iter().partition(|r| r.parsed.is_ok());
        assert_eq!(
            good.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 2, 5, 7, 9]
        );
        assert_eq!(bad.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 6, 8]);
        let first = good[0].parsed.as_ref().unwrap();
        assert_eq!(first.customer_id, Some(1001));
        assert_eq!(first.customer_reference.as_deref(), Some("ACME-001"));
        let zoe = good[2].parsed.as_ref().unwrap();
        assert_eq!(zoe.name, "Zoë Dubois");
        assert_eq!(good[3].parsed.as_ref().unwrap().status, None);
        assert_eq!(
            bad[1].parsed.as_ref().unwrap_err()[0].to_string(),
            "line is not a JSON object: expected ident (at character 2); write one \
             {\"email\": …, \"name\": …} object on each line"
        );
    }
}
