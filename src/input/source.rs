//! Where the bytes come from and what they are: opening a file or a stream, the first
//! bytes kept aside for sniffing, the encoding, the format, the CSV delimiter.
//!
//! Reads at most [`SNIFF_BYTES`] ahead and hands the rest on as a stream: it must never
//! read a whole file. Decoding is encoding_rs's, not ours.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};
use encoding_rs_io::DecodeReaderBytesBuilder;

use super::extent::{Counted, Extent};
use super::{Error, Format};

/// How many bytes are looked at to guess the encoding, the format and the delimiter:
/// enough for any header, small enough to hold for a file of any size.
pub(crate) const SNIFF_BYTES: usize = 64 * 1024;

/// How many bytes of a file without a BOM are checked for the NULs of BOM-less UTF-16.
const UTF16_SNIFF_BYTES: usize = 256;

/// The delimiters a CSV may use, in the order that breaks ties.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// A byte stream whose first bytes have already been read and kept.
pub(crate) struct Source {
    pub prefix: Vec<u8>,
    pub rest: Box<dyn Read + Send>,
    /// The size in bytes, when it is a file.
    pub size: Option<u64>,
    /// Bytes taken through [`Source::into_reader`] so far.
    pub consumed: Arc<AtomicU64>,
}

impl Source {
    /// Opens a file and reads its first bytes. An empty file is an error.
    pub fn open(path: &str, file: &Arc<str>) -> Result<Source, Error> {
        match File::open(path) {
            Ok(f) => {
                let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                let mut source = Source::from_reader(Box::new(f), file)?;
                source.size = size;
                Ok(source)
            }
            Err(source) => Err(Error::Open {
                file: file.clone(),
                source,
            }),
        }
    }

    /// Reads the first bytes of a stream. An empty stream is an error.
    pub fn from_reader(mut rest: Box<dyn Read + Send>, file: &Arc<str>) -> Result<Source, Error> {
        let prefix = read_up_to(&mut rest, SNIFF_BYTES).map_err(|source| Error::Open {
            file: file.clone(),
            source,
        })?;
        if prefix.is_empty() {
            return Err(Error::Empty { file: file.clone() });
        }
        Ok(Source::new(prefix, rest))
    }

    /// A stream of unknown size whose first bytes are `prefix`.
    pub fn new(prefix: Vec<u8>, rest: Box<dyn Read + Send>) -> Source {
        Source {
            prefix,
            rest,
            size: None,
            consumed: Arc::default(),
        }
    }

    /// How far through this stream its reader gets, as it reads.
    pub fn extent(&self) -> Extent {
        Extent::of_bytes(self.size, self.consumed.clone())
    }

    /// The whole stream, the kept bytes first, counted into `consumed` as read.
    pub fn into_reader(self) -> impl Read + Send {
        Counted::new(Cursor::new(self.prefix).chain(self.rest), self.consumed)
    }

    /// The whole stream decoded to UTF-8, BOM removed; undecodable bytes become U+FFFD.
    pub fn decode(self, encoding: &'static Encoding) -> impl Read + Send {
        DecodeReaderBytesBuilder::new()
            .encoding(Some(encoding))
            .bom_override(true)
            .strip_bom(true)
            .build(self.into_reader())
    }
}

/// Reads until `limit` bytes or the end, whichever comes first (a pipe may deliver in
/// small pieces).
pub(crate) fn read_up_to(r: &mut dyn Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit.min(8 * 1024));
    r.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The encoding to decode with: the label given, else the BOM, else UTF-8 when the
/// first bytes are valid UTF-8, else Windows-1252 (what Excel writes as "CSV").
pub(crate) fn encoding(
    prefix: &[u8],
    label: Option<&str>,
    file: &Arc<str>,
) -> Result<&'static Encoding, Error> {
    if let Some(label) = label {
        return match Encoding::for_label(label.trim().as_bytes()) {
            // "replacement" is what encoding_rs answers for encodings it will not decode.
            Some(enc) if enc != encoding_rs::REPLACEMENT => Ok(enc),
            _ => Err(Error::UnknownEncoding {
                file: file.clone(),
                label: label.to_string(),
            }),
        };
    }
    if let Some((enc, _)) = Encoding::for_bom(prefix) {
        return Ok(enc);
    }
    if let Some(enc) = bomless_utf16(prefix) {
        return Ok(enc);
    }
    // Windows-1252 (what Excel writes as "CSV") only when nothing in the head reads as
    // UTF-8 beyond ASCII: one stray byte in a UTF-8 file is that row's problem.
    let (multibyte, invalid) = utf8_census(prefix);
    if invalid > 0 && multibyte == 0 {
        Ok(WINDOWS_1252)
    } else {
        Ok(UTF_8)
    }
}

