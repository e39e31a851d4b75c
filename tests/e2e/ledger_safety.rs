//! The ledger's safety: one writer per ledger file whatever its name, a bounded WAL
//! whose work reaches the `.db` within seconds, a ledger deleted or replaced under a
//! run, and a full disk after the first invitations went out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;
use bbinvite::sandbox::Faults;

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A slow first run that holds the ledger until killed, once it has sent something.
fn slow_holder(w: &World, ledger: &Path, file: &Path) -> Child {
    w.faults(Faults {
        latency_ms: 100,
        ..w.sandbox.faults()
    });
    let child = spawn_on(
        w,
        ledger,
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "10",
            "--concurrency",
            "1",
        ],
    );
    assert!(
        wait_for(w, Duration::from_secs(60), |t| posts(t) > 0),
        "the first run never sent"
    );
    child
}

fn assert_refused_busy(out: &Output, holder: &Child) {
    assert_eq!(code(out), 4, "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{}", text(out));
    assert!(
        stderr.contains(&format!("pid {}", holder.id())),
        "names the holder: {}",
        text(out)
    );
}

#[test]
fn a_second_run_through_a_symlink_to_the_ledger_exits_4() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let first = slow_holder(&w, &w.ledger(), &file);
    let link = w.path("link.db");
    std::os::unix::fs::symlink(w.ledger(), &link).unwrap();
    let out = run_on(&w, &link, &["run", file.to_str().unwrap()]);
    assert_refused_busy(&out, &first);
    kill(first);
}

#[test]
fn a_second_run_through_another_name_of_the_ledger_exits_4() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let first = slow_holder(&w, &w.ledger(), &file);
    std::fs::create_dir(w.path("x")).unwrap();
    let other: PathBuf = w.dir.path().join("x").join("..").join("ledger.db");
    let out = run_on(&w, &other, &["run", file.to_str().unwrap()]);
    assert_refused_busy(&out, &first);
    // Relative to the working directory, as typed by hand.
    let out = run_on(&w, Path::new("./x/../ledger.db"), &["retry"]);
    assert_refused_busy(&out, &first);
    // A hard link is the same file under a name of its own.
    let hard = w.path("hard.db");
    std::fs::hard_link(w.ledger(), &hard).unwrap();
    let out = run_on(&w, &hard, &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    kill(first);
}

#[test]
fn a_second_run_after_the_lock_file_was_deleted_exits_4() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let first = slow_holder(&w, &w.ledger(), &file);
    let _ = std::fs::remove_file(w.path("ledger.db.lock"));
    let out = run_on(&w, &w.ledger(), &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    kill(first);
}

#[test]
fn the_pid_file_is_gone_when_the_run_ends() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let left: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_missing_ledger_folder_is_one_line_naming_the_ledger() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let ledger = w.path("no-such-folder").join("ledger.db");
    let out = run_on(&w, &ledger, &["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{}", text(&out));
    assert!(
        stderr.contains(&ledger.display().to_string()),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains(".lock"), "{}", text(&out));
    assert!(stderr.contains("no-such-folder"), "{}", text(&out));
    assert_eq!(posts(&w.truth()), 0);
}

/// The size of the ledger's `-wal`, or 0 when there is none.
fn wal_size(ledger: &Path) -> u64 {
    let mut wal = ledger.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The WAL's bound for a fast run of a few thousand rows: far below what it reached
/// when checkpoints never completed (over 100 MB for this run).
const WAL_BOUND: u64 = 32 * 1024 * 1024;

#[test]
fn the_wal_stays_bounded_during_a_fast_run() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 4000));
    let child = spawn_on(
        &w,
        &w.ledger(),
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "100000",
            "--concurrency",
            "16",
            "-q",
        ],
    );
    let mut child = child;
    let mut largest = 0;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        largest = largest.max(wal_size(&w.ledger()));
        assert!(start.elapsed() < Duration::from_secs(180), "the run hung");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        largest < WAL_BOUND,
        "the WAL reached {} MB",
        largest / 1_000_000
    );
    assert_eq!(w.truth().keys.len(), 4000);
}

