#!/usr/bin/env python3
"""Reproduces the figures in BENCHMARKS.md.

    python3 benches/bench.py [--scenario NAME]... [--repeat N] [--rows N] [--nights N]
                             [--bin PATH] [--before BIN]

The sync scenario's size is fixed (200 customers x 50 users), whatever --rows says.

Builds bbinvite in release mode, starts `bbinvite sandbox` on a free loopback port for
each run, generates the input, runs the scenario, checks the sandbox's ground truth
(every key created exactly once, none missing), and prints medians with min and max.
Peak memory is the child's max RSS (getrusage), wall time is measured around the run.
Everything stays on 127.0.0.1; every loop is bounded.
"""

import argparse
import json
import os
import socket
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "bbinvite")
API_KEY = "bench-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """`bbinvite sandbox` in a child process, on a free port."""

    def __init__(self, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BIN, "sandbox", "--addr", f"127.0.0.1:{self.port}", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            raise SystemExit(f"sandbox did not start: {line!r}")
        # The sandbox's clock (`post_times_ms`) starts a moment before it says it listens:
        # times placed against this one read at most a few ms late.
        self.epoch = time.time()

    def truth(self):
        with urllib.request.urlopen(self.url + "/_sandbox/truth", timeout=60) as r:
            return json.load(r)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measured(args, env):
    """Runs `args` under a python child that reports the grandchild's own peak RSS and CPU
    time (user + system, getrusage of the child), its wall time, and when it started
    (`start`, seconds since the epoch)."""
    code = (
        "import resource,subprocess,sys,time,json;"
        "t=time.perf_counter();s=time.time();p=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE,stderr=subprocess.PIPE);"
        "w=time.perf_counter()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN);r=u.ru_maxrss;"
        "sys.stderr.write(p.stderr.decode(errors='replace'));"
        "print(json.dumps({'code':p.returncode,'wall':w,'start':s,'rss_kib':r,'cpu':u.ru_utime+u.ru_stime,"
        "'out':p.stdout.decode(errors='replace')}))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
    result = json.loads(proc.stdout)
    result["err"] = proc.stderr.decode(errors="replace")
    return result


def write_invitees(path, rows, customers):
    with open(path, "w") as f:
        f.write("email,name,customer\n")
        for i in range(rows):
            c = i % customers + 1
            f.write(f"user{i}@bench.example,User {i},Customer {c:05d} Ltd\n")


def env_for(sandbox):
    env = dict(os.environ)
    env["BILLINGBOOTH_API_KEY"] = API_KEY
    env["BILLINGBOOTH_BASE_URL"] = sandbox.url
    return env


def check_truth(truth, rows):
    created = [k["created"] for k in truth["keys"]]
    doubled = sum(1 for c in created if c > 1)
    present = sum(1 for c in created if c >= 1)
    return doubled, rows - present


def scenario_pipeline(args, work):
    """Issue 2: N rows, no rate limit, concurrency 32, ledger on."""
    rows = args.rows
    customers = 200
    inp = os.path.join(work, "in.csv")
    write_invitees(inp, rows, customers)
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", str(customers))
        ledger = os.path.join(work, f"pipeline-{i}.db")
        try:
            r = measured(
                [BIN, "run", inp, "--ledger", ledger, "--rate", "1000000", "--burst", "1000000",
                 "--concurrency", "32", "--json", "-q"],
                env_for(sb),
            )
            doubled, missing = check_truth(sb.truth(), rows)
        finally:
            sb.stop()
        if r["code"] != 0:
            raise SystemExit(f"run failed ({r['code']}): {r['err'][-2000:]}")
        results.append({"wall": r["wall"], "rss_mib": r["rss_kib"] / 1024, "rows_per_s": rows / r["wall"],
                        "doubled": doubled, "missing": missing})
        print(f"  pipeline {rows} rows #{i + 1}: {r['wall']:.2f}s, {r['rss_kib'] / 1024:.1f} MiB, "
              f"{rows / r['wall']:.0f} rows/s, doubled {doubled}, missing {missing}", flush=True)
    return results


def scenario_faults(args, work):
    """Issue 3: N rows, fail-rate 10%, drop-rate 2%: runs until done, duplicates, losses."""
    rows = args.rows
    customers = 200
    inp = os.path.join(work, "in.csv")
    write_invitees(inp, rows, customers)
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", str(customers), "--fail-rate", "0.10", "--drop-rate", "0.02",
                     "--seed", str(1000 + i))
        ledger = os.path.join(work, f"faults-{i}.db")
        runs, wall = 0, 0.0
        try:
            for _ in range(10):
                runs += 1
                r = measured([BIN, "run", inp, "--ledger", ledger, "--rate", "1000000", "--burst", "1000000",
                              "--concurrency", "32", "--json", "-q"], env_for(sb))
                wall += r["wall"]
                if r["code"] == 0:
                    break
            doubled, missing = check_truth(sb.truth(), rows)
        finally:
            sb.stop()
        results.append({"runs": runs, "wall": wall, "doubled": doubled, "missing": missing})
        print(f"  faults {rows} rows #{i + 1}: {runs} runs, {wall:.2f}s, doubled {doubled}, missing {missing}",
              flush=True)
    return results


def csv_baseline_binary():
    """Builds benches/csv_baseline.rs in release mode and returns its path."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "csv_baseline", "--no-run", "--message-format=json", "--quiet"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE,
    ).stdout.decode()
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg["target"]["name"] == "csv_baseline":
            return msg["executable"]
    raise SystemExit("csv_baseline was not built")