/// How many valid UTF-8 characters beyond ASCII, and how many bytes that are not UTF-8,
/// `bytes` holds. A character cut in two at the end counts as neither.
fn utf8_census(mut bytes: &[u8]) -> (usize, usize) {
    let leads = |valid: &[u8]| valid.iter().filter(|b| **b >= 0xC0).count();
    let (mut multibyte, mut invalid) = (0, 0);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(_) => return (multibyte + leads(bytes), invalid),
            Err(e) => {
                multibyte += leads(&bytes[..e.valid_up_to()]);
                let Some(len) = e.error_len() else {
                    return (multibyte, invalid);
                };
                invalid += 1;
                bytes = &bytes[e.valid_up_to() + len..];
            }
        }
    }
}

/// How many first bytes are looked at for NULs and control bytes.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// What an input that cannot be a sheet looks like ("a PNG image"); `None` when it may
/// be one. Text in a BOM-marked or BOM-less UTF-16, and workbooks, may be.
pub(crate) fn not_a_sheet(prefix: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 10] = [
        (b"\x89PNG", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"\x7FELF", "a program (ELF binary)"),
        (b"Rar!", "a RAR archive"),
        (b"7z\xBC\xAF", "a 7-Zip archive"),
        (b"SQLite format 3\0", "an SQLite database (a ledger?)"),
        (b"BZh", "a bzip2 archive"),
    ];
    if let Some((_, looks)) = MAGIC.iter().find(|(magic, _)| prefix.starts_with(magic)) {
        return Some(looks);
    }
    if prefix.starts_with(b"PK\x03\x04") {
        const WORKBOOK: [&[u8]; 4] = [b"[Content_Types].xml", b"xl/", b"mimetype", b"content.xml"];
        let workbook = WORKBOOK
            .iter()
            .any(|m| prefix.windows(m.len()).any(|w| w == *m));
        return (!workbook).then_some("a zip archive that is not a workbook");
    }
    if prefix.starts_with(b"\xD0\xCF\x11\xE0")
        || Encoding::for_bom(prefix).is_some()
        || bomless_utf16(prefix).is_some()
    {
        return None;
    }
    let head = &prefix[..prefix.len().min(BINARY_SNIFF_BYTES)];
    let control = head
        .iter()
        .filter(|b| (**b < 0x20 && !b"\t\n\r\x0C".contains(b)) || **b == 0x7F)
        .count();
    (head.contains(&0) || control * 10 > head.len()).then_some("binary data")
}

/// UTF-16 without a BOM betrays itself by a NUL in nearly every other byte.
fn bomless_utf16(prefix: &[u8]) -> Option<&'static Encoding> {
    let head = &prefix[..prefix.len().min(UTF16_SNIFF_BYTES) & !1];
    let pairs = head.len() / 2;
    if pairs < 2 {
        return None;
    }
    let nul_at = |parity: usize| {
        head.iter()
            .skip(parity)
            .step_by(2)
            .filter(|b| **b == 0)
            .count()
    };
    let (even, odd) = (nul_at(0), nul_at(1));
    let most = |n: usize| n * 10 >= pairs * 9;
    let few = |n: usize| n * 10 <= pairs;
    if most(odd) && few(even) {
        Some(UTF_16LE)
    } else if most(even) && few(odd) {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// The format of an input nobody named: a workbook by its magic bytes, JSONL when the
/// first visible character is `{`, CSV otherwise.
pub(crate) fn sniff_format(prefix: &[u8]) -> Format {
    const ZIP: &[u8] = b"PK\x03\x04";
    const OLE: &[u8] = b"\xD0\xCF\x11\xE0";
    if prefix.starts_with(ZIP) || prefix.starts_with(OLE) {
        return Format::Sheet;
    }
    let skip = Encoding::for_bom(prefix).map_or(0, |(_, len)| len);
    let first = prefix[skip..]
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0);
    if first == Some(&b'{') {
        Format::Jsonl
    } else {
        Format::Csv
    }
}

