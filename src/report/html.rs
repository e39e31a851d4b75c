//! The HTML report of one run: a single self-contained page (inline CSS and SVG, no
//! script, font or request) with the headline, outcomes per customer, requests over
//! time, latency, retries/429s/timeouts, the top errors and the rows needing attention.
//! Renders [`ReportData`] that the `report` command gathered; reads nothing itself.
//! Every text from the ledger (names, e-mails, errors come from spreadsheets and the
//! API) is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::escape;
use super::series::{Timeline, format_ms, parse_ms};
use super::svg::{Series, line_chart, short_duration};
use crate::domain::RowStatus;
use crate::ledger::{AttentionRow, CustomerRows, RunInfo, RunTallies};

/// Customers drawn one a line; the rest are summed into one line.
pub const MAX_CUSTOMERS: usize = 40;
/// Rows needing attention listed; the rest are counted.
pub const MAX_ATTENTION: usize = 1000;
/// Errors listed.
pub const MAX_ERRORS: usize = 10;

/// Everything the page shows, gathered from the ledger.
pub struct ReportData {
    pub info: RunInfo,
    pub ledger: String,
    pub statuses: BTreeMap<String, u64>,
    pub tallies: RunTallies,
    /// Most rows first.
    pub customers: Vec<CustomerRows>,
    pub timeline: Timeline,
    /// (status, error, rows).
    pub errors: Vec<(String, String, u64)>,
    pub attention: Vec<AttentionRow>,
    pub attention_total: u64,
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
.sub{color:#5b6673;margin:0 0 18px}
section{background:#fff;border:1px solid #dde2e8;border-radius:10px;padding:18px 20px;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:0 0 18px}
.card{background:#fff;border:1px solid #dde2e8;border-radius:10px;padding:12px 14px}
.card b{display:block;font-size:26px;font-variant-numeric:tabular-nums}
.card span{color:#5b6673;font-size:13px}
.card.bad b{color:#c0392b}.card.good b{color:#1e8449}
.outcome{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px}
.outcome.ok{background:#d5f5e3;color:#1e8449}.outcome.warn{background:#fdebd0;color:#a04000}.outcome.bad{background:#fadbd8;color:#922b21}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #edf0f3;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:#5b6673}
td.n,th.n{text-align:right}
.bar{display:flex;height:14px;min-width:2px;border-radius:3px;overflow:hidden;background:#edf0f3}
.bar i{display:block;height:100%}
.legend-row{display:flex;flex-wrap:wrap;gap:14px;margin:0 0 10px;font-size:13px;color:#5b6673}
.legend-row i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.chart{width:100%;height:auto}.tick{font-size:11px;fill:#5b6673}.legend{font-size:12px;fill:#1d2733}.level{font-size:12px;fill:#c0392b}
.note{color:#5b6673;font-size:13px;margin:8px 0 0}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 5px;border-radius:4px}
.st{font-weight:600}
";

/// A status's colour, the same in every chart and table.
fn color(status: &str) -> &'static str {
    match status {
        "invited" => "#27ae60",
        "exists" => "#5dade2",
        "pending" | "sending" => "#aab7b8",
        "failed" => "#e74c3c",
        "rejected" => "#e67e22",
        "invalid" => "#8e44ad",
        "unresolved" => "#f1c40f",
        _ => "#cfd6dd",
    }
}

/// What a person does about a row that ended with `status`.
pub fn fix_for(status: &str) -> &'static str {
    match status {
        "invalid" => "Correct the cell in the file, then run the same command again.",
        "unresolved" => {
            "Name an existing customer (id, reference or exact name; bbinvite customers --search TEXT lists them), then run again."
        }
        "failed" => "Nothing to change in the row: bbinvite retry sends it again.",
        "rejected" => {
            "The API refused it: fix what it says in the row and run again (or use --retry-rejected)."
        }
        _ => "",
    }
}

/// The page.
pub fn render(d: &ReportData) -> String {
    let mut out = String::with_capacity(64 * 1024 + d.attention.len() * 320);
    let title = format!("bbinvite {} — run {}", d.info.command, d.info.id);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(&title)
    );
    headline(&mut out, d, &title);
    customers(&mut out, d);
    requests(&mut out, d);
    errors(&mut out, d);
    attention(&mut out, d);
    let _ = write!(
        out,
        "<p class=\"note\">Made by bbinvite {} from the ledger {} at {}.</p></main></body></html>",
        env!("CARGO_PKG_VERSION"),
        escape(&d.ledger),
        format_ms(super::series::now_ms())
    );
    out
}

fn headline(out: &mut String, d: &ReportData, title: &str) {
    let rows: u64 = d.statuses.values().sum();
    let attention: u64 = RowStatus::ALL
        .iter()
        .filter(|s| s.is_problem())
        .filter_map(|s| d.statuses.get(s.as_str()))
        .sum();
    let started = parse_ms(&d.info.started_at);
    let finished = d.info.finished_at.as_deref().and_then(parse_ms);
    let took = match (started, finished) {
        (Some(s), Some(f)) => short_duration(((f - s).max(0) as f64) / 1000.0),
        _ => "—".into(),
    };
    let exit = d
        .info
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_else(|| "—".into());
    let (class, outcome) = match (d.info.exit_code, d.info.outcome.as_deref()) {
        (Some(0), Some(o)) => ("ok", o),
        (Some(1), Some(o)) => ("warn", o),
        (_, Some(o)) => ("bad", o),
        (_, None) => ("bad", "no outcome recorded (still running, or killed)"),
    };
    let files = if d.info.files.is_empty() {
        String::new()
    } else {
        format!(" · {}", escape(&d.info.files.join(", ")))
    };
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"sub\"><span class=\"outcome {class}\">{}</span> · started {}{}{}</p><div class=\"cards\">",
        escape(title),
        escape(outcome),
        escape(&d.info.started_at),
        files,
        if d.info.dry_run {
            " · dry run: nothing sent"
        } else {
            ""
        }
    );
    let card = |out: &mut String, class: &str, value: String, label: &str, id: &str| {
        let _ = write!(
            out,
            "<div class=\"card {class}\" id=\"{id}\"><b>{value}</b><span>{label}</span></div>"
        );
    };
    card(out, "", rows.to_string(), "rows", "rows");
    card(out, "good", d.tallies.sent.to_string(), "sent", "sent");
    card(
        out,
        "",
        d.tallies.already_done.to_string(),
        "done before",
        "done-before",
    );
    let bad = if attention > 0 { "bad" } else { "good" };
    card(
        out,
        bad,
        attention.to_string(),
        "needing attention",
        "attention",
    );
    card(out, "", took, "time", "time");
    let bad = if d.info.exit_code == Some(0) {
        "good"
    } else {
        "bad"
    };
    card(out, bad, exit, "exit code", "exit-code");
    out.push_str("</div>");
}

fn legend(out: &mut String, statuses: &[&str]) {
    out.push_str("<div class=\"legend-row\">");
    for s in statuses {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{s}</span>",
            color(s)
        );
    }
    out.push_str("</div>");
}

fn customers(out: &mut String, d: &ReportData) {
    let present: Vec<&str> = RowStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .filter(|s| d.statuses.get(*s).is_some_and(|n| *n > 0))
        .collect();
    out.push_str("<section id=\"customers\"><h2>Outcomes per customer</h2>");
    legend(out, &present);
    out.push_str("<table><thead><tr><th>Customer</th><th style=\"width:34%\"></th>");
    for s in &present {
        let _ = write!(out, "<th class=\"n\">{s}</th>");
    }
    out.push_str("<th class=\"n\">rows</th></tr></thead><tbody>");
    let widest = d.customers.first().map(|c| c.total).unwrap_or(1).max(1);
    for c in d.customers.iter().take(MAX_CUSTOMERS) {
        let name = match (c.id, &c.name) {
            (Some(id), Some(name)) => format!("{} <span class=\"sub\">#{id}</span>", escape(name)),
            (Some(id), None) => format!("#{id}"),
            (None, _) => "<em>no customer found</em>".into(),
        };
        customer_line(out, &name, &c.statuses, c.total, widest, &present);
    }
    if d.customers.len() > MAX_CUSTOMERS {
        let mut rest = BTreeMap::new();
        let mut total = 0;
        for c in &d.customers[MAX_CUSTOMERS..] {
            for (s, n) in &c.statuses {
                *rest.entry(s.clone()).or_insert(0) += n;
            }
            total += c.total;
        }
        let label = format!(
            "<em>{} other customers</em>",
            d.customers.len() - MAX_CUSTOMERS
        );
        customer_line(out, &label, &rest, total, widest.max(total), &present);
    }
    out.push_str("</tbody></table></section>");
}

fn customer_line(
    out: &mut String,
    name: &str,
    statuses: &BTreeMap<String, u64>,
    total: u64,
    widest: u64,
    present: &[&str],
) {
    let _ = write!(
        out,
        "<tr><td>{name}</td><td><div class=\"bar\" style=\"width:{:.1}%\">",
        (total as f64 / widest as f64 * 100.0).max(1.0)
    );
    for s in present {
        let n = statuses.get(*s).copied().unwrap_or(0);
        if n > 0 {
            let _ = write!(
                out,
                "<i style=\"width:{:.2}%;background:{}\" title=\"{n} {s}\"></i>",
                n as f64 / total.max(1) as f64 * 100.0,
                color(s)
            );
        }
    }
    out.push_str("</div></td>");
    for s in present {
        let _ = write!(
            out,
            "<td class=\"n\">{}</td>",
            statuses.get(*s).copied().unwrap_or(0)
        );
    }
    let _ = write!(out, "<td class=\"n\">{total}</td></tr>");
}

/// A rate as typed: `5`, `0.5`, not `5.000`.
fn trim_number(n: f64) -> String {
    let s = format!("{n:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn requests(out: &mut String, d: &ReportData) {
    let t = &d.timeline;
    out.push_str("<section id=\"requests\"><h2>Requests per second</h2>");
    if t.buckets.is_empty() {
        out.push_str("<p class=\"note\">This run made no requests.</p></section>");
        return;
    }
    let width_s = t.width_ms as f64 / 1000.0;
    let x = |i: usize| (i as f64 + 0.5) * width_s;
    let per_sec = |f: &dyn Fn(&super::series::Bucket) -> u64| -> Vec<(f64, f64)> {
        t.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (x(i), f(b) as f64 / width_s))
            .collect()
    };
    let x_max = t.buckets.len() as f64 * width_s;
    let peak = t.buckets.iter().map(|b| b.requests).max().unwrap_or(0) as f64 / width_s;
    let rps = [Series {
        name: "requests/s",
        color: "#2e86c1",
        points: per_sec(&|b| b.requests),
    }];
    out.push_str(&line_chart(
        "Requests per second over the run",
        "time since the first request",
        &rps,
        x_max,
        Some(match d.info.rate {
            Some(rate) => (rate, "--rate"),
            None => (peak, "busiest rate seen"),
        }),
    ));
    let limit = match (d.info.rate, d.info.burst) {
        (Some(rate), burst) => format!(
            "The dashed line is the limit the run was given: --rate {} per second{}",
            trim_number(rate),
            burst.map(|b| format!(", --burst {b}")).unwrap_or_default()
        ),
        (None, _) => "The ledger of this run does not keep its --rate, so the dashed line is the busiest rate the run reached, not the limit".to_string(),
    };
    let _ = write!(
        out,
        "<p class=\"note\">{} requests from {}, averaged over {}-second buckets. {limit}; 429 answers below show where the API's own limit was met.</p></section>",
        t.total.requests,
        format_ms(t.start_ms),
        t.width_ms / 1000
    );
    latency(out, t.latency);
    out.push_str("</section><section id=\"trouble\"><h2>Retries, 429s and timeouts</h2>");
    let trouble = [
        Series {
            name: "retries",
            color: "#8e44ad",
            points: per_sec(&|b| b.retries),
        },
        Series {
            name: "429s",
            color: "#e67e22",
            points: per_sec(&|b| b.throttled),
        },
        Series {
            name: "timeouts",
            color: "#e74c3c",
            points: per_sec(&|b| b.timeouts),
        },
    ];
    out.push_str(&line_chart(
        "Retries, 429s and timeouts per second",
        "time",
        &trouble,
        x_max,
        None,
    ));
    let _ = write!(
        out,
        "<p class=\"note\">In all: {} retries, {} answered 429, {} timeouts, {} server errors (5xx).</p></section>",
        t.total.retries, t.total.throttled, t.total.timeouts, t.total.server_errors
    );
}

/// The latency section's table: p50 to max, as bars against the slowest.
fn latency(out: &mut String, latency: Option<[i64; 5]>) {
    out.push_str("<section id=\"latency\"><h2>Latency</h2>");
    match latency {
        Some(l) => {
            out.push_str("<table style=\"max-width:720px\"><tbody>");
            for (name, v) in ["p50", "p90", "p95", "p99", "max"].iter().zip(l) {
                let _ = write!(
                    out,
                    "<tr><td>{name}</td><td style=\"width:60%\"><div class=\"bar\" style=\"width:{:.1}%\"><i style=\"width:100%;background:#5dade2\"></i></div></td><td class=\"n\">{v} ms</td></tr>",
                    (v as f64 / l[4].max(1) as f64 * 100.0).max(1.0)
                );
            }
            out.push_str("</tbody></table>");
        }
        None => out.push_str("<p class=\"note\">No request timed.</p>"),
    }
}

fn errors(out: &mut String, d: &ReportData) {
    out.push_str("<section id=\"errors\"><h2>Top errors</h2>");
    if d.errors.is_empty() {
        out.push_str("<p class=\"note\">No row ended with an error.</p></section>");
        return;
    }
    let most = d.errors.first().map(|e| e.2).unwrap_or(1).max(1);
    out.push_str("<table><thead><tr><th class=\"n\">rows</th><th style=\"width:20%\"></th><th>status</th><th>error</th></tr></thead><tbody>");
    for (status, error, n) in &d.errors {
        let _ = write!(
            out,
            "<tr><td class=\"n\">{n}</td><td><div class=\"bar\" style=\"width:{:.1}%\"><i style=\"width:100%;background:{}\"></i></div></td><td class=\"st\">{}</td><td>{}</td></tr>",
            (*n as f64 / most as f64 * 100.0).max(1.0),
            color(status),
            escape(status),
            escape(error)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn attention(out: &mut String, d: &ReportData) {
    let _ = write!(
        out,
        "<section id=\"rows\"><h2>Rows needing attention ({})</h2>",
        d.attention_total
    );
    if d.attention.is_empty() {
        out.push_str("<p class=\"note\">None: every row ended invited, exists or already done.</p></section>");
        return;
    }
    out.push_str("<table><thead><tr><th>where</th><th>status</th><th>e-mail</th><th>what is wrong</th><th>what to do</th></tr></thead><tbody>");
    for r in &d.attention {
        let _ = write!(
            out,
            "<tr><td><code>{}:{}</code></td><td class=\"st\" style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.file),
            r.line,
            color(&r.status),
            escape(&r.status),
            escape(r.email.as_deref().unwrap_or("")),
            escape(r.error.as_deref().unwrap_or("")),
            fix_for(&r.status)
        );
    }
    out.push_str("</tbody></table>");
    let rest = d.attention_total.saturating_sub(d.attention.len() as u64);
    if rest > 0 {
        let _ = write!(
            out,
            "<p class=\"note\">… and {rest} more. Every one: <code>bbinvite export --run {} --status failed --status rejected --status invalid --status unresolved --ledger {}</code></p>",
            d.info.id,
            escape(&d.ledger)
        );
    }
    out.push_str("</section>");
}
