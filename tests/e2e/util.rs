//! Helpers: a work dir, a sandbox on 127.0.0.1:0, and the binary with its environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use bbinvite::sandbox::{Config, Faults, Sandbox, Truth};

/// The API key the tests use; it must never show up in output or the ledger.
pub const API_KEY: &str = "test-key-7f3a9c1e5b";

/// A temp dir with a sandbox serving it.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    // Declared last: dropped after the sandbox, which runs on it.
    pub _rt: tokio::runtime::Runtime,
}

impl World {
    pub fn new() -> World {
        World::with_config(Config::samples())
    }

    pub fn with_config(config: Config) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sandbox = rt.block_on(Sandbox::start(addr, config)).unwrap();
        World {
            dir: tempfile::tempdir().unwrap(),
            sandbox,
            _rt: rt,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ledger(&self) -> PathBuf {
        self.path("ledger.db")
    }

    /// A world whose sandbox holds the customers (and their access users) of `seed`,
    /// as `bbinvite sandbox --customers FILE` would read them.
    pub fn seeded(seed: &serde_json::Value) -> World {
        let dir = tempfile::tempdir().unwrap();
        let customers = dir.path().join("customers.json");
        std::fs::write(&customers, seed.to_string()).unwrap();
        World::with_customers(&customers)
    }

    /// A world whose sandbox holds the customers of the JSON file `customers`.
    pub fn with_customers(customers: &Path) -> World {
        World::with_config(sandbox_config(&[
            "--customers",
            customers.to_str().unwrap(),
        ]))
    }

    /// Writes a file into the work dir.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `bbinvite ARGS --ledger … --base-url …` with the test API key.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_on(&self.ledger(), args)
    }

    /// The same on another ledger.
    pub fn cmd_on(&self, ledger: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::from_std(self.std_cmd(ledger, args));
        cmd.timeout(std::time::Duration::from_secs(120));
        cmd
    }

    /// `bbinvite ARGS --ledger LEDGER --base-url …` as a plain command, not yet started.
    fn std_cmd(&self, ledger: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("bbinvite"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BILLINGBOOTH_API_KEY", API_KEY)
            .args(args)
            .arg("--ledger")
            .arg(ledger)
            .arg("--base-url")
            .arg(self.sandbox.base_url());
        cmd
    }

    /// Runs and returns the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn truth(&self) -> Truth {
        self.sandbox.truth()
    }

    pub fn faults(&self, f: Faults) {
        self.sandbox.set_faults(f);
    }

