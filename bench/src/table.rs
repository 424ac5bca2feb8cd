//! The results table (Markdown), from the JSON files the other steps wrote.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The results directory of a `bench/run.sh` run.
    #[arg(long)]
    results: PathBuf,
}

const TARGETS: [&str; 4] = ["direct", "nginx", "gateway", "gateway-1w"];

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = String::new();
    let dir = &args.results;
    if let Ok(machine) = std::fs::read_to_string(dir.join("machine.txt")) {
        writeln!(out, "{}", machine.trim_end())?;
        writeln!(out)?;
    }
    proxy_table(&mut out, dir)?;
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
    errors: u64,
    non_2xx: u64,
}

fn proxy_table(out: &mut String, dir: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(dir.join("proxy.jsonl")) else {
        writeln!(out, "(no proxy results)\n")?;
        return Ok(());
    };
    // case → target → runs
    let mut cases: BTreeMap<String, BTreeMap<String, Runs>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).with_context(|| format!("parsing {line}"))?;
        let case = row["case"].as_str().unwrap_or("?").to_owned();
        let target = row["target"].as_str().unwrap_or("?").to_owned();
        let wrk = &row["wrk"];
        let seconds = wrk["duration_us"].as_f64().unwrap_or(f64::NAN) / 1e6;
        let runs = cases
            .entry(case.clone())
            .or_default()
            .entry(target)
            .or_default();
        if !order.contains(&case) {
            order.push(case);
        }
        let requests = wrk["requests"].as_f64().unwrap_or(f64::NAN);
        runs.rps.push(requests / seconds);
        if let Some(cpu) = row["cpu_s"].as_f64() {
            runs.cpu_us.push(cpu * 1e6 / requests);
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
    writeln!(
        out,
        "### Proxy: the same upstream direct, behind nginx, behind vx11-gateway\n"
    )?;
    writeln!(
        out,
        "Median of the rounds (min–max in brackets). CPU µs/request: user + system time of the target's processes (nginx: master and workers; direct: the upstream) over the run, per request answered. gateway/nginx: requests/s ratio (target ≥ 1.0) and p99 ratio (target ≤ 1.0).\n"
    )?;
    writeln!(
        out,
        "| case | target | rounds | requests/s | p50 ms | p99 ms | target CPU µs/request | socket errors | non-2xx |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut ratios = Vec::new();
    for case in &order {
        let targets = &cases[case];
        for target in TARGETS {
            let Some(runs) = targets.get(target) else {
                continue;
            };
            writeln!(
                out,
                "| {case} | {target} | {} | {} | {} | {} | {} | {} | {} |",
                runs.rps.len(),
                spread(&runs.rps, 0),
                spread(&runs.p50_ms, 2),
                spread(&runs.p99_ms, 2),
                spread(&runs.cpu_us, 0),
                runs.errors,
                runs.non_2xx
            )?;
        }
        for gateway in ["gateway", "gateway-1w"] {
            if let (Some(g), Some(n)) = (targets.get(gateway), targets.get("nginx")) {
                ratios.push((
                    format!("{case}, {gateway}"),
                    median(&g.rps) / median(&n.rps),
                    median(&g.p99_ms) / median(&n.p99_ms),
                ));
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "| case, gateway | gateway/nginx requests/s (≥ 1.0) | gateway/nginx p99 (≤ 1.0) |"
    )?;
    writeln!(out, "|---|---:|---:|")?;
    for (case, rps, p99) in ratios {
        writeln!(
            out,
            "| {case} | {rps:.2} {} | {p99:.2} {} |",
            verdict(rps >= 1.0),
            verdict(p99 <= 1.0)
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn memory_lines(out: &mut String, dir: &Path) {
    let Some(idle) = read_json(&dir.join("idle.json")) else {
        return;
    };
    let _ = writeln!(out, "### Memory at rest\n");
    let _ = writeln!(
        out,
        "| process | RSS MiB, started | RSS MiB, after the proxy runs |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for (name, key) in [
        ("vx11-gateway (target < 15 MiB started)", "gateway"),
        ("nginx (master + workers)", "nginx"),
        ("bench upstream", "upstream"),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            num(&idle[format!("{key}_start_mib")], 1),
            num(&idle[format!("{key}_after_mib")], 1)
        );
    }
    let _ = writeln!(out);
}

fn sse_lines(out: &mut String, dir: &Path) {
    let Some(sse) = read_json(&dir.join("sse.json")) else {
        let _ = writeln!(out, "### SSE\n\n(not run)\n");
        return;
    };
    let direct = read_json(&dir.join("sse-direct.json")).unwrap_or(Value::Null);
    let gateway_open = sse["memory"]["open"]["gateway_rss_mib"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let p99 = sse["delay_p99_ms"].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "### SSE: {} streams with `?token=` to one operator backend\n",
        sse["streams"]
    );
    let _ = writeln!(
        out,
        "| figure | through {} gateway process(es) | straight to the backend (baseline) |",
        sse["gateways"]
    );
    let _ = writeln!(out, "|---|---:|---:|");
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Value) -> String| {
        let _ = writeln!(out, "| {name} | {} | {} |", f(&sse), f(&direct));
    };
    row(out, "streams open / asked / failed", &|v| {
        if v.is_null() {
            "-".into()
        } else {
            format!("{} / {} / {}", v["opened"], v["streams"], v["failed"])
        }
    });
    row(out, "time to open them all", &|v| {
        format!("{} s", num(&v["open_secs"], 2))
    });
    row(
        out,
        "gateway RSS, all gateway processes: idle → all open → closed (MiB)",
        &|v| mem_path(v, "gateway"),
    );
    row(out, "gateway RSS per stream", &|v| per_stream(v, "gateway"));
    row(
        out,
        "backend RSS: idle → all open → closed (MiB)",
        &|v| mem_path(v, "backend"),
    );
    row(out, "backend RSS per stream", &|v| per_stream(v, "backend"));
    row(
        out,
        "file descriptors, all open: gateway(s) / backend",
        &|v| {
            format!(
                "{} / {}",
                v["memory"]["open"]["gateway_fds"], v["memory"]["open"]["backend_fds"]
            )
        },
    );
    row(out, "broadcast events delivered / expected", &|v| {
        format!("{} / {}", v["delivered"], v["expected"])
    });
    row(out, "broadcast delay p50 / p99 / max (ms)", &|v| {
        format!(
            "{} / {} / {}",
            num(&v["delay_p50_ms"], 1),
            num(&v["delay_p99_ms"], 1),
            num(&v["delay_max_ms"], 1)
        )
    });
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Targets: gateway RSS with all streams open < 200 MiB: {:.0} MiB {}; broadcast p99 < 250 ms: {:.0} ms {}.\n",
        gateway_open,
        verdict(gateway_open < 200.0),
        p99,
        verdict(p99 < 250.0)
    );
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
        assert_eq!(spread(&[1.0, 2.0, 3.0], 1), "2.0 (1.0–3.0)");
        assert_eq!(spread(&[5.0], 0), "5");
    }
}
