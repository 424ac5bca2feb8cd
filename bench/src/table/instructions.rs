//! The instructions table: user-space instructions per request of each peer under
//! callgrind (`instructions.jsonl` of the `instructions` step), one row per mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use serde_json::Value;

use super::mode_name;

/// One peer's count in one mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Count {
    pub per_request: f64,
    /// Every request answered 2xx.
    pub complete: bool,
}

/// Mode → peer → count.
pub type Counts = BTreeMap<String, BTreeMap<String, Count>>;

pub fn parse(text: &str) -> anyhow::Result<Counts> {
    let mut counts = Counts::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).with_context(|| format!("parsing {line}"))?;
        let requests = row["requests"].as_u64().unwrap_or(0);
        let (Some(peer), Some(mode), Some(per_request)) = (
            row["peer"].as_str(),
            row["mode"].as_str(),
            row["instructions_per_request"].as_f64(),
        ) else {
            anyhow::bail!("a line without peer, mode or instructions_per_request: {line}");
        };
        counts.entry(mode.to_owned()).or_default().insert(
            peer.to_owned(),
            Count {
                per_request,
                complete: requests > 0 && row["ok"].as_u64() == Some(requests),
            },
        );
    }
    Ok(counts)
}

pub fn table(out: &mut String, counts: &Counts) -> anyhow::Result<()> {
    writeln!(
        out,
        "### User-space instructions per request, under callgrind (one worker)\n"
    )?;
    writeln!(
        out,
        "Each peer runs under valgrind's callgrind; after a warm-up, exactly the same number of requests (h2load, HTTP/1.1) and the instructions executed in user space over them ÷ requests. Repeatable to about 1 % where CPU time is not; the kernel's work (most of every peer's CPU on loopback) is not counted: see the system calls above. Under valgrind no AVX-512 or SHA extensions are seen, so library code runs its generic paths. A count whose requests were not all answered 2xx is marked failed.\n"
    )?;
    writeln!(
        out,
        "| mode | nginx | HAProxy | gateway | gateway ÷ the fewer of nginx and HAProxy |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for mode in ["keepalive", "new-connection"] {
        let Some(peers) = counts.get(mode) else {
            continue;
        };
        let cell = |peer: &str| match peers.get(peer) {
            Some(c) if c.complete => format!("{:.0}", c.per_request),
            Some(c) => format!("{:.0} ❌ failed", c.per_request),
            None => "-".to_owned(),
        };
        let fewer = ["nginx", "haproxy"]
            .iter()
            .filter_map(|p| peers.get(*p).filter(|c| c.complete))
            .map(|c| c.per_request)
            .reduce(f64::min);
        let ratio = match (peers.get("gateway").filter(|c| c.complete), fewer) {
            (Some(gateway), Some(fewer)) if fewer > 0.0 => {
                format!("{:.2}", gateway.per_request / fewer)
            }
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            mode_name(mode),
            cell("nginx"),
            cell("haproxy"),
            cell("gateway"),
            ratio
        )?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_mode_with_the_ratio_to_the_fewer_complete_peer() {
        let text = [
            r#"{"peer":"nginx","workers":1,"mode":"keepalive","requests":2000,"ok":2000,"instructions":53000000,"instructions_per_request":26500}"#,
            r#"{"peer":"haproxy","workers":1,"mode":"keepalive","requests":2000,"ok":2000,"instructions":86000000,"instructions_per_request":43000}"#,
            r#"{"peer":"gateway","workers":1,"mode":"keepalive","requests":2000,"ok":2000,"instructions":41000000,"instructions_per_request":20500}"#,
            r#"{"peer":"nginx","workers":1,"mode":"new-connection","requests":2000,"ok":1999,"instructions":58000000,"instructions_per_request":29000}"#,
            r#"{"peer":"haproxy","workers":1,"mode":"new-connection","requests":2000,"ok":2000,"instructions":92000000,"instructions_per_request":46000}"#,
            r#"{"peer":"gateway","workers":1,"mode":"new-connection","requests":2000,"ok":2000,"instructions":69000000,"instructions_per_request":34500}"#,
        ]
        .join("\n");
        let mut out = String::new();
        table(&mut out, &parse(&text).unwrap()).unwrap();
        assert!(
            out.contains("| keep-alive | 26500 | 43000 | 20500 | 0.77 |"),
            "{out}"
        );
        // nginx did not answer every request: its count is marked and not compared.
        assert!(
            out.contains("| new connection | 29000 ❌ failed | 46000 | 34500 | 0.75 |"),
            "{out}"
        );
    }

    #[test]
    fn a_line_without_its_count_is_an_error() {
        let error = parse(r#"{"peer":"nginx","mode":"keepalive","requests":2000}"#).unwrap_err();
        assert!(
            error.to_string().contains("instructions_per_request"),
            "{error}"
        );
    }
}
