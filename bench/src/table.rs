//! The results table (Markdown), from the JSON files the other steps wrote.
//!
//! Over 500 lines: one table per step (proxy, cost, SSE, reload) printed from one results
//! directory, each next to the figures it reads; about half the file is its tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

mod instructions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The results directory of a `bench/run.sh` run.
    #[arg(long)]
    results: PathBuf,
}

/// The peers compared with the gateway, in the table's order.
const PEERS: [&str; 3] = ["nginx", "haproxy", "gateway"];
/// The goal: the gateway's requests/s at least this many times the better peer's.
const GOAL_RPS_RATIO: f64 = 1.10;
/// The cases the goal is judged on (the one-connection case is latency, not throughput).
const GOAL_CASES: [&str; 2] = ["keepalive", "new-connection"];

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = String::new();
    let dir = &args.results;
    if let Ok(machine) = std::fs::read_to_string(dir.join("machine.txt")) {
        writeln!(out, "{}", machine.trim_end())?;
        writeln!(out)?;
    }
    match std::fs::read_to_string(dir.join("proxy.jsonl")) {
        Ok(text) => proxy_tables(&mut out, &parse_proxy(&text)?)?,
        Err(_) => writeln!(out, "(no proxy results)\n")?,
    }
    match std::fs::read_to_string(dir.join("cost.jsonl")) {
        Ok(text) => cost_table(&mut out, &parse_cost(&text)?)?,
        Err(_) => writeln!(out, "### Cost per request\n\n(not run)\n")?,
    }
    match std::fs::read_to_string(dir.join("instructions.jsonl")) {
        Ok(text) => instructions::table(&mut out, &instructions::parse(&text)?)?,
        Err(_) => writeln!(
            out,
            "### User-space instructions per request\n\n(not run)\n"
        )?,
    }
    memory_lines(&mut out, dir);
    sse_lines(&mut out, dir);
    reload_lines(&mut out, dir);
    controller_lines(&mut out, dir);
    std::fs::write(dir.join("table.md"), &out)?;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

#[derive(Debug, Default)]
struct Runs {
    rps: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    /// CPU time of the target's processes per request, in µs.
    cpu_us: Vec<f64>,
    /// Times a CPU of the machine went idle, per 1 000 requests: each is a wake-up later
    /// (on a virtual machine, an exit to the host).
    idle_per_1000: Vec<f64>,
    errors: u64,
    non_2xx: u64,
}

/// A target of the proxy step: `direct`, or a peer with a number of workers (`nginx-2w`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    /// `None` for `direct` (and for results written before workers were recorded).
    workers: Option<u64>,
    rank: usize,
    name: String,
    peer: String,
}

impl Target {
    fn new(name: &str, workers: Option<u64>) -> Self {
        let (peer, suffix) = name.split_once('-').unwrap_or((name, ""));
        let workers = workers.or_else(|| suffix.strip_suffix('w')?.parse().ok());
        let rank = match peer {
            "direct" => 0,
            p => PEERS
                .iter()
                .position(|&k| k == p)
                .map_or(PEERS.len() + 1, |i| i + 1),
        };
        Self {
            workers,
            rank,
            name: name.to_owned(),
            peer: peer.to_owned(),
        }
    }
}

#[derive(Debug, Default)]
struct Proxy {
    /// Cases in the order they first appear.
    cases: Vec<String>,
    runs: BTreeMap<(String, Target), Runs>,
    /// The share of CPU time the host took during each run, in % (`steal` in `/proc/stat`).
    stolen_pct: Vec<f64>,
    /// wrk runs made again because the host took too much during them (`attempts` - 1).
    retried: u64,
}