/// The format a file name promises, if its extension is one we know.
pub(crate) fn format_by_extension(path: &str) -> Option<Format> {
    let ext = std::path::Path::new(path)
        .extension()?
        .to_str()?
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" | "tab" | "txt" => Some(Format::Csv),
        "jsonl" | "ndjson" | "jsonlines" => Some(Format::Jsonl),
        "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(Format::Sheet),
        _ => None,
    }
}

/// What the first line of decoded CSV text says about its layout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The delimiter of the header line.
    pub delimiter: u8,
    /// The first line is Excel's `sep=;` hint, not the header.
    pub sep_line: bool,
}

/// Picks the delimiter of the first non-blank line: the candidate seen most often
/// outside quotes (ties go to the earlier of `, ; tab |`; none at all means `,`).
/// Excel's `sep=X` first line names it outright.
pub(crate) fn sniff_layout(text: &[u8]) -> Layout {
    let line = first_line(text);
    if let [s, e, p, b'=', d] = trim_ascii(line)
        && s.eq_ignore_ascii_case(&b's')
        && e.eq_ignore_ascii_case(&b'e')
        && p.eq_ignore_ascii_case(&b'p')
    {
        return Layout {
            delimiter: *d,
            sep_line: true,
        };
    }
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in line {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|d| *d == b) {
            counts[i] += 1;
        }
    }
    let mut best = 0;
    for i in 1..DELIMITERS.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    Layout {
        delimiter: DELIMITERS[best],
        sep_line: false,
    }
}

