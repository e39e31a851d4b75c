//! The ledger alone, driven as a first run drives it: admitted batches of 2,048 rows
//! (one transaction each), then groups of `sending` marks, each group committed with
//! the outcomes of the group before it (one attempt each), on a file with checkpoints
//! on their own thread. Prints the CPU time of this thread per invitation, by phase, from
//! the thread's own clock (`/proc/thread-self/schedstat`).
//!
//! `cargo bench --bench ledger_loop -- [INVITATIONS] [ROUNDS] [GROUP]` (default 100,000,
//! 3 and 256 invitations a group); every figure is the median of the rounds.

use std::time::{Duration, SystemTime};

use bbinvite::api::types::NewAccessUser;
use bbinvite::domain::{Admission, AdmitOptions, Attempt, Outcome, State, Verdict};
use bbinvite::ledger::{Ledger, NewRow};

const ADMIT: usize = 2048;
/// Invitations marked (and outcomes recorded) per committed group: a first run of
/// 100,000 rows at concurrency 64 commits about 380 groups.
const GROUP: usize = 256;
const CUSTOMERS: u64 = 200;

/// This thread's time on a CPU so far, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.unwrap_or(0))
}

#[derive(Default, Clone, Copy)]
struct Phases {
    admit: Duration,
    mark: Duration,
    record: Duration,
    commit: Duration,
}

fn row(source: i64, i: u64) -> NewRow {
    let email = format!("user{i}@bench.example");
    let name = format!("User {i}");
    let customer = format!("Customer {:05} Ltd", i % CUSTOMERS + 1);
    NewRow {
        source,
        line: i + 2,
        cells: serde_json::to_string(&[&email, &name, &customer]).unwrap_or_default(),
        email: Some(email.clone()),
        verdict: Verdict::Invite {
            customer_id: (i % CUSTOMERS + 1) as i64,
            user: NewAccessUser {
                email,
                name,
                id: None,
                status: None,
            },
        },
    }
}

fn outcome(invitation_id: i64, row_id: i64) -> Outcome {
    Outcome {
        invitation_id,
        row_id,
        state: State::Invited,
        access_user_id: Some(invitation_id + 1000),
        error: None,
        http_status: Some(201),
        unsure: false,
        attempts: vec![Attempt {
            at: SystemTime::now(),
            action: "invite",
            http_status: Some(201),
            latency: Duration::from_millis(1),
            class: "ok",
            error: None,
        }],
    }
}

fn round(n: u64, group: usize) -> Result<Phases, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    let run = ledger.begin_run("run", "http://127.0.0.1:1", &[], false)?;
    let columns = ["email", "name", "customer"].map(String::from);
    let source = ledger.add_source(run, "bench.csv", &columns)?;
    let checkpoints = ledger.background_checkpoints();
    let mut p = Phases::default();
    let mut done: Vec<(i64, i64)> = Vec::new();
    let mut next = 0;
    while next < n {
        let rows: Vec<NewRow> = (next..(next + ADMIT as u64).min(n))
            .map(|i| row(source, i))
            .collect();
        next += rows.len() as u64;
        let t = thread_cpu();
        ledger.begin_group()?;
        let admitted = ledger.admit(run, &rows, AdmitOptions::default())?;
        ledger.commit_group()?;
        p.admit += thread_cpu() - t;
        let jobs: Vec<(i64, i64)> = admitted
            .iter()
            .filter_map(|a| match a {
                Admission::Send(job) => Some((job.invitation_id, job.row_id)),
                Admission::Settled { .. } => None,
            })
            .collect();
        for batch in jobs.chunks(group) {
            let outcomes: Vec<Outcome> = done.drain(..).map(|(i, r)| outcome(i, r)).collect();
            let ids: Vec<i64> = batch.iter().map(|j| j.0).collect();
            let t = thread_cpu();
            ledger.begin_group()?;
            ledger.record_in_group(run, &outcomes)?;
            let t1 = thread_cpu();
            ledger.mark_sending(&ids)?;
            let t2 = thread_cpu();
            ledger.commit_group()?;
            let t3 = thread_cpu();
            p.record += t1 - t;
            p.mark += t2 - t1;
            p.commit += t3 - t2;
            done.extend_from_slice(batch);
        }
    }
    let outcomes: Vec<Outcome> = done.drain(..).map(|(i, r)| outcome(i, r)).collect();
    ledger.record(run, &outcomes)?;
    drop(checkpoints);
    Ok(p)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let rounds = args.get(1).copied().unwrap_or(3).max(1);
    let group = args.get(2).map_or(GROUP, |g| *g as usize).max(1);
    let mut all = Vec::new();
    for _ in 0..rounds {
        all.push(round(n, group)?);
    }
    let per = |f: fn(&Phases) -> Duration| {
        median(
            all.iter()
                .map(|p| f(p).as_secs_f64() * 1e6 / n as f64)
                .collect(),
        )
    };
    let (admit, mark, record, commit) = (
        per(|p| p.admit),
        per(|p| p.mark),
        per(|p| p.record),
        per(|p| p.commit),
    );
    println!(
        "µs of CPU an invitation (median of {rounds}, {n} invitations): admit {admit:.2}, mark {mark:.2}, record {record:.2}, commit {commit:.2}, total {:.2}",
        per(|p| p.admit + p.mark + p.record + p.commit)
    );
    Ok(())
}