def scenario_validate(args, work):
    """Issue 4: `validate` on a large CSV against many customers, beside csv-crate reading."""
    rows = args.rows
    customers = 50_000
    inp = os.path.join(work, "big.csv")
    write_invitees(inp, rows, customers)
    baseline = csv_baseline_binary()
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", str(customers))
        ledger = os.path.join(work, f"validate-{i}.db")
        try:
            env = env_for(sb)
            cold = measured([BIN, "validate", inp, "--ledger", ledger, "--rate", "100000", "-q"], env)
            warm = measured([BIN, "validate", inp, "--ledger", ledger, "--rate", "100000", "-q"], env)
        finally:
            sb.stop()
        base = measured([baseline, inp], None)
        for r in (cold, warm):
            if r["code"] != 0:
                raise SystemExit(f"validate failed ({r['code']}): {r['err'][-2000:]}")
        results.append({
            "cold_wall": cold["wall"], "warm_wall": warm["wall"], "csv_wall": base["wall"],
            "warm_ratio": warm["wall"] / base["wall"], "peak_mib": max(cold["rss_kib"], warm["rss_kib"]) / 1024,
        })
        print(f"  validate {rows} rows #{i + 1}: cold {cold['wall']:.2f}s, warm {warm['wall']:.2f}s, "
              f"csv crate {base['wall']:.2f}s, ratio {warm['wall'] / base['wall']:.2f}, "
              f"peak {max(cold['rss_kib'], warm['rss_kib']) / 1024:.1f} MiB", flush=True)
    return results


def run_bbinvite(sb, inp, ledger, *flags, binary=None):
    """`bbinvite run INPUT` against `sb` (with `binary`, that build); returns the
    measurement, failing on exit >= 2."""
    r = measured([binary or BIN, "run", inp, "--ledger", ledger, "--json", "-q", *flags], env_for(sb))
    if r["code"] not in (0, 1):
        raise SystemExit(f"run failed ({r['code']}): {r['err'][-2000:]}")
    return r


def oha_binary():
    for candidate in (os.path.expanduser("~/.cargo/bin/oha"), "/usr/local/bin/oha"):
        if os.path.exists(candidate):
            return candidate
    print("  installing oha from crates.io (once)...", flush=True)
    subprocess.run(["cargo", "install", "oha", "--locked", "--quiet"], check=True)
    return os.path.expanduser("~/.cargo/bin/oha")


def oha_run(sb, requests, concurrency):
    """The ceiling: oha POSTing invitations to the same sandbox (all but the first are 409s).
    Returns its requests per second and its CPU time (user + system) per request."""
    r = measured(
        [oha_binary(), "-n", str(requests), "-c", str(concurrency), "--no-tui", "--output-format", "json",
         "-m", "POST", "-H", f"Authorization: Bearer {API_KEY}", "-H", "Content-Type: application/json",
         "-d", '{"email": "ceiling@bench.example", "name": "Ceiling"}', f"{sb.url}/customer/1/access"],
        None,
    )
    if r["code"] != 0:
        raise SystemExit(f"oha failed ({r['code']}): {r['err'][-2000:]}")
    return json.loads(r["out"])["summary"]["requestsPerSec"], r["cpu"] / requests


def scenario_throughput(args, work):
    """Issue 5.1: 100,000 rows, no latency, no rate limit, concurrency 64, beside oha: rows
    per second, CPU time per invitation (user + system), and connections opened."""
    rows = args.rows if args.rows != 10_000 else 100_000
    inp = os.path.join(work, "throughput.csv")
    write_invitees(inp, rows, 200)
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", "200")
        try:
            r = run_bbinvite(sb, inp, os.path.join(work, f"throughput-{i}.db"),
                             "--rate", "1000000", "--burst", "1000000", "--concurrency", "64")
            truth = sb.truth()
            doubled, missing = check_truth(truth, rows)
            connections = truth.get("connections_total", 0)
            ceiling, oha_cpu = oha_run(sb, rows, 64)
        finally:
            sb.stop()
        ours, cpu = rows / r["wall"], r["cpu"] / rows
        # Before the first invitation and after the last, on the sandbox's clock: the
        # run's start (input, directory, ledger) and its end (summary, last checkpoint).
        times = sorted(truth["post_times_ms"])
        started_ms = (r["start"] - sb.epoch) * 1000
        first_post_ms = times[0] - started_ms
        tail_ms = started_ms + r["wall"] * 1000 - times[-1]
        results.append({"bbinvite_rps": ours, "oha_rps": ceiling, "share": ours / ceiling,
                        "cpu_us": cpu * 1e6, "oha_cpu_us": oha_cpu * 1e6, "cpu_ratio": cpu / oha_cpu,
                        "connections": connections, "peak_mib": r["rss_kib"] / 1024,
                        "first_post_ms": first_post_ms, "tail_ms": tail_ms,
                        "doubled": doubled, "missing": missing})
        print(f"  throughput #{i + 1}: bbinvite {ours:.0f}/s, oha {ceiling:.0f}/s, share {ours / ceiling:.2f}; "
              f"CPU {cpu * 1e6:.0f} us vs oha {oha_cpu * 1e6:.0f} us a request ({cpu / oha_cpu:.1f}x); "
              f"{connections} connections; peak {r['rss_kib'] / 1024:.1f} MiB; first POST after "
              f"{first_post_ms:.0f} ms, exit {tail_ms:.0f} ms after the last; doubled {doubled}, "
              f"missing {missing}", flush=True)
    return results


