//! What people read after a run: the webhook (a local receiver), the metrics file
//! (parsed as Prometheus text), and the HTML report (opened in headless Chromium where
//! it is installed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::util::*;

/// A path that makes the webhook URL a secret, as Slack's and Teams' are.
const HOOK_SECRET: &str = "T000/B000/hook-secret-9d2e71";

/// A webhook receiver on 127.0.0.1:0: answers each POST with `status` and keeps its
/// body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/services/{HOOK_SECRET}",
            listener.local_addr().unwrap()
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Receiver { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Four good rows and one with a bad e-mail: exit 1.
fn with_a_problem(w: &World) -> PathBuf {
    let mut csv = invitees_csv(0, 4);
    csv.push_str("not-an-email,Bad Row,Acme Telecom Ltd\n");
    w.write("in.csv", &csv)
}

fn run_with_hook(w: &World, hook: &Receiver, args: &[&str]) -> std::process::Output {
    w.cmd(args)
        .env("BBINVITE_NOTIFY_URL", &hook.url)
        .output()
        .unwrap()
}

/// Neither the API key nor the webhook URL (nor its secret part) appears in `text`.
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(API_KEY), "API key in {what}: {text}");
    assert!(!text.contains(HOOK_SECRET), "webhook URL in {what}: {text}");
}

#[test]
fn the_webhook_gets_the_counts_and_no_secret() {
    let w = World::new();
    let hook = Receiver::start(200);
    let file = with_a_problem(&w);
    let out = run_with_hook(&w, &hook, &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["command"], "run");
    assert_eq!(body["exit_code"], 1);
    assert_eq!(body["rows"], 5);
    assert_eq!(body["sent"], 4);
    assert_eq!(body["already_done"], 0);
    assert_eq!(body["statuses"]["invited"], 4);
    assert_eq!(body["statuses"]["invalid"], 1);
    let line = body["text"].as_str().unwrap();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("4 invited") && line.contains("1 invalid"),
        "{line}"
    );
    assert!(line.contains("completed with problems"), "{line}");
    assert!(
        line.contains("bbinvite export --run 1 --status invalid"),
        "{line}"
    );
    assert_no_secret("the webhook body", &bodies[0]);
    assert_no_secret("the output", &text(&out));
    let ledger = std::fs::read(w.ledger()).unwrap();
    assert_no_secret("the ledger", &String::from_utf8_lossy(&ledger));
}

#[test]
fn a_webhook_failing_three_times_leaves_the_exit_code_alone() {
    let w = World::new();
    let hook = Receiver::start(500);
    let file = with_a_problem(&w);
    let out = run_with_hook(&w, &hook, &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(hook.bodies().len(), 3, "three tries");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let told: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("BBINVITE_NOTIFY_URL"))
        .collect();
    assert_eq!(told.len(), 1, "{stderr}");
    assert!(told[0].contains("HTTP 500"), "{stderr}");
    assert_no_secret("the output", &text(&out));
}

#[test]
fn a_clean_run_notifies_only_when_asked_always() {
    let w = World::new();
    let hook = Receiver::start(200);
    let file = w.write("in.csv", &invitees_csv(0, 3));
    let out = run_with_hook(&w, &hook, &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        hook.bodies().is_empty(),
        "--notify-on problems sent on a clean run"
    );
    let out = run_with_hook(
        &w,
        &hook,
        &["run", file.to_str().unwrap(), "--notify-on", "always"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["already_done"], 3);
    assert_eq!(body["sent"], 0);
    assert_eq!(body["exit_code"], 0);
}

#[test]
fn a_run_aborted_before_it_began_notifies_with_the_reason() {
    let w = World::with_config(sandbox_config(&["--api-key", "the-right-key"]));
    let hook = Receiver::start(200);
    let file = w.write("in.csv", &invitees_csv(0, 2));
    let metrics = w.path("bbinvite.prom");
    let out = run_with_hook(
        &w,
        &hook,
        &[
            "run",
            file.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 3, "{}", text(&out));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{}", text(&out));
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["exit_code"], 3);
    assert!(
        body["abort_reason"]
            .as_str()
            .unwrap()
            .contains("BILLINGBOOTH_API_KEY"),
        "{body}"
    );
    assert_no_secret("the webhook body", &bodies[0]);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("bbinvite_last_run_exit_code{command=\"run\"} 3"),
        "{prom}"
    );
}

