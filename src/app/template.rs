//! `template`: an input sheet to fill in, with the columns bbinvite reads and one example
//! row, as CSV or XLSX.
//!
//! Owns only the sheet's layout and writing it. The header names are ones
//! `input::columns` recognises without `--map` (a test reads the template back); this
//! module must not read input, open a ledger or make a request.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rust_xlsxwriter::{Format, Workbook};
use serde::Serialize;

use crate::app::Exit;
use crate::cli::{TemplateArgs, TemplateFormat};
use crate::settings::Settings;

/// The columns, in order: who, which customer (any one of the three), and the
/// status `sync --apply-status` applies.
const HEADERS: [&str; 6] = [
    "Email",
    "Name",
    "Customer",
    "Customer ID",
    "Customer Reference",
    "Status",
];

/// One filled-in row: a customer of the sandbox's sample directory, so the template
/// can be tried with `--sandbox` as it is.
const EXAMPLE: [&str; 6] = [
    "jo.bloggs@example.com",
    "Jo Bloggs",
    "Acme Telecom Ltd",
    "101",
    "ACME-001",
    "active",
];

/// `template --json` (docs/json.md): the sheet's format, where it was written, its
/// columns and the example row by column.
#[derive(Serialize)]
struct TemplateReport {
    format: &'static str,
    output: Option<String>,
    columns: [&'static str; 6],
    example: serde_json::Map<String, serde_json::Value>,
}

/// `template [--format csv|xlsx] [--output FILE]`; with `--json`, the sheet is written
/// only to `--output` and stdout holds its description.
pub(crate) fn template(global: &Settings, a: &TemplateArgs) -> anyhow::Result<Exit> {
    let format = a.format.unwrap_or_else(|| format_of(a.output.as_deref()));
    if let Some(path) = &a.output
        && path.exists()
    {
        bail!(
            "{} already exists; the template does not overwrite a sheet: name a new file with --output",
            path.display()
        );
    }
    match (format, &a.output) {
        (TemplateFormat::Csv, None) if global.json => {}
        (TemplateFormat::Csv, None) => write_csv(std::io::stdout().lock())?,
        (TemplateFormat::Csv, Some(path)) => {
            let file = std::fs::File::create(path).with_context(|| cannot_write(path))?;
            write_csv(file).with_context(|| cannot_write(path))?;
        }
        (TemplateFormat::Xlsx, None) => {
            bail!("an XLSX template is written to a file: add --output FILE.xlsx")
        }
        (TemplateFormat::Xlsx, Some(path)) => write_xlsx(path)?,
    }
    if global.json {
        let report = TemplateReport {
            format: match format {
                TemplateFormat::Csv => "csv",
                TemplateFormat::Xlsx => "xlsx",
            },
            output: a.output.as_ref().map(|p| p.display().to_string()),
            columns: HEADERS,
            example: HEADERS
                .iter()
                .zip(EXAMPLE)
                .map(|(h, v)| (h.to_string(), v.into()))
                .collect(),
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    }
    Ok(Exit::Ok)
}

/// XLSX when the output's name ends in `.xlsx`, else CSV.
fn format_of(output: Option<&Path>) -> TemplateFormat {
    let xlsx = output
        .and_then(Path::extension)
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    if xlsx {
        TemplateFormat::Xlsx
    } else {
        TemplateFormat::Csv
    }
}

fn cannot_write(path: &Path) -> String {
    format!(
        "cannot write the template to {}; name a file in a folder you can write",
        path.display()
    )
}

fn write_csv(out: impl Write) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(HEADERS)?;
    w.write_record(EXAMPLE)?;
    w.flush()?;
    Ok(())
}

fn write_xlsx(path: &PathBuf) -> anyhow::Result<()> {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Invitees")?;
    let bold = Format::new().set_bold();
    for (col, (header, example)) in (0u16..).zip(HEADERS.iter().zip(EXAMPLE)) {
        sheet.write_string_with_format(0, col, *header, &bold)?;
        // Text, never a number: an id or reference keeps its leading zeros.
        sheet.write_string(1, col, example)?;
        sheet.set_column_width(col, 22)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    book.save(path).with_context(|| cannot_write(path))?;
    Ok(())
}