def thread_cpu(args, env):
    """Runs `args`, polling each of its threads' CPU time (user + system, from
    /proc/PID/task/*/stat) every 50 ms; returns seconds per thread name, the tokio
    workers summed as `workers`."""
    tick = os.sysconf("SC_CLK_TCK")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = {}
    deadline = time.monotonic() + 3600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            tids = os.listdir(f"/proc/{proc.pid}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            last[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
        time.sleep(0.05)
    if proc.wait(timeout=60) not in (0, 1):
        raise SystemExit("run failed")
    per_name = {}
    for name, secs in last.values():
        key = "workers" if name.startswith("tokio") else name
        per_name[key] = per_name.get(key, 0.0) + secs
    return per_name


def scenario_threads(args, work):
    """Scenario 1's run, its CPU time per invitation split by thread (the ledger's own,
    its checkpoints, the tokio workers, the rest)."""
    rows = args.rows if args.rows != 10_000 else 100_000
    inp = os.path.join(work, "threads.csv")
    write_invitees(inp, rows, 200)
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", "200")
        try:
            per = thread_cpu([BIN, "run", inp, "--ledger", os.path.join(work, f"threads-{i}.db"), "--json", "-q",
                              "--rate", "1000000", "--burst", "1000000", "--concurrency", "64"], env_for(sb))
        finally:
            sb.stop()
        us = {k: v * 1e6 / rows for k, v in per.items()}
        result = {"ledger_us": us.get("ledger", 0.0), "checkpoint_us": us.get("checkpoint", 0.0),
                  "workers_us": us.get("workers", 0.0), "total_us": sum(us.values())}
        result["other_us"] = result["total_us"] - result["ledger_us"] - result["checkpoint_us"] - result["workers_us"]
        results.append(result)
        print(f"  threads #{i + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in result.items()), flush=True)
    return results


def scenario_latency(args, work):
    """Issue 5.2: sandbox latency 50 ms; concurrency 32 against one at a time, and against
    oha at concurrency 32 on the same sandbox (its own ceiling: what its latency allows)."""
    many, one = 3200, 100
    inp_many = os.path.join(work, "latency-many.csv")
    inp_one = os.path.join(work, "latency-one.csv")
    write_invitees(inp_many, many, 200)
    write_invitees(inp_one, one, 200)
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", "200", "--latency-ms", "50")
        try:
            r32 = run_bbinvite(sb, inp_many, os.path.join(work, f"lat32-{i}.db"),
                               "--rate", "1000000", "--burst", "1000000", "--concurrency", "32")
            times = sorted(sb.truth()["post_times_ms"])
            ceiling, _ = oha_run(sb, many, 32)
        finally:
            sb.stop()
        # The sending phase as the server saw it: first to last invitation, plus the
        # last one's own 50 ms. The start: from the process's start to its first POST.
        sending = (len(times)) / ((times[-1] - times[0] + 50) / 1000.0)
        first_post_ms = times[0] - (r32["start"] - sb.epoch) * 1000
        sb = Sandbox("--generate-customers", "200", "--latency-ms", "50")
        try:
            r1 = run_bbinvite(sb, inp_one, os.path.join(work, f"lat1-{i}.db"),
                              "--rate", "1000000", "--burst", "1000000", "--concurrency", "1")
        finally:
            sb.stop()
        c32, c1 = many / r32["wall"], one / r1["wall"]
        results.append({"c32_per_s": c32, "of_640": c32 / 640, "server_per_s": sending,
                        "server_of_640": sending / 640, "oha_per_s": ceiling, "of_oha": c32 / ceiling,
                        "first_post_ms": first_post_ms, "c1_per_s": c1, "speedup": c32 / c1})
        print(f"  latency #{i + 1}: concurrency 32 {c32:.0f}/s end to end ({c32 / 640:.1%} of 640, "
              f"{c32 / ceiling:.1%} of oha's {ceiling:.0f}/s), {sending:.0f}/s at the server "
              f"({sending / 640:.1%}), first POST {first_post_ms:.0f} ms after start; "
              f"one at a time {c1:.1f}/s, {c32 / c1:.1f}x", flush=True)
    return results


def window_max(times_ms, width_ms=1000):
    """The most requests in any window of `width_ms` (sliding over the requests)."""
    best, lo = 0, 0
    for hi, t in enumerate(times_ms):
        while t - times_ms[lo] >= width_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def scenario_rate(args, work):
    """Issue 5.3: --rate 200 over 3,000 rows and --rate 1000 over 10,000, measured at the sandbox."""
    results = []
    for i in range(args.repeat):
        row = {}
        for rate, rows in ((200, 3000), (1000, 10_000)):
            inp = os.path.join(work, f"rate-{rate}.csv")
            write_invitees(inp, rows, 200)
            sb = Sandbox("--generate-customers", "200")
            try:
                run_bbinvite(sb, inp, os.path.join(work, f"rate-{rate}-{i}.db"), "--rate", str(rate),
                             "--concurrency", "64")
                times = sorted(sb.truth()["post_times_ms"])
            finally:
                sb.stop()
            burst = max(1, rate // 10)
            achieved = (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
            row[f"r{rate}_achieved"] = achieved / rate
            row[f"r{rate}_max_window"] = window_max(times)
            print(f"  rate {rate}/s #{i + 1}: achieved {achieved:.1f}/s ({achieved / rate:.2%}), busiest second "
                  f"{window_max(times)} (limit {rate + burst})", flush=True)
        results.append(row)
    return results


def scenario_scale(args, work):
    """Issue 5.4-5.6: first runs at 10k, 100k, 1M rows; then a rerun of the 1M with nothing
    to do (50,000 customers), and `status` on that 1M-row ledger."""
    customers = 50_000
    results = []
    for i in range(args.repeat):
        row = {}
        for rows in (10_000, 100_000, 1_000_000):
            inp = os.path.join(work, f"scale-{rows}.csv")
            if not os.path.exists(inp):
                write_invitees(inp, rows, customers)
            ledger = os.path.join(work, f"scale-{rows}-{i}.db")
            sb = Sandbox("--generate-customers", str(customers))
            try:
                r = run_bbinvite(sb, inp, ledger, "--rate", "1000000", "--burst", "1000000", "--concurrency", "64")
                doubled, missing = check_truth(sb.truth(), rows)
                row[f"first_{rows}_s"] = r["wall"]
                row[f"first_{rows}_mib"] = r["rss_kib"] / 1024
                if rows == 1_000_000:
                    before = sb.truth()["requests_total"]
                    again = run_bbinvite(sb, inp, ledger, "--rate", "1000000", "--burst", "1000000",
                                         "--concurrency", "64", "--refresh-customers")
                    requests = sb.truth()["requests_total"] - before
                    row["rerun_rows_per_s"] = rows / again["wall"]
                    row["rerun_mib"] = again["rss_kib"] / 1024
                    row["rerun_requests"] = requests
                    status = measured([BIN, "status", "--ledger", ledger], None)
                    row["status_s"] = status["wall"]
            finally:
                sb.stop()
            print(f"  scale {rows} #{i + 1}: {r['wall']:.2f}s, {r['rss_kib'] / 1024:.1f} MiB, "
                  f"doubled {doubled}, missing {missing}", flush=True)
        print(f"  rerun 1M #{i + 1}: {row['rerun_rows_per_s']:.0f} rows/s, {row['rerun_mib']:.1f} MiB, "
              f"{row['rerun_requests']} requests (the directory); status {row['status_s']:.2f}s", flush=True)
        results.append(row)
    return results


def ledger_bytes(ledger):
    """The ledger's size on disk: the .db and its WAL, if one is left."""
    return sum(os.path.getsize(p) for p in (ledger, ledger + "-wal") if os.path.exists(p))


def backdate_runs(ledger, first, last):
    """Dates runs `first`..`last` five years back, as if they were old nights."""
    import sqlite3
    db = sqlite3.connect(ledger)
    db.execute("UPDATE runs SET started_at = '2021-01-01T02:30:00.000Z' WHERE id BETWEEN ? AND ?",
               (first, last))
    db.commit()
    db.close()


def scenario_growth(args, work):
    """A ledger that lasts: the same sheet run night after night (`--nights`, default 30),
    the growth of the ledger over those nights, one no-op night's time against `validate`
    of the same file (directory cached for both), and `compact` of a ledger holding the
    rows of 30 first runs (the first 20 dated five years back)."""
    rows, nights, customers = args.rows, args.nights, 5_000
    inp = os.path.join(work, f"growth-{rows}.csv")
    write_invitees(inp, rows, customers)
    fast = ("--rate", "1000000", "--burst", "1000000", "--concurrency", "64")
    results = []
    for i in range(args.repeat):
        sb = Sandbox("--generate-customers", str(customers))
        ledger = os.path.join(work, f"growth-{rows}-{i}.db")
        try:
            env = env_for(sb)
            run_bbinvite(sb, inp, ledger, *fast)
            after_first = ledger_bytes(ledger)
            noop = []
            for _ in range(nights):
                noop.append(run_bbinvite(sb, inp, ledger, *fast))
            grown = ledger_bytes(ledger) - after_first
            check = measured([BIN, "validate", inp, "--ledger", ledger, "--rate", "100000", "-q"], env)
            if check["code"] not in (0, 1):
                raise SystemExit(f"validate failed ({check['code']}): {check['err'][-2000:]}")
            again = run_bbinvite(sb, inp, ledger, *fast)
            posts = sum(k["posts"] for k in sb.truth()["keys"])
        finally:
            sb.stop()
        compact = compact_run(work, rows, customers, i)
        results.append({
            "grown_kib": grown / 1024, "night_kib": grown / 1024 / nights,
            "rerun_s": again["wall"], "validate_s": check["wall"],
            "rerun_ratio": again["wall"] / check["wall"], "rerun_rows_s": rows / again["wall"],
            "rerun_cpu_ratio": again["cpu"] / check["cpu"],
            "rerun_mib": max(r["rss_kib"] for r in noop + [again]) / 1024,
            "compact_s": compact["wall"], "compact_mb_before": compact["before"] / 1e6,
            "compact_mb_after": compact["after"] / 1e6,
        })
        print(f"  growth {rows} rows #{i + 1}: {nights} nights grew {grown / 1024:.1f} KiB "
              f"(first run {after_first / 1e6:.1f} MB; {posts} posts for {rows} keys); no-op rerun "
              f"{again['wall']:.2f}s vs validate {check['wall']:.2f}s ({again['wall'] / check['wall']:.2f}x, "
              f"{rows / again['wall']:.0f} rows/s, CPU {again['cpu'] / check['cpu']:.2f}x, "
              f"{results[-1]['rerun_mib']:.1f} MiB); compact "
              f"{compact['wall']:.2f}s, {compact['before'] / 1e6:.1f} -> {compact['after'] / 1e6:.1f} MB",
              flush=True)
    return results


def thirty_first_runs(work, ledger, rows, customers, name, binary=None):
    """30 first runs (`bbinvite run`, by `binary` if given) on `ledger`, each of new rows,
    `rows` in all over `customers` customers; the inputs are `name-N.csv` in `work`."""
    runs = 30
    sb = Sandbox("--generate-customers", str(customers))
    try:
        per = rows // runs
        for night in range(runs):
            inp = os.path.join(work, f"{name}-{night}.csv")
            with open(inp, "w") as f:
                f.write("email,name,customer\n")
                for k in range(night * per, (night + 1) * per):
                    f.write(f"user{k}@bench.example,User {k},Customer {k % customers + 1:05d} Ltd\n")
            run_bbinvite(sb, inp, ledger, "--rate", "1000000", "--burst", "1000000", "--concurrency", "64",
                         binary=binary)
    finally:
        sb.stop()


def compact_run(work, rows, customers, i):
    """`compact` of a ledger holding `rows` rows over 30 first runs, 20 of them old."""
    ledger = os.path.join(work, f"compact-{rows}-{i}.db")
    thirty_first_runs(work, ledger, rows, customers, "compact-night")
    backdate_runs(ledger, 1, 20)
    before = ledger_bytes(ledger)
    r = measured([BIN, "compact", "--ledger", ledger, "--older-than", "90", "--json"], None)
    if r["code"] != 0:
        raise SystemExit(f"compact failed ({r['code']}): {r['err'][-2000:]}")
    return {"wall": r["wall"], "before": before, "after": ledger_bytes(ledger)}


def build_compact_ledger(work, rows, binary=None, seed_runs_rows=30_000, customers=5_000):
    """A ledger holding `rows` rows over 30 runs, 20 of them dated five years back, made
    in minutes: 30 real first runs of `seed_runs_rows` rows in all (`bbinvite run`), then
    each run's invitations, row records and attempts copied with SQL (new e-mail keys,
    the same shapes) until the ledger holds `rows` rows, each run's records kept together
    in id order as a real run writes them. `binary` makes it (the older of two builds
    compared, so both read it)."""
    runs = 30
    ledger = os.path.join(work, f"compact-seed-{rows}.db")
    thirty_first_runs(work, ledger, seed_runs_rows, customers, "compact-seed", binary)
    import sqlite3
    db = sqlite3.connect(ledger)
    copies = max(1, rows // db.execute("SELECT count(*) FROM rows").fetchone()[0])
    inv = db.execute("SELECT max(id) FROM invitations").fetchone()[0]
    inv_cols = ("customer_id, email, name, user_id, access_status, state, access_user_id, attempts, "
                "last_http, last_error, unsure, created_at, updated_at, done_at, cells_hash, invited_run")
    row_cols = "run_id, source_id, line, cells, email, customer_id, status, error, updated_at, seen_hash"
    att_cols = "run_id, at, action, http_status, latency_ms, class, error"
    for k in range(1, copies):
        db.execute(f"INSERT INTO invitations (id, email_key, {inv_cols}) "
                   f"SELECT id + {k * inv}, 'c{k}.' || email_key, {inv_cols} FROM invitations WHERE id <= {inv}")
    for t, cols in (("rows", row_cols), ("attempts", att_cols)):
        db.execute(f"CREATE TEMP TABLE big_{t} AS SELECT * FROM {t} WHERE 0")
        for run in range(1, runs + 1):
            for k in range(copies):
                # Row records of a copy follow the run's own, as later lines of its input.
                picked = cols.replace("line", f"line + {k * 100_000}") if t == "rows" else cols
                db.execute(f"INSERT INTO big_{t} (invitation_id, {cols}) SELECT invitation_id + {k * inv}, "
                           f"{picked} FROM {t} WHERE run_id = {run} ORDER BY id")
        db.execute(f"DELETE FROM {t}")
        db.execute(f"INSERT INTO {t} (invitation_id, {cols}) SELECT invitation_id, {cols} FROM big_{t} ORDER BY rowid")
    db.commit()
    db.execute("VACUUM")
    db.close()
    backdate_runs(ledger, 1, 20)
    return ledger


def scenario_compact(args, work):
    """`compact --older-than 90` of a ledger of `--rows` rows over 30 runs, 20 old (made by
    `build_compact_ledger`), on a fresh copy each time; with `--before BIN`, that build
    is timed on its own copy too, alternately."""
    seed = build_compact_ledger(work, args.rows, binary=args.before or BIN)
    builds = [("now", BIN)] + ([("before", args.before)] if args.before else [])
    results = []
    for i in range(args.repeat):
        out = {}
        for name, binary in builds:
            ledger = os.path.join(work, f"compact-{name}.db")
            shutil.copyfile(seed, ledger)
            before = ledger_bytes(ledger)
            r = measured([binary, "compact", "--ledger", ledger, "--older-than", "90", "--json"], None)
            if r["code"] != 0:
                raise SystemExit(f"compact failed ({r['code']}): {r['err'][-2000:]}")
            out[f"{name}_s"] = r["wall"]
            out[f"{name}_cpu_s"] = r["cpu"]
            out[f"{name}_mb_after"] = ledger_bytes(ledger) / 1e6
            out["mb_before"] = before / 1e6
        print(f"  compact {args.rows} rows #{i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()),
              flush=True)
        results.append(out)
    return results


def fnv1a(data):
    """FNV-1a 64 of `data`, as the signed integer `bbinvite` stores for a row's cells."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def done_ledger(sb, work, inp, rows, seeded, binary=None):
    """A ledger in which every row of `inp` is done: a real first run of its first
    `seeded` rows (by `binary`, the oldest build compared, so every build can open it),
    then the rest inserted with SQL as that run would have left them (an invitation
    `invited` with its cells' hash, the row's record, one attempt)."""
    import shutil
    import sqlite3
    ledger = os.path.join(work, f"rerun-{rows}.db")
    head = os.path.join(work, f"rerun-head-{seeded}.csv")
    with open(inp) as src, open(head, "w") as dst:
        for _ in range(seeded + 1):
            dst.write(src.readline())
    run_bbinvite(sb, head, ledger, "--rate", "1000000", "--burst", "1000000", "--concurrency", "64",
                 binary=binary)
    db = sqlite3.connect(ledger)
    ids = dict(db.execute("SELECT name, id FROM customers"))
    run, source = db.execute("SELECT run_id, id FROM sources ORDER BY id LIMIT 1").fetchone()
    now = db.execute("SELECT max(updated_at) FROM invitations").fetchone()[0]
    db.execute("UPDATE sources SET file = ? WHERE id = ?", (inp, source))
    with open(inp) as f:
        f.readline()
        for _ in range(seeded):
            f.readline()
        batch = []
        for line_no, line in enumerate(f, start=seeded + 2):
            email, name, customer = line.rstrip("\n").split(",")
            cells = json.dumps([email, name, customer], separators=(",", ":"), ensure_ascii=False)
            batch.append((ids[customer], email, name, cells, line_no))
            if len(batch) == 50_000:
                insert_done(db, batch, run, source, now)
                batch = []
        insert_done(db, batch, run, source, now)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copyfile(ledger, ledger + ".orig")
    return ledger


def insert_done(db, batch, run, source, now):
    for customer_id, email, name, cells, line_no in batch:
        cur = db.execute(
            "INSERT INTO invitations (customer_id, email_key, email, name, state, attempts, last_http,"
            " created_at, updated_at, done_at, cells_hash, invited_run)"
            " VALUES (?, ?, ?, ?, 'invited', 1, 201, ?, ?, ?, ?, ?)",
            (customer_id, email, email, name, now, now, now, fnv1a(cells.encode()), run))
        inv = cur.lastrowid
        db.execute(
            "INSERT INTO rows (run_id, source_id, line, cells, email, customer_id, invitation_id, status,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'invited', ?)",
            (run, source, line_no, cells, email, customer_id, inv, now))
        db.execute(
            "INSERT INTO attempts (invitation_id, run_id, at, action, http_status, latency_ms, class)"
            " VALUES (?, ?, ?, 'invite', 201, 1, 'ok')", (inv, run, now))


def scenario_rerun(args, work):
    """A no-op rerun of `--rows` rows (5,000 customers) on a ledger where every row is
    done, beside `validate` of the same file on the same ledger (directory cached for
    both). The ledger is built from a real first run of 20,000 rows and the rest inserted
    with SQL. With `--before BIN`, BIN does the same on a second copy of the ledger,
    alternately."""
    import shutil
    rows, customers = args.rows, 5_000
    inp = os.path.join(work, f"rerun-{rows}.csv")
    write_invitees(inp, rows, customers)
    fast = ("--rate", "1000000", "--burst", "1000000", "--concurrency", "64")
    results = []
    sb = Sandbox("--generate-customers", str(customers))
    try:
        base = done_ledger(sb, work, inp, rows, min(rows, 20_000), binary=args.before)
        builds = [("now", BIN)] + ([("before", args.before)] if args.before else [])
        copies = {}
        for label, _ in builds:
            copies[label] = os.path.join(work, f"rerun-{label}.db")
            shutil.copyfile(base + ".orig", copies[label])
        env = env_for(sb)
        for i in range(args.repeat):
            row = {}
            for label, binary in builds:
                ledger = copies[label]
                check = measured([binary, "validate", inp, "--ledger", ledger, "--rate", "100000", "-q"], env)
                if check["code"] not in (0, 1):
                    raise SystemExit(f"validate failed ({check['code']}): {check['err'][-2000:]}")
                before = sb.truth()["requests_total"]
                again = measured([binary, "run", inp, "--ledger", ledger, "--json", "-q", *fast], env)
                if again["code"] not in (0, 1):
                    raise SystemExit(f"run failed ({again['code']}): {again['err'][-2000:]}")
                summary = json.loads(again["out"])
                posts = sb.truth()["requests_total"] - before
                row.update({
                    f"{label}_rows_s": rows / again["wall"],
                    f"{label}_ratio": again["wall"] / check["wall"],
                    f"{label}_cpu_ratio": again["cpu"] / check["cpu"],
                    f"{label}_mib": again["rss_kib"] / 1024,
                    f"{label}_validate_s": check["wall"],
                })
                print(f"  rerun {rows} rows #{i + 1} {label}: {again['wall']:.2f}s "
                      f"({rows / again['wall']:.0f} rows/s, CPU {again['cpu']:.2f}s), validate "
                      f"{check['wall']:.2f}s (CPU {check['cpu']:.2f}s): {again['wall'] / check['wall']:.2f}x "
                      f"wall, {again['cpu'] / check['cpu']:.2f}x CPU, {again['rss_kib'] / 1024:.1f} MiB; "
                      f"already done {summary.get('already_done')}, sent {summary.get('sent')}, "
                      f"{posts} requests", flush=True)
            results.append(row)
    finally:
        sb.stop()
    return results


SCENARIOS = {
    "pipeline": scenario_pipeline,
    "faults": scenario_faults,
    "validate": scenario_validate,
    "throughput": scenario_throughput,
    "threads": scenario_threads,
    "latency": scenario_latency,
    "rate": scenario_rate,
    "scale": scenario_scale,
    "growth": scenario_growth,
    "compact": scenario_compact,
    "rerun": scenario_rerun,
}


def summarize(name, results):
    print(f"\n{name}: median (min .. max) over {len(results)} runs")
    for key in results[0]:
        vals = [r[key] for r in results]
        print(f"  {key:<12} {statistics.median(vals):>12.2f}  ({min(vals):.2f} .. {max(vals):.2f})")


def write_sync_sheet(path, customers, users, changed):
    """The generated sandbox's users as a sheet, with `changed` of them replaced by new
    users (the last user of the first `changed` customers)."""
    with open(path, "w") as f:
        f.write("email,name,customer\n")
        for c in range(1, customers + 1):
            for j in range(1, users + 1):
                if j == users and c <= changed:
                    f.write(f"new{j}@customer{c}.example,New {j},Customer {c:05d} Ltd\n")
                else:
                    f.write(f"user{j}@customer{c}.example,User {j},Customer {c:05d} Ltd\n")


def scenario_sync(args, work):
    """Issue 6: a nightly `sync --prune --yes` of 200 customers x 50 users with 1% of the
    users replaced, on a fresh ledger and again unchanged, beside the same night by `run`."""
    customers, users, changed = 200, 50, 100
    sheet = os.path.join(work, "sync.csv")
    write_sync_sheet(sheet, customers, users, changed)
    fast = ["--rate", "1000000", "--burst", "1000000", "--concurrency", "32", "--json", "-q"]
    seed = ("--generate-customers", str(customers), "--users-per-customer", str(users))
    results = []
    for i in range(args.repeat):
        row = {}
        sb = Sandbox(*seed)
        ledger = os.path.join(work, f"sync-{i}.db")
        try:
            for night in ("sync1", "sync2"):
                before = sb.truth()["requests_total"]
                r = measured([BIN, "sync", sheet, "--ledger", ledger, "--prune", "--yes", *fast], env_for(sb))
                if r["code"] != 0:
                    raise SystemExit(f"sync failed ({r['code']}): {r['err'][-2000:]}")
                truth = sb.truth()
                row[f"{night}_calls"] = truth["requests_total"] - before
                row[f"{night}_wall"] = r["wall"]
            created = sum(k["created"] for k in truth["keys"])
            doubled = sum(1 for k in truth["keys"] if k["created"] > 1)
            suspends = truth["requests_by_route"]["PUT /customer/{id}/access/{uid}/suspend"]
        finally:
            sb.stop()
        if (created, doubled, suspends) != (changed, 0, changed):
            raise SystemExit(f"sync did the wrong night: created {created}, doubled {doubled}, suspended {suspends}")
        sb = Sandbox(*seed)
        ledger = os.path.join(work, f"sync-run-{i}.db")
        try:
            r = measured([BIN, "run", sheet, "--ledger", ledger, *fast], env_for(sb))
            truth = sb.truth()
        finally:
            sb.stop()
        if r["code"] != 0:
            raise SystemExit(f"run failed ({r['code']}): {r['err'][-2000:]}")
        row["run_calls"] = truth["requests_total"]
        row["run_wall"] = r["wall"]
        results.append(row)
        print(f"  sync #{i + 1}: first sync {row['sync1_calls']} calls {row['sync1_wall']:.2f}s, "
              f"unchanged sync {row['sync2_calls']} calls {row['sync2_wall']:.2f}s, "
              f"run {row['run_calls']} calls {row['run_wall']:.2f}s", flush=True)
        if row["sync1_calls"] >= row["run_calls"]:
            raise SystemExit("sync made no fewer calls than run")
    return results


SCENARIOS["sync"] = scenario_sync


def write_report_input(path, rows, customers):
    """Invitees with problems sprinkled in: every 997th row a bad e-mail, every 1000th an
    unknown customer (about 2,000 rows needing attention: more than the page lists)."""
    with open(path, "w") as f:
        f.write("email,name,customer\n")
        for i in range(rows):
            email = f"user{i}@bench.example" if i % 997 else f"user{i}.bench.example"
            customer = f"Customer {i % customers + 1:05d} Ltd" if i % 1000 else "No Such Customer"
            f.write(f"{email},User {i},{customer}\n")


def timed_child(args):
    """Wall time and CPU time (user + system, getrusage of the child) of one command."""
    before = os.times()
    t = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    wall = time.perf_counter() - t
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{args[1]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def scenario_report(args, work):
    """`bbinvite report` of one N-row run (default 1,000,000) with 2% of the invitations
    dropped unanswered (each checked, then confirmed) and ~2,000 problem rows: the run is made once, the report
    written `--repeat` times. Target: under 2 s and under 2 MB."""
    rows, customers = args.rows, 50_000
    inp = os.path.join(work, f"report-{rows}.csv")
    write_report_input(inp, rows, customers)
    ledger = os.path.join(work, f"report-{rows}.db")
    sb = Sandbox("--generate-customers", str(customers), "--drop-rate", "0.02")
    try:
        r = run_bbinvite(sb, inp, ledger, "--rate", "1000000", "--burst", "1000000", "--concurrency", "64")
    finally:
        sb.stop()
    if r["code"] not in (0, 1):
        raise SystemExit(f"run failed ({r['code']}): {r['err'][-2000:]}")
    print(f"  the run: {rows} rows in {r['wall']:.1f}s", flush=True)
    out = os.path.join(work, "report.html")
    results = []
    for i in range(args.repeat):
        wall, cpu = timed_child([BIN, "report", "--ledger", ledger, "--output", out, "-q"])
        size = os.path.getsize(out)
        results.append({"wall_s": wall, "cpu_s": cpu, "cpu_us_per_row": cpu / rows * 1e6, "size_kb": size / 1024})
        print(f"  report #{i + 1}: {wall:.2f}s wall, {cpu:.2f}s CPU ({cpu / rows * 1e6:.2f} us a row), "
              f"{size / 1024:.0f} KB", flush=True)
    return results


SCENARIOS["report"] = scenario_report


def scenario_rate_forms(args, work):
    """--rate as a person writes it: 0.5 (one every 2 s) over 8 rows, 300/min over 60 rows.

    Achieved is (requests - 1) over the span from the first POST to the last, at the
    sandbox; 100% is the rate asked for. The busiest window of one period must hold at
    most rate + burst (the burst is 1 at these rates)."""
    results = []
    for i in range(args.repeat):
        row = {}
        for label, flag, per_sec, rows in (("0.5/s", "0.5", 0.5, 8), ("300/min", "300/min", 5.0, 60)):
            inp = os.path.join(work, f"rate-forms-{rows}.csv")
            write_invitees(inp, rows, 20)
            sb = Sandbox("--generate-customers", "20")
            try:
                run_bbinvite(sb, inp, os.path.join(work, f"rate-forms-{rows}-{i}.db"), "--rate", flag,
                             "--concurrency", "4")
                times = sorted(sb.truth()["post_times_ms"])
            finally:
                sb.stop()
            achieved = (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
            row[f"{label}_achieved"] = achieved / per_sec
            print(f"  rate {label} #{i + 1}: achieved {achieved:.3f}/s ({achieved / per_sec:.2%}) "
                  f"over {len(times)} invitations", flush=True)
        results.append(row)
    return results


SCENARIOS["rate_forms"] = scenario_rate_forms


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=None,
                    help="rows per input (default: 10,000; 1,000,000 for validate)")
    ap.add_argument("--nights", type=int, default=30, help="no-op nights of the growth scenario")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--before", metavar="BIN",
                    help="compact, rerun: another build (the one before a change) timed alternately")
    ap.add_argument("--bin", help="the bbinvite binary to measure (implies --no-build), "
                    "e.g. a copy of an earlier build to compare against")
    args = ap.parse_args()
    if args.bin:
        global BIN
        BIN = os.path.abspath(args.bin)
        args.no_build = True
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="bbinvite-bench-") as work:
        for name in args.scenario or list(SCENARIOS):
            print(f"{name}:", flush=True)
            scenario_args = argparse.Namespace(**vars(args))
            if scenario_args.rows is None:
                scenario_args.rows = 1_000_000 if name in ("validate", "report", "rerun") else 10_000


                scenario_args.rows = {"validate": 1_000_000, "growth": 200_000, "compact": 1_000_000}.get(name, 10_000)
            summarize(name, SCENARIOS[name](scenario_args, work))


if __name__ == "__main__":
    main()
