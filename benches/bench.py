#!/usr/bin/env python3
"""Reproduces the figures in BENCHMARKS.md.

    python3 benches/bench.py [--scenario NAME]... [--repeat N] [--rows N]

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
    """Runs `args` under a python child that reports the grandchild's own peak RSS."""
    code = (
        "import resource,subprocess,sys,time,json;"
        "t=time.perf_counter();p=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE,stderr=subprocess.PIPE);"
        "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "sys.stderr.write(p.stderr.decode(errors='replace'));"
        "print(json.dumps({'code':p.returncode,'wall':w,'rss_kib':r,'out':p.stdout.decode(errors='replace')}))"
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


SCENARIOS = {"pipeline": scenario_pipeline, "faults": scenario_faults}


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="bbinvite-bench-") as work:
        for name in args.scenario or ["pipeline", "faults"]:
            print(f"{name}:", flush=True)
            summarize(name, SCENARIOS[name](args, work))


if __name__ == "__main__":
    main()