/// Checks Prometheus text: HELP and TYPE before a family's samples, each sample
/// `name{label="value",...} number`. Returns (name, labels, value) per sample.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            assert!(helped.contains(&name), "TYPE before HELP: {line}");
            assert_eq!(parts.next(), Some("gauge"), "{line}");
            typed.insert(name);
        } else {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let value: f64 = value.parse().expect(line);
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect(line)),
                None => (series, ""),
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect(line);
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(
                    v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                    "{line}"
                );
            }
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            samples.push((name.to_string(), labels.to_string(), value));
        }
    }
    samples
}

#[test]
fn the_metrics_file_parses_as_prometheus_text() {
    let w = World::new();
    let file = with_a_problem(&w);
    let metrics = w.path("textfile/bbinvite.prom");
    std::fs::create_dir(w.path("textfile")).unwrap();
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let samples = parse_prometheus(&text);
    let value = |name: &str, label: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(label))
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} {label} in\n{text}"))
    };
    assert_eq!(value("bbinvite_rows", "status=\"invited\""), 4.0);
    assert_eq!(value("bbinvite_rows", "status=\"invalid\""), 1.0);
    assert_eq!(value("bbinvite_sent", ""), 4.0);
    assert_eq!(value("bbinvite_last_run_exit_code", ""), 1.0);
    assert!(value("bbinvite_last_run_timestamp_seconds", "") > 1.7e9);
    assert!(value("bbinvite_run_duration_seconds", "") >= 0.0);
    // Only the file itself is left in the folder: the temporary one was renamed.
    let left: Vec<_> = std::fs::read_dir(w.path("textfile")).unwrap().collect();
    assert_eq!(left.len(), 1);
}

/// The report of a run with every kind of problem, written by `bbinvite report`.
fn report_with_problems(w: &World) -> (String, PathBuf) {
    let mut csv = invitees_csv(0, 12);
    csv.push_str("<img src=x onerror=alert(1)>,<b>Bold</b>,Acme Telecom Ltd\n");
    csv.push_str("someone@example.com,Some One,No Such Customer & Co\n");
    let file = w.write("in.csv", &csv);
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let html = w.path("report.html");
    let out = w.run(&["report", "--output", html.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    (std::fs::read_to_string(&html).unwrap(), html)
}

#[test]
fn the_report_is_self_contained_escaped_and_small() {
    let w = World::new();
    let (page, _) = report_with_problems(&w);
    assert!(page.len() < 200_000, "{} bytes", page.len());
    for fetch in ["<script", "src=\"http", "href=", "@import", "url("] {
        assert!(!page.contains(fetch), "the page fetches: {fetch}");
    }
    assert!(
        !page.contains("<img src=x"),
        "unescaped e-mail from the sheet"
    );
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("No Such Customer &amp; Co"));
    assert!(page.contains("in.csv:14"), "file:line of the bad e-mail");
    assert!(
        page.contains("id=\"attention\"><b>2</b>"),
        "two rows need attention"
    );
    assert!(page.contains("<svg"), "charts drawn");
    assert_no_secret("the report", &page);
}

#[test]
fn the_report_draws_the_rate_the_run_was_given_not_the_busiest_one() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 6));
    let args = [
        "run",
        file.to_str().unwrap(),
        "--rate",
        "7.5",
        "--burst",
        "3",
    ];
    assert_eq!(code(&w.run(&args)), 0);
    let html = w.path("report.html");
    let out = w.run(&["report", "--output", html.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("the limit the run was given: --rate 7.5 per second, --burst 3"),
        "the rate line names the run's own limit"
    );
    assert!(!page.contains("busiest rate seen"), "not the busiest rate");
    let status = w.status();
    assert_eq!(status["run"]["rate"], 7.5, "{status}");
    assert_eq!(status["run"]["burst"], 3, "{status}");
}