fn parse_proxy(text: &str) -> anyhow::Result<Proxy> {
    let mut proxy = Proxy::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).with_context(|| format!("parsing {line}"))?;
        let case = row["case"].as_str().unwrap_or("?").to_owned();
        let target = Target::new(
            row["target"].as_str().unwrap_or("?"),
            row["workers"].as_u64(),
        );
        let wrk = &row["wrk"];
        let seconds = wrk["duration_us"].as_f64().unwrap_or(f64::NAN) / 1e6;
        if !proxy.cases.contains(&case) {
            proxy.cases.push(case.clone());
        }
        if let Some(stolen) = row["stolen_pct"].as_f64() {
            proxy.stolen_pct.push(stolen);
        }
        proxy.retried += row["attempts"].as_u64().unwrap_or(1).saturating_sub(1);
        let runs = proxy.runs.entry((case, target)).or_default();
        let requests = wrk["requests"].as_f64().unwrap_or(f64::NAN);
        runs.rps.push(requests / seconds);
        if let Some(cpu) = row["cpu_s"].as_f64() {
            runs.cpu_us.push(cpu * 1e6 / requests);
        }
        if let Some(idle) = row["cpu_idle_entries"].as_f64() {
            runs.idle_per_1000.push(idle * 1000.0 / requests);
        }
        runs.p50_ms
            .push(wrk["p50_us"].as_f64().unwrap_or(f64::NAN) / 1000.0);
        runs.p99_ms
            .push(wrk["p99_us"].as_f64().unwrap_or(f64::NAN) / 1000.0);
        runs.errors += [
            "errors_connect",
            "errors_read",
            "errors_write",
            "errors_timeout",
        ]
        .iter()
        .map(|k| wrk[k].as_u64().unwrap_or(0))
        .sum::<u64>();
        runs.non_2xx += wrk["errors_status"].as_u64().unwrap_or(0);
    }
    Ok(proxy)
}

/// Medians of one target's rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Side {
    rps: f64,
    p99_ms: f64,
}

impl Side {
    fn of(runs: &Runs) -> Self {
        Self {
            rps: median(&runs.rps),
            p99_ms: median(&runs.p99_ms),
        }
    }
}

/// The gateway against nginx and HAProxy with the same number of workers, in one case.
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    workers: u64,
    case: String,
    gateway: Side,
    nginx: Option<Side>,
    haproxy: Option<Side>,
}

impl Comparison {
    fn rps_ratio(&self, peer: Option<Side>) -> Option<f64> {
        peer.map(|p| self.gateway.rps / p.rps)
    }

    fn p99_ratio(&self, peer: Option<Side>) -> Option<f64> {
        peer.map(|p| self.gateway.p99_ms / p.p99_ms)
    }

    /// Requests/s ≥ 1.10 × the better peer's and p99 ≤ both peers'; `None` when a peer or
    /// a figure is missing.
    fn goal_met(&self) -> Option<bool> {
        let (g, n, h) = (self.gateway, self.nginx?, self.haproxy?);
        let all = [g.rps, g.p99_ms, n.rps, n.p99_ms, h.rps, h.p99_ms];
        if !all.iter().all(|v| v.is_finite() && *v > 0.0) {
            return None;
        }
        // As a ratio, so that exactly 1.10 × is met (110.0 >= 1.1 * 100.0 is false in f64).
        let rps = g.rps / n.rps.max(h.rps) >= GOAL_RPS_RATIO;
        Some(rps && g.p99_ms <= n.p99_ms.min(h.p99_ms))
    }
}

/// One comparison per number of workers and goal case that has a gateway target.
fn comparisons(proxy: &Proxy) -> Vec<Comparison> {
    let side = |case: &str, peer: &str, workers: u64| {
        proxy
            .runs
            .iter()
            .find(|((c, t), _)| c == case && t.peer == peer && t.workers == Some(workers))
            .map(|(_, runs)| Side::of(runs))
    };
    let mut workers: Vec<u64> = proxy
        .runs
        .keys()
        .filter(|(_, t)| t.peer == "gateway")
        .filter_map(|(_, t)| t.workers)
        .collect();
    workers.sort_unstable();
    workers.dedup();
    let mut out = Vec::new();
    for w in workers {
        for case in GOAL_CASES {
            let Some(gateway) = side(case, "gateway", w) else {
                continue;
            };
            out.push(Comparison {
                workers: w,
                case: case.to_owned(),
                gateway,
                nginx: side(case, "nginx", w),
                haproxy: side(case, "haproxy", w),
            });
        }
    }
    out
}

fn mode_name(case: &str) -> &str {
    match case {
        "keepalive" | "keep-alive" => "keep-alive",
        "new-connection" => "new connection",
        "one-connection" => "one connection",
        other => other,
    }
}