    /// `bbinvite status --json` parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// How many invitation POSTs the sandbox saw.
pub fn posts(t: &Truth) -> u64 {
    t.keys.iter().map(|k| k.posts).sum()
}

/// The number of keys created more than once: must always be 0.
pub fn doubled(t: &Truth) -> usize {
    t.keys.iter().filter(|k| k.created > 1).count()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A CSV of `n` invitees of the sample customers, starting at `from`.
pub fn invitees_csv(from: usize, n: usize) -> String {
    let customers = [
        "Acme Telecom Ltd",
        "Brightwave Communications",
        "Vertex Connect",
        "Skyline Data Ltd",
    ];
    let mut s = String::from("email,name,customer\n");
    for i in from..from + n {
        s.push_str(&format!(
            "user{i}@example.com,User {i},{}\n",
            customers[i % customers.len()]
        ));
    }
    s
}

/// The same, naming customers by id: no directory is needed, so a run reaches the
/// invitations even when every other call would fail.
pub fn invitees_csv_ids(from: usize, n: usize) -> String {
    let ids = [101, 102, 112, 111];
    let mut s = String::from("email,name,customer_id\n");
    for i in from..from + n {
        s.push_str(&format!(
            "user{i}@example.com,User {i},{}\n",
            ids[i % ids.len()]
        ));
    }
    s
}

pub fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

pub fn row_count(status: &serde_json::Value, s: &str) -> u64 {
    status["statuses"][s].as_u64().unwrap_or(0)
}

#[derive(clap::Parser)]
struct SandboxCli {
    #[command(flatten)]
    args: bbinvite::sandbox::Args,
}

/// A sandbox configured as `bbinvite sandbox FLAGS` would be.
pub fn sandbox_config(flags: &[&str]) -> Config {
    use clap::Parser;
    let cli = SandboxCli::parse_from(std::iter::once("sandbox").chain(flags.iter().copied()));
    cli.args.config().unwrap()
}

/// The routes `sync` uses, as `Truth::requests_by_route` names them.
pub const LIST_ACCESS: &str = "GET /customer/{id}/access";
pub const INVITE: &str = "POST /customer/{id}/access";
pub const RESEND: &str = "POST /customer/{id}/access/{uid}/resend";
pub const SUSPEND: &str = "PUT /customer/{id}/access/{uid}/suspend";
pub const REACTIVATE: &str = "PUT /customer/{id}/access/{uid}/reactivate";

/// Requests the sandbox saw on one route.
pub fn route(t: &Truth, key: &str) -> u64 {
    t.requests_by_route.get(key).copied().unwrap_or(0)
}

/// Requests per route between two snapshots, routes with none left out.
pub fn route_delta(before: &Truth, after: &Truth) -> std::collections::BTreeMap<String, u64> {
    after
        .requests_by_route
        .iter()
        .map(|(k, n)| (k.clone(), n - route(before, k)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Starts `bbinvite ARGS --ledger … --base-url …` in the background, for kills.
pub fn spawn_background(w: &World, args: &[&str]) -> std::process::Child {
    spawn_with(w, args, std::process::Stdio::null)
}

/// The same with stdout and stderr kept, for commands whose words a test reads.
pub fn spawn_kept(w: &World, args: &[&str]) -> std::process::Child {
    spawn_with(w, args, std::process::Stdio::piped)
}

/// The same on another ledger, its output kept.
pub fn spawn_on(w: &World, ledger: &Path, args: &[&str]) -> std::process::Child {
    spawn_with_ledger(w, ledger, args, std::process::Stdio::piped)
}

/// `bbinvite ARGS --ledger LEDGER --base-url …`, run to its end.
pub fn run_on(w: &World, ledger: &Path, args: &[&str]) -> Output {
    w.cmd_on(ledger, args).output().unwrap()
}

fn spawn_with(
    w: &World,
    args: &[&str],
    output: fn() -> std::process::Stdio,
) -> std::process::Child {
    spawn_with_ledger(w, &w.ledger(), args, output)
}

fn spawn_with_ledger(
    w: &World,
    ledger: &Path,
    args: &[&str],
    output: fn() -> std::process::Stdio,
) -> std::process::Child {
    w.std_cmd(ledger, args)
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

/// One number the ledger answers (a count), read beside bbinvite as any reader would.
pub fn ledger_count(w: &World, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Polls the sandbox until `ready` holds of its truth or `limit` passes (a bound, not a
/// timing assertion); says which.
pub fn wait_for(w: &World, limit: std::time::Duration, ready: impl Fn(&Truth) -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if ready(&w.truth()) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// An RFC 3339 time this long ago, as an API's `created_at` would read.
pub fn ago(d: std::time::Duration) -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() - d).to_string()
}

/// A sandbox user as the simulator holds it (status, resends, suspensions).
pub fn sandbox_user(
    w: &World,
    customer: i64,
    email: &str,
) -> Option<bbinvite::sandbox::SandboxUser> {
    w.sandbox
        .access(customer)
        .unwrap()
        .into_iter()
        .find(|u| u.user.email == email)
}

/// A user's status in the sandbox.
pub fn status_of(
    w: &World,
    customer: i64,
    email: &str,
) -> Option<bbinvite::api::types::AccessStatus> {
    sandbox_user(w, customer, email).and_then(|u| u.user.status)
}

/// Waits for a child, killing it if it outlives `limit` (a bound, not a timing
/// assertion); its exit code.
pub fn wait_bounded(child: &mut std::process::Child, limit: std::time::Duration) -> i32 {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the run did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`wait_bounded`], then the child's output.
pub fn finish_bounded(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    wait_bounded(&mut child, limit);
    child.wait_with_output().unwrap()
}

/// Sends `signal` (`-INT`, `-TERM`) to a child, as a person's Ctrl-C or a service
/// manager would.
pub fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The command's stdout as one JSON document.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}