#[test]
fn the_report_of_an_unknown_run_says_so() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 2));
    assert_eq!(code(&w.run(&["run", file.to_str().unwrap()])), 0);
    let out = w.run(&["report", "--run", "9", "--output", "r.html"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("no run 9"), "{}", text(&out));
}

/// Headless Chromium, where Debian's package is installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn chromium_cmd(browser: &Path, profile: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Distinct colours among a sample of the screenshot's pixels.
fn colours(png_path: &Path) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for chunk in bytes.chunks(px).step_by(7) {
        seen.insert(chunk[..px.min(3)].to_vec());
    }
    seen.len()
}

#[test]
fn the_report_opens_in_a_browser_with_its_counts() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no Chromium at /usr/bin/chromium (apt-get install chromium)");
        return;
    };
    let w = World::new();
    let (_, html) = report_with_problems(&w);
    let url = format!("file://{}", html.display());
    let dom = chromium_cmd(&browser, &w.path("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"rows\"><b>14</b>"), "{dom}");
    assert!(dom.contains("id=\"sent\"><b>12</b>"), "{dom}");
    assert!(dom.contains("id=\"attention\"><b>2</b>"), "{dom}");
    assert!(dom.contains("Rows needing attention (2)"), "{dom}");
    let shot = w.path("shot.png");
    let out = chromium_cmd(&browser, &w.path("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let n = colours(&shot);
    assert!(n > 50, "the screenshot looks blank: {n} colours");
}

#[test]
fn a_sync_and_a_retry_notify_too_but_a_plan_does_not() {
    let w = World::new();
    let hook = Receiver::start(200);
    let file = w.write("in.csv", &invitees_csv_ids(0, 3));
    let file = file.to_str().unwrap();
    let always = ["--notify-on", "always"];
    let out = run_with_hook(
        &w,
        &hook,
        &[&["sync", file, "--plan"][..], &always].concat(),
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(hook.bodies().is_empty(), "a plan sends nothing");
    let out = run_with_hook(&w, &hook, &[&["sync", file][..], &always].concat());
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = run_with_hook(&w, &hook, &[&["retry"][..], &always].concat());
    assert_eq!(code(&out), 0, "{}", text(&out));
    let commands: Vec<serde_json::Value> = hook
        .bodies()
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap()["command"].clone())
        .collect();
    assert_eq!(commands, ["sync", "retry"]);
    let first: serde_json::Value = serde_json::from_str(&hook.bodies()[0]).unwrap();
    assert_eq!(first["sent"], 3, "{first}");
}

#[test]
fn the_report_of_a_compacted_run_keeps_what_it_sent_and_what_was_done_before() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 6));
    let file = file.to_str().unwrap();
    assert_eq!(code(&w.run(&["run", file])), 0);
    assert_eq!(code(&w.run(&["run", file])), 0);
    let out = w.run(&["compact", "--older-than", "0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for (run, rows, sent, before) in [(1, 6, 6, 0), (2, 6, 0, 6)] {
        let html = w.path(&format!("r{run}.html"));
        let args = ["report", "--run", &run.to_string(), "--output"];
        let out = w.run(&[&args[..], &[html.to_str().unwrap()]].concat());
        assert_eq!(code(&out), 0, "{}", text(&out));
        let page = std::fs::read_to_string(&html).unwrap();
        for (id, n) in [("rows", rows), ("sent", sent), ("done-before", before)] {
            let card = format!("id=\"{id}\"><b>{n}</b>");
            assert!(page.contains(&card), "run {run}: {card} missing");
        }
    }
}