fn proxy_tables(out: &mut String, proxy: &Proxy) -> anyhow::Result<()> {
    let comparisons = comparisons(proxy);
    writeln!(
        out,
        "### Proxy: the gateway against nginx and HAProxy, same job, same number of workers\n"
    )?;
    writeln!(
        out,
        "Goal, per number of workers and mode: gateway requests/s ≥ {GOAL_RPS_RATIO:.2} × the better of nginx and HAProxy, and gateway p99 ≤ both. Medians of the rounds; ratios are gateway ÷ peer.\n"
    )?;
    writeln!(
        out,
        "| workers | mode | nginx req/s | HAProxy req/s | gateway req/s | nginx p99 ms | HAProxy p99 ms | gateway p99 ms |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|")?;
    let rps = |s: Option<Side>| s.map_or_else(|| "-".into(), |s| format!("{:.0}", s.rps));
    let p99 = |s: Option<Side>| s.map_or_else(|| "-".into(), |s| format!("{:.2}", s.p99_ms));
    for c in &comparisons {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.workers,
            mode_name(&c.case),
            rps(c.nginx),
            rps(c.haproxy),
            rps(Some(c.gateway)),
            p99(c.nginx),
            p99(c.haproxy),
            p99(Some(c.gateway)),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "| workers | mode | gateway / nginx | gateway / HAProxy | p99 gateway / nginx | p99 gateway / HAProxy | goal met |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|:---:|")?;
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.3}"));
    for c in &comparisons {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.workers,
            mode_name(&c.case),
            ratio(c.rps_ratio(c.nginx)),
            ratio(c.rps_ratio(c.haproxy)),
            ratio(c.p99_ratio(c.nginx)),
            ratio(c.p99_ratio(c.haproxy)),
            c.goal_met().map_or("- (a peer is missing)", verdict),
        )?;
    }
    writeln!(out)?;
    if !proxy.stolen_pct.is_empty() {
        let highest = proxy.stolen_pct.iter().copied().fold(0.0, f64::max);
        writeln!(
            out,
            "CPU time the host took from this machine (`steal` in `/proc/stat`) during the runs kept: median {:.1} %, highest {highest:.1} %. Every peer loses what is stolen during its own runs; the more there is, the less a ratio between peers says.{}\n",
            median(&proxy.stolen_pct),
            match proxy.retried {
                0 => String::new(),
                n => format!(
                    " {n} run(s) were made again because the host took more than `BENCH_MAX_STEAL` during them; the least stolen attempt is kept."
                ),
            },
        )?;
    }

    writeln!(
        out,
        "All targets and cases (median of the rounds, min–max in brackets). CPU µs/request: user + system time of the target's processes (nginx: master and workers; HAProxy: its process, all threads; direct: the upstream) over the run, per request answered. CPUs idle: how often any CPU of the machine went idle during the run (cpuidle's counters), per 1 000 requests; each is a wake-up later, which on a virtual machine is an exit to the host.\n"
    )?;
    writeln!(
        out,
        "| case | target | workers | rounds | requests/s | p50 ms | p99 ms | target CPU µs/request | CPUs idle / 1000 requests | socket errors | non-2xx |"
    )?;
    writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for case in &proxy.cases {
        for ((_, target), runs) in proxy.runs.iter().filter(|((c, _), _)| c == case) {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                mode_name(case),
                target.name,
                target.workers.map_or_else(|| "-".into(), |w| w.to_string()),
                runs.rps.len(),
                spread(&runs.rps, 0),
                spread(&runs.p50_ms, 2),
                spread(&runs.p99_ms, 2),
                spread(&runs.cpu_us, 0),
                if runs.idle_per_1000.is_empty() {
                    "-".to_owned()
                } else {
                    spread(&runs.idle_per_1000, 0)
                },
                runs.errors,
                runs.non_2xx
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}

/// One line of `cost.jsonl`: a fixed number of requests through one peer.
#[derive(Debug, Clone, PartialEq)]
struct Cost {
    peer: String,
    workers: Option<u64>,
    mode: String,
    requests: u64,
    /// Requests answered 2xx (the lower of the timed run and the traced run).
    ok: u64,
    cpu_us: Option<f64>,
    syscalls: Option<f64>,
    top: Vec<(String, u64)>,
}

impl Cost {
    fn failed(&self) -> bool {
        self.requests == 0 || self.ok != self.requests
    }
}

fn parse_cost(text: &str) -> anyhow::Result<Vec<Cost>> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).with_context(|| format!("parsing {line}"))?;
        let top = row["top"]
            .as_array()
            .map(|top| {
                top.iter()
                    .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        rows.push(Cost {
            peer: row["peer"].as_str().unwrap_or("?").to_owned(),
            workers: row["workers"].as_u64(),
            mode: row["mode"].as_str().unwrap_or("?").to_owned(),
            requests: row["requests"].as_u64().unwrap_or(0),
            ok: row["ok"].as_u64().unwrap_or(0),
            cpu_us: row["cpu_us_per_request"].as_f64(),
            syscalls: row["syscalls_per_request"].as_f64(),
            top,
        });
    }
    rows.sort_by(|a, b| {
        let key = |c: &Cost| (c.workers, c.mode.clone(), Target::new(&c.peer, None).rank);
        key(a).cmp(&key(b))
    });
    Ok(rows)
}