/// Invitations recorded `invited` in a copy of the `.db` alone, without its WAL; None
/// while the copy cannot be read (caught mid-checkpoint).
fn invited_in_db_alone(w: &World) -> Option<i64> {
    let copy = w.path("backup.db");
    std::fs::copy(w.ledger(), &copy).ok()?;
    let conn = rusqlite::Connection::open(&copy).ok()?;
    let n = conn
        .query_row(
            "SELECT count(*) FROM invitations WHERE state = 'invited'",
            [],
            |r| r.get(0),
        )
        .ok();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(w.path(&format!("backup.db{suffix}")));
    }
    n
}

#[test]
fn the_db_file_alone_holds_what_was_sent_within_seconds() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 1500));
    let child = spawn_on(
        &w,
        &w.ledger(),
        &["run", file.to_str().unwrap(), "--rate", "50", "-q"],
    );
    assert!(wait_for(&w, Duration::from_secs(60), |t| posts(t) >= 100));
    let created = w.truth().keys.iter().filter(|k| k.created == 1).count() as i64;
    // Polled, with a bound: the run goes on for half a minute more, so what the copy
    // holds can only have come from a checkpoint, not from the close at the end.
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(15) {
        seen = invited_in_db_alone(&w);
        if seen.is_some_and(|n| n >= created) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_running = {
        let mut c = child;
        let running = c.try_wait().unwrap().is_none();
        kill(c);
        running
    };
    assert!(still_running, "the run ended before the check");
    assert!(
        seen.is_some_and(|n| n >= created),
        "the .db alone holds {seen:?} invitations of the {created} sent"
    );
}

fn assert_stopped_for_a_lost_ledger(out: &Output) {
    assert_eq!(code(out), 3, "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("deleted or replaced"))
        .unwrap_or_else(|| panic!("says the ledger is gone: {}", text(out)));
    assert!(line.contains("ledger.db"), "{line}");
}

fn lost_ledger_run(w: &World, file: &Path) -> Child {
    w.faults(Faults {
        latency_ms: 5,
        ..w.sandbox.faults()
    });
    let child = spawn_on(
        w,
        &w.ledger(),
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "200",
            "--concurrency",
            "4",
            "-q",
        ],
    );
    assert!(wait_for(w, Duration::from_secs(60), |t| posts(t) >= 20));
    child
}

#[test]
fn a_ledger_deleted_during_a_run_stops_it_with_exit_3() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 2000));
    let child = lost_ledger_run(&w, &file);
    std::fs::remove_file(w.ledger()).unwrap();
    let out = finish_bounded(child, Duration::from_secs(60));
    assert_stopped_for_a_lost_ledger(&out);
    assert!(posts(&w.truth()) < 2000, "it stopped sending");
}

#[test]
fn a_ledger_replaced_during_a_run_stops_it_with_exit_3() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 2000));
    let child = lost_ledger_run(&w, &file);
    let other = w.write("other.db", "");
    std::fs::rename(&other, w.ledger()).unwrap();
    let out = finish_bounded(child, Duration::from_secs(60));
    assert_stopped_for_a_lost_ledger(&out);
    assert!(posts(&w.truth()) < 2000, "it stopped sending");
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// None where mounting is not allowed (not root): the test says so and passes.
    fn mount(at: PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir: at })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_after_the_first_invitations_exits_3_and_a_rerun_completes_once() {
    let w = World::new();
    let Some(disk) = SmallDisk::mount(w.path("disk"), "64m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let ledger = disk.dir.join("ledger.db");
    // All but 768 KiB of the disk taken, so the ledger fills it after some hundreds
    // of rows; removing the filler leaves room for the whole run.
    let filler = disk.dir.join("filler");
    std::fs::write(&filler, vec![1u8; (64 * 1024 - 768) * 1024]).unwrap();
    let file = w.write("in.csv", &invitees_csv_ids(0, 3000));
    let args = [
        "run",
        file.to_str().unwrap(),
        "--rate",
        "100000",
        "--concurrency",
        "8",
    ];
    let out = run_on(&w, &ledger, &args);
    let sent = posts(&w.truth());
    assert!(sent > 0 && sent < 3000, "{sent} sent\n{}", text(&out));
    assert_eq!(code(&out), 3, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("could not be written"))
        .unwrap_or_else(|| panic!("says the ledger is full: {}", text(&out)));
    assert!(line.contains("sent"), "says what was sent: {line}");

    std::fs::remove_file(&filler).unwrap();
    let out = run_on(&w, &ledger, &args);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!(t.keys.len(), 3000);
    assert!(
        t.keys.iter().all(|k| k.created == 1),
        "each key created once"
    );
}