/// The first line that is not blank, up to its newline (one outside quotes).
fn first_line(text: &[u8]) -> &[u8] {
    let mut start = 0;
    let mut quoted = false;
    for (i, &b) in text.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => {
                if trim_ascii(&text[start..i]).is_empty() {
                    start = i + 1;
                } else {
                    return &text[start..i];
                }
            }
            _ => {}
        }
    }
    &text[start.min(text.len())..]
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file() -> Arc<str> {
        Arc::from("t.csv")
    }

    #[test]
    fn sniffs_each_delimiter() {
        assert_eq!(sniff_layout(b"email,name,company\n").delimiter, b',');
        assert_eq!(sniff_layout(b"email;name;company\r\n").delimiter, b';');
        assert_eq!(sniff_layout(b"email\tname\tcompany").delimiter, b'\t');
        assert_eq!(sniff_layout(b"email|name|company\n").delimiter, b'|');
    }

    #[test]
    fn delimiters_inside_quotes_do_not_count() {
        let head = b"\"Mail, work\";\"Name, full\";Company\na,b,c,d,e\n";
        assert_eq!(sniff_layout(head).delimiter, b';');
        // A quoted newline in the header does not end it.
        let head = b"\"E-mail\nAddress\"|Name|Company\n";
        assert_eq!(sniff_layout(head).delimiter, b'|');
    }

    #[test]
    fn blank_leading_lines_and_ties() {
        assert_eq!(sniff_layout(b"\n  \r\nemail;name\n").delimiter, b';');
        assert_eq!(sniff_layout(b"a,b;c\n").delimiter, b',');
        assert_eq!(sniff_layout(b"email\n").delimiter, b',');
        assert_eq!(sniff_layout(b"").delimiter, b',');
    }

    #[test]
    fn excel_sep_line_names_the_delimiter() {
        assert_eq!(
            sniff_layout(b"sep=;\nemail,name;x\n"),
            Layout {
                delimiter: b';',
                sep_line: true
            }
        );
        assert_eq!(
            sniff_layout(b"SEP=|\r\n"),
            Layout {
                delimiter: b'|',
                sep_line: true
            }
        );
    }

    #[test]
    fn encoding_by_bom_content_and_label() {
        let enc = |b: &[u8]| encoding(b, None, &file()).unwrap();
        assert_eq!(enc(b"\xEF\xBB\xBFemail"), UTF_8);
        assert_eq!(enc(b"\xFF\xFEe\0m\0"), UTF_16LE);
        assert_eq!(enc(b"\xFE\xFF\0e\0m"), UTF_16BE);
        assert_eq!(enc("é€".as_bytes()), UTF_8);
        assert_eq!(enc(b"caf\xE9 \x80"), WINDOWS_1252);
        // One stray byte among UTF-8 letters: UTF-8, the stray byte the row's problem.
        assert_eq!(enc("Zoë Brontë\nJos\u{e9}".as_bytes()), UTF_8);
        assert_eq!(enc(b"Zo\xC3\xAB\nJos\xE9"), UTF_8);
        // A multi-byte character cut at the end of the sniffed bytes.
        assert_eq!(enc(&"aé".as_bytes()[..2]), UTF_8);
        assert_eq!(enc(b"e\0m\0a\0i\0l\0"), UTF_16LE);
        assert_eq!(enc(b"\0e\0m\0a\0i\0l"), UTF_16BE);
        assert_eq!(enc(b"a\0,b,c,d,e\0f"), UTF_8);
        let label = |l: &str| encoding(b"x", Some(l), &file());
        assert_eq!(label("latin1").unwrap(), WINDOWS_1252);
        assert_eq!(label("UTF-16LE").unwrap(), UTF_16LE);
        assert!(matches!(
            label("klingon"),
            Err(Error::UnknownEncoding { .. })
        ));
        assert!(label("iso-2022-kr").is_err());
    }

    #[test]
    fn format_by_name_and_by_content() {
        assert_eq!(format_by_extension("a/b.CSV"), Some(Format::Csv));
        assert_eq!(format_by_extension("x.tsv"), Some(Format::Csv));
        assert_eq!(format_by_extension("x.ndjson"), Some(Format::Jsonl));
        assert_eq!(format_by_extension("x.xlsm"), Some(Format::Sheet));
        assert_eq!(format_by_extension("x.ods"), Some(Format::Sheet));
        assert_eq!(format_by_extension("-"), None);
        assert_eq!(format_by_extension("x.dat"), None);
        assert_eq!(sniff_format(b"  \n{\"email\":1}"), Format::Jsonl);
        assert_eq!(sniff_format(b"\xEF\xBB\xBF{"), Format::Jsonl);
        assert_eq!(sniff_format(b"\xFF\xFE{\0"), Format::Jsonl);
        assert_eq!(sniff_format(b"email,name"), Format::Csv);
        assert_eq!(sniff_format(b"PK\x03\x04rest"), Format::Sheet);
    }

    #[test]
    fn read_up_to_gathers_small_pieces() {
        struct Trickle(Vec<u8>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0.remove(0);
                Ok(1)
            }
        }
        let mut r = Trickle(b"abcdef".to_vec());
        assert_eq!(read_up_to(&mut r, 4).unwrap(), b"abcd");
        assert_eq!(read_up_to(&mut r, 4).unwrap(), b"ef");
    }

    #[test]
    fn what_is_not_a_sheet_is_named() {
        assert_eq!(not_a_sheet(b"\x89PNG\r\n\x1a\n\0\0"), Some("a PNG image"));
        assert_eq!(not_a_sheet(b"%PDF-1.7\n"), Some("a PDF document"));
        assert_eq!(
            not_a_sheet(b"PK\x03\x04\x14\0\0\0notes.txt"),
            Some("a zip archive that is not a workbook")
        );
        assert_eq!(not_a_sheet(b"email,name\0\nx,y\n"), Some("binary data"));
        assert_eq!(
            not_a_sheet(b"\x01\x02\x03\x04,\x05\x06\x07\x08\n"),
            Some("binary data")
        );
        for sheet in [
            &b"email,name\nann@example.com,Ann\n"[..],
            b"email,name\x1b[1m\nann@example.com,Ann\n",
            b"Email;Name\r\nzo\xE9@example.com;Zo\xEB\r\n",
            b"\xFF\xFEe\0m\0a\0i\0l\0",
            b"e\0m\0a\0i\0l\0,\0n\0",
            b"PK\x03\x04\x14\0\0\0[Content_Types].xml",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0",
        ] {
            assert_eq!(not_a_sheet(sheet), None, "{sheet:?}");
        }
    }
}