fn cost_table(out: &mut String, rows: &[Cost]) -> anyhow::Result<()> {
    writeln!(
        out,
        "### Cost per request, over a fixed number of requests\n"
    )?;
    writeln!(
        out,
        "h2load (HTTP/1.1, 32 clients, one thread) sends exactly the same number of requests to each peer. CPU: user + system time of the peer's processes (all threads) over the run ÷ requests. System calls: the same number of requests again under `strace -c -f` attached to the peer's processes (which slows the peer; the counts are what matters) ÷ requests; top 3 by count, per request. New connection: `connection: close` on every request; h2load opens a new connection when the response closes it. A row whose requests were not all answered 2xx is marked failed.\n"
    )?;
    writeln!(
        out,
        "| peer | workers | mode | requests | answered 2xx | CPU µs/request | system calls/request | top system calls per request |"
    )?;
    writeln!(out, "|---|---:|---|---:|---:|---:|---:|---|")?;
    for c in rows {
        let top = c
            .top
            .iter()
            .map(|(name, n)| format!("{name} {:.2}", *n as f64 / c.requests.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let opt = |v: Option<f64>, d: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.d$}"));
        writeln!(
            out,
            "| {} | {} | {} | {} | {}{} | {} | {} | {} |",
            c.peer,
            c.workers.map_or_else(|| "-".into(), |w| w.to_string()),
            mode_name(&c.mode),
            c.requests,
            c.ok,
            if c.failed() { " ❌ failed" } else { "" },
            opt(c.cpu_us, 1),
            opt(c.syscalls, 2),
            if top.is_empty() { "-".into() } else { top },
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn memory_lines(out: &mut String, dir: &Path) {
    let Some(idle) = read_json(&dir.join("idle.json")) else {
        return;
    };
    let Some(targets) = idle.as_object() else {
        return;
    };
    let _ = writeln!(out, "### Memory at rest\n");
    let _ = writeln!(
        out,
        "RSS of each target's processes (nginx: master + workers). Gateway target: < 15 MiB started.\n"
    );
    let _ = writeln!(
        out,
        "| target | RSS MiB, started | RSS MiB, after the proxy and cost runs |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    let mut names: Vec<Target> = targets.keys().map(|k| Target::new(k, None)).collect();
    names.sort();
    for target in names {
        let v = &targets[&target.name];
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            target.name,
            num(&v["start_mib"], 1),
            num(&v["after_mib"], 1)
        );
    }
    let _ = writeln!(out);
}

/// The SSE runs: through each peer, and straight to the backend.
const SSE_RUNS: [(&str, &str); 4] = [
    ("gateway", "sse.json"),
    ("nginx", "sse-nginx.json"),
    ("HAProxy", "sse-haproxy.json"),
    ("direct (no proxy)", "sse-direct.json"),
];

fn sse_lines(out: &mut String, dir: &Path) {
    let runs: Vec<(&str, Value)> = SSE_RUNS
        .iter()
        .filter_map(|(name, file)| Some((*name, read_json(&dir.join(file))?)))
        .collect();
    let Some((_, first)) = runs.first() else {
        let _ = writeln!(out, "### SSE\n\n(not run)\n");
        return;
    };
    let _ = writeln!(
        out,
        "### SSE: {} streams with `?token=` to one operator backend, through each peer\n",
        first["streams"]
    );
    let _ = writeln!(
        out,
        "| figure | {} |",
        runs.iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(runs.len()));
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Value) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, v)| f(v)).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row(out, "workers / processes measured", &|v| {
        let field = |key: &str| match &v[key] {
            Value::Null => "-".to_owned(),
            x => x.to_string(),
        };
        format!("{} / {}", field("workers"), field("pids"))
    });
    row(out, "streams open / asked / failed", &|v| {
        format!("{} / {} / {}", v["opened"], v["streams"], v["failed"])
    });
    row(out, "time to open them all", &|v| {
        format!("{} s", num(&v["open_secs"], 2))
    });
    row(
        out,
        "proxy RSS, all its processes: idle → all open → closed (MiB)",
        &|v| mem_path(v, "gateway"),
    );
    row(out, "**proxy RSS per stream**", &|v| {
        per_stream(v, "gateway")
    });
    row(
        out,
        "backend RSS: idle → all open → closed (MiB)",
        &|v| mem_path(v, "backend"),
    );
    row(out, "backend RSS per stream", &|v| per_stream(v, "backend"));
    row(out, "file descriptors, all open: proxy / backend", &|v| {
        format!(
            "{} / {}",
            v["memory"]["open"]["gateway_fds"], v["memory"]["open"]["backend_fds"]
        )
    });
    row(out, "broadcast events delivered / expected", &|v| {
        format!("{} / {}", v["delivered"], v["expected"])
    });
    row(out, "broadcast delay p50 / **p99** / max (ms)", &|v| {
        format!(
            "{} / {} / {}",
            num(&v["delay_p50_ms"], 1),
            num(&v["delay_p99_ms"], 1),
            num(&v["delay_max_ms"], 1)
        )
    });
    let _ = writeln!(out);
    if let Some((_, sse)) = runs.iter().find(|(name, _)| *name == "gateway") {
        let gateway_open = sse["memory"]["open"]["gateway_rss_mib"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let p99 = sse["delay_p99_ms"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "Targets: gateway RSS with all streams open < 200 MiB: {:.0} MiB {}; broadcast p99 < 250 ms: {:.0} ms {}.\n",
            gateway_open,
            verdict(gateway_open < 200.0),
            p99,
            verdict(p99 < 250.0)
        );
    }
}

fn mem_path(run: &Value, who: &str) -> String {
    let m = &run["memory"];
    let key = format!("{who}_rss_mib");
    if m["open"][&key].as_f64().is_none_or(|v| v == 0.0) {
        return "-".into();
    }
    format!(
        "{} → {} → {}",
        num(&m["idle"][&key], 1),
        num(&m["open"][&key], 1),
        num(&m["closed"][&key], 1)
    )
}

fn per_stream(run: &Value, who: &str) -> String {
    let m = &run["memory"];
    let key = format!("{who}_rss_mib");
    let opened = run["opened"].as_f64().unwrap_or(0.0);
    match (m["idle"][&key].as_f64(), m["open"][&key].as_f64()) {
        (Some(i), Some(o)) if opened > 0.0 && o > 0.0 => {
            format!("{:.1} KiB", (o - i) * 1024.0 / opened)
        }
        _ => "-".into(),
    }
}

fn reload_lines(out: &mut String, dir: &Path) {
    let Some(reload) = read_json(&dir.join("reload.json")) else {
        let _ = writeln!(out, "### Reload\n\n(not run)\n");
        return;
    };
    let p99 = reload["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "### Reload: kubelet-style swap → first request accepted with the new token, under load\n"
    );
    let _ = writeln!(
        out,
        "| swaps | missed (> timeout) | p50 ms | p99 ms | max ms | load meanwhile |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|");
    let load = read_json(&dir.join("reload-load.json"))
        .map(|w| {
            let secs = w["duration_us"].as_f64().unwrap_or(f64::NAN) / 1e6;
            format!(
                "{:.0} requests/s through the gateway, {} non-2xx",
                w["requests"].as_f64().unwrap_or(f64::NAN) / secs,
                w["errors_status"]
            )
        })
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} {} | {} | {load} |",
        reload["swaps"],
        reload["missed"],
        num(&reload["p50_ms"], 1),
        num(&reload["p99_ms"], 1),
        verdict(p99 < 200.0),
        num(&reload["max_ms"], 1)
    );
    let _ = writeln!(out);
}

fn controller_lines(out: &mut String, dir: &Path) {
    let _ = writeln!(out, "### Controller\n");
    match std::fs::read_to_string(dir.join("controller.txt")) {
        Ok(text) => {
            let _ = writeln!(out, "{}\n", text.trim_end());
        }
        Err(_) => {
            let _ = writeln!(out, "(not run)\n");
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn spread(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 {
        format!(
            "{:.*} ({:.*}–{:.*})",
            decimals,
            median(values),
            decimals,
            min,
            decimals,
            max
        )
    } else {
        format!("{:.*}", decimals, median(values))
    }
}

fn num(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn verdict(met: bool) -> &'static str {
    if met { "✅" } else { "❌" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread(&[1.0, 2.0, 3.0], 1), "2.0 (1.0–3.0)");
        assert_eq!(spread(&[5.0], 0), "5");
    }

    /// A proxy.jsonl line: `requests` in one second, p99 in ms.
    fn line(
        round: u32,
        case: &str,
        target: &str,
        workers: Option<u32>,
        requests: u32,
        p99_ms: f64,
    ) -> String {
        let workers = workers.map_or_else(|| "null".into(), |w| w.to_string());
        format!(
            r#"{{"round":{round},"case":"{case}","target":"{target}","workers":{workers},"cpu_s":1.0,"upstream_cpu_s":0.5,"wrk":{{"requests":{requests},"duration_us":1000000,"p50_us":100,"p99_us":{},"errors_connect":0,"errors_read":0,"errors_write":0,"errors_status":0,"errors_timeout":0}}}}"#,
            (p99_ms * 1000.0) as u64
        )
    }

    fn find<'a>(all: &'a [Comparison], workers: u64, case: &str) -> &'a Comparison {
        all.iter()
            .find(|c| c.workers == workers && c.case == case)
            .unwrap()
    }

    #[test]
    fn ratios_come_from_the_medians_of_the_rounds_per_workers_and_mode() {
        let mut lines = Vec::new();
        // W=1, keep-alive: gateway 110/120/130 (median 120), nginx 100/200/90 (median 100),
        // HAProxy 80 ×3; p99 gateway 2 ms, nginx 3 ms, HAProxy 4 ms → met.
        for (round, (g, n)) in [(110, 100), (120, 200), (130, 90)].into_iter().enumerate() {
            let round = round as u32 + 1;
            lines.push(line(round, "keepalive", "gateway-1w", Some(1), g, 2.0));
            lines.push(line(round, "keepalive", "nginx-1w", Some(1), n, 3.0));
            lines.push(line(round, "keepalive", "haproxy-1w", Some(1), 80, 4.0));
            lines.push(line(round, "keepalive", "direct", None, 1000, 1.0));
        }
        // W=1, new connection: exactly 1.10 × the better peer (HAProxy), p99 equal → met.
        lines.push(line(1, "new-connection", "gateway-1w", Some(1), 110, 3.0));
        lines.push(line(1, "new-connection", "nginx-1w", Some(1), 90, 3.5));
        lines.push(line(1, "new-connection", "haproxy-1w", Some(1), 100, 3.0));
        // W=2, keep-alive: 1.09 × → not met, even with the better p99.
        lines.push(line(1, "keepalive", "gateway-2w", Some(2), 109, 1.0));
        lines.push(line(1, "keepalive", "nginx-2w", Some(2), 100, 3.0));
        lines.push(line(1, "keepalive", "haproxy-2w", Some(2), 50, 3.0));
        // W=2, new connection: 2 × the requests/s but p99 above HAProxy's → not met.
        lines.push(line(1, "new-connection", "gateway-2w", Some(2), 200, 3.1));
        lines.push(line(1, "new-connection", "nginx-2w", Some(2), 100, 5.0));
        lines.push(line(1, "new-connection", "haproxy-2w", Some(2), 100, 3.0));
        // The latency case is not judged; old names without "workers" still parse.
        lines.push(line(1, "one-connection", "gateway-2w", None, 10, 1.0));
        let proxy = parse_proxy(&lines.join("\n")).unwrap();
        let all = comparisons(&proxy);
        assert_eq!(all.len(), 4, "{all:#?}");

        let c = find(&all, 1, "keepalive");
        assert_eq!(
            c.gateway,
            Side {
                rps: 120.0,
                p99_ms: 2.0
            }
        );
        assert_eq!(c.nginx.unwrap().rps, 110.0 - 10.0);
        assert_eq!(c.rps_ratio(c.nginx), Some(1.2));
        assert_eq!(c.rps_ratio(c.haproxy), Some(1.5));
        assert_eq!(c.p99_ratio(c.haproxy), Some(0.5));
        assert_eq!(c.goal_met(), Some(true));

        let c = find(&all, 1, "new-connection");
        assert_eq!(
            c.goal_met(),
            Some(true),
            "exactly 1.10 × and an equal p99 meet it"
        );

        let c = find(&all, 2, "keepalive");
        assert!((c.rps_ratio(c.nginx).unwrap() - 1.09).abs() < 1e-9);
        assert_eq!(c.goal_met(), Some(false));

        let c = find(&all, 2, "new-connection");
        assert_eq!(c.rps_ratio(c.nginx), Some(2.0));
        assert_eq!(c.goal_met(), Some(false), "p99 3.1 > HAProxy's 3.0");

        let mut out = String::new();
        proxy_tables(&mut out, &proxy).unwrap();
        assert!(
            out.contains("| workers | mode | gateway / nginx | gateway / HAProxy | p99 gateway / nginx | p99 gateway / HAProxy | goal met |"),
            "{out}"
        );
        assert!(
            out.contains("| 1 | keep-alive | 1.200 | 1.500 | 0.667 | 0.500 | ✅ |"),
            "{out}"
        );
        assert!(
            out.contains("| 2 | new connection | 2.000 | 2.000 | 0.620 | 1.033 | ❌ |"),
            "{out}"
        );
        assert!(out.contains("| one connection | gateway-2w | 2 |"), "{out}");
        assert!(
            out.contains("| keep-alive | direct | - | 3 | 1000 (1000–1000) |"),
            "{out}"
        );
    }

    #[test]
    fn the_time_the_host_took_is_reported_when_runs_recorded_it() {
        let stolen = |pct: f64| {
            line(1, "keepalive", "gateway-1w", Some(1), 100, 1.0).replacen(
                "\"wrk\"",
                &format!("\"stolen_pct\":{pct},\"wrk\""),
                1,
            )
        };
        let lines = [stolen(2.0), stolen(13.5), stolen(0.5)];
        let mut out = String::new();
        proxy_tables(&mut out, &parse_proxy(&lines.join("\n")).unwrap()).unwrap();
        assert!(
            out.contains("during the runs kept: median 2.0 %, highest 13.5 %"),
            "{out}"
        );
        assert!(!out.contains("made again"), "{out}");

        let retried = [
            stolen(0.5).replacen("\"wrk\"", "\"attempts\":3,\"wrk\"", 1),
            stolen(1.0).replacen("\"wrk\"", "\"attempts\":1,\"wrk\"", 1),
            stolen(0.2).replacen("\"wrk\"", "\"attempts\":2,\"wrk\"", 1),
        ];
        let mut out = String::new();
        proxy_tables(&mut out, &parse_proxy(&retried.join("\n")).unwrap()).unwrap();
        assert!(out.contains(" 3 run(s) were made again"), "{out}");

        let idle = |entries: u32| {
            line(1, "keepalive", "gateway-1w", Some(1), 200, 1.0).replacen(
                "\"wrk\"",
                &format!("\"cpu_idle_entries\":{entries},\"wrk\""),
                1,
            )
        };
        let mut out = String::new();
        let lines = [idle(20), idle(50), idle(30)];
        proxy_tables(&mut out, &parse_proxy(&lines.join("\n")).unwrap()).unwrap();
        assert!(
            out.contains("| 1.00 (1.00–1.00) | 5000 (5000–5000) | 150 (100–250) | 0 | 0 |"),
            "{out}"
        );

        let before = line(1, "keepalive", "gateway-1w", Some(1), 100, 1.0);
        let mut out = String::new();
        proxy_tables(&mut out, &parse_proxy(&before).unwrap()).unwrap();
        assert!(!out.contains("steal"), "{out}");
    }

    #[test]
    fn the_goal_is_not_judged_without_both_peers() {
        let lines = [
            line(1, "keepalive", "gateway-2w", Some(2), 500, 1.0),
            line(1, "keepalive", "nginx-2w", Some(2), 100, 3.0),
        ];
        let proxy = parse_proxy(&lines.join("\n")).unwrap();
        let all = comparisons(&proxy);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].haproxy, None);
        assert_eq!(all[0].goal_met(), None);
        let mut out = String::new();
        proxy_tables(&mut out, &proxy).unwrap();
        assert!(
            out.contains("| 2 | keep-alive | 5.000 | - | 0.333 | - | - (a peer is missing) |"),
            "{out}"
        );
    }

    #[test]
    fn cost_rows_are_sorted_and_marked_failed_when_not_all_answered_2xx() {
        let text = [
            r#"{"peer":"gateway","workers":2,"mode":"keepalive","requests":20000,"ok":20000,"cpu_us_per_request":40.0,"syscalls_per_request":5.5,"top":[["writev",40000],["read",40000],["epoll_wait",10000]]}"#,
            r#"{"peer":"nginx","workers":2,"mode":"keepalive","requests":20000,"ok":19999,"cpu_us_per_request":30.0,"syscalls_per_request":6.0,"top":[]}"#,
            r#"{"peer":"haproxy","workers":1,"mode":"new-connection","requests":20000,"ok":20000,"cpu_us_per_request":null,"syscalls_per_request":null,"top":[]}"#,
        ]
        .join("\n");
        let rows = parse_cost(&text).unwrap();
        let order: Vec<_> = rows.iter().map(|c| (c.peer.as_str(), c.workers)).collect();
        assert_eq!(
            order,
            [
                ("haproxy", Some(1)),
                ("nginx", Some(2)),
                ("gateway", Some(2))
            ]
        );
        assert!(!rows[2].failed());
        assert!(rows[1].failed());
        let mut out = String::new();
        cost_table(&mut out, &rows).unwrap();
        assert!(
            out.contains("| gateway | 2 | keep-alive | 20000 | 20000 | 40.0 | 5.50 | writev 2.00, read 2.00, epoll_wait 0.50 |"),
            "{out}"
        );
        assert!(
            out.contains("| nginx | 2 | keep-alive | 20000 | 19999 ❌ failed | 30.0 | 6.00 | - |"),
            "{out}"
        );
        assert!(
            out.contains("| haproxy | 1 | new connection | 20000 | 20000 | - | - | - |"),
            "{out}"
        );
    }

    #[test]
    fn targets_order_direct_then_workers_then_nginx_haproxy_gateway() {
        let mut t: Vec<Target> = [
            "gateway-2w",
            "haproxy-1w",
            "direct",
            "nginx-2w",
            "gateway-1w",
        ]
        .iter()
        .map(|n| Target::new(n, None))
        .collect();
        t.sort();
        let names: Vec<_> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "direct",
                "haproxy-1w",
                "gateway-1w",
                "nginx-2w",
                "gateway-2w"
            ]
        );
        assert_eq!(Target::new("gateway-2w", None).workers, Some(2));
        assert_eq!(Target::new("gateway", Some(3)).workers, Some(3));
    }

    #[test]
    fn memory_and_sse_tables_read_every_peer_of_a_results_dir() {
        let dir = std::env::temp_dir().join(format!("vx11-bench-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("idle.json"),
            r#"{"gateway-2w":{"start_mib":5.5,"after_mib":9.0},"direct":{"start_mib":4.0,"after_mib":7.0},"nginx-1w":{"start_mib":18.0,"after_mib":19.0}}"#,
        )
        .unwrap();
        let sse = |peer: &str, workers: &str, open_mib: f64| {
            format!(
                r#"{{"peer":"{peer}","workers":{workers},"pids":3,"streams":1000,"opened":1000,"failed":0,"open_secs":1.5,"delivered":5000,"expected":5000,"delay_p50_ms":10.0,"delay_p99_ms":20.0,"delay_max_ms":30.0,"memory":{{"idle":{{"gateway_rss_mib":10.0,"gateway_fds":10,"backend_rss_mib":5.0,"backend_fds":20}},"open":{{"gateway_rss_mib":{open_mib},"gateway_fds":2010,"backend_rss_mib":7.0,"backend_fds":1020}},"closed":{{"gateway_rss_mib":{open_mib},"gateway_fds":10,"backend_rss_mib":7.0,"backend_fds":20}}}}}}"#
            )
        };
        std::fs::write(dir.join("sse.json"), sse("gateway", "2", 20.0)).unwrap();
        std::fs::write(dir.join("sse-haproxy.json"), sse("haproxy", "2", 30.0)).unwrap();
        std::fs::write(dir.join("sse-direct.json"), sse("direct", "null", 0.0)).unwrap();
        let mut out = String::new();
        memory_lines(&mut out, &dir);
        sse_lines(&mut out, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let memory = out.find("| direct | 4.0 | 7.0 |").unwrap();
        assert!(
            memory < out.find("| nginx-1w | 18.0 | 19.0 |").unwrap(),
            "{out}"
        );
        assert!(out.contains("| gateway-2w | 5.5 | 9.0 |"), "{out}");
        // nginx did not run: no column for it.
        assert!(
            out.contains("| figure | gateway | HAProxy | direct (no proxy) |"),
            "{out}"
        );
        assert!(
            out.contains("| workers / processes measured | 2 / 3 | 2 / 3 | - / 3 |"),
            "{out}"
        );
        // (20 - 10) MiB over 1000 streams = 10.2 KiB; (30 - 10) = 20.5 KiB; direct has none.
        assert!(
            out.contains("| **proxy RSS per stream** | 10.2 KiB | 20.5 KiB | - |"),
            "{out}"
        );
        assert!(
            out.contains("| broadcast delay p50 / **p99** / max (ms) | 10.0 / 20.0 / 30.0 |"),
            "{out}"
        );
        assert!(
            out.contains("gateway RSS with all streams open < 200 MiB: 20 MiB ✅"),
            "{out}"
        );
    }
}
