//! The controller's reading of a `Vx11TokenSet`: the spec from JSON (as the API server
//! sends it) or YAML (as a person writes it), the record read back from a Secret's
//! annotation, and the plan made from both (which parses the spec's durations and checks
//! its values). None of it panics, whatever the API server let through; a plan's problems
//! never repeat a `secretRef` value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vx11_controller::Vx11TokenSetSpec;
use vx11_controller::plan::{Acknowledged, Input, Source, plan};
use vx11_controller::state::{Observed, Record};
use vx11_tokenset::{GenerateError, TokenValue};

fuzz_target!(|data: &[u8]| {
    // Input: <mode byte> <spec> [\0 <record annotation> [\0 <secretRef value>]].
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let (spec, record, value) = (parts.next(), parts.next(), parts.next());
    let Some(spec_text) = spec.and_then(|s| std::str::from_utf8(s).ok()) else {
        return;
    };
    let spec: Vx11TokenSetSpec = if mode % 2 == 0 {
        match serde_json::from_str(spec_text) {
            Ok(spec) => spec,
            Err(_) => return,
        }
    } else {
        match serde_saphyr::from_str(spec_text) {
            Ok(spec) => spec,
            Err(_) => return,
        }
    };
    let record_text = record.map(|r| String::from_utf8_lossy(r).into_owned());
    let record = record
        .and_then(|r| std::str::from_utf8(r).ok())
        .and_then(Record::from_annotation);
    let value = value
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "vx11-a-referenced-token-value".into());
    let sources: BTreeMap<String, Source> = spec
        .tokens
        .iter()
        .filter(|t| t.secret_ref.is_some())
        .map(|t| (t.name.clone(), Source::Value(value.clone())))
        .collect();
    let observed = Observed {
        record,
        client_values: BTreeMap::new(),
    };
    let rotate = BTreeMap::new();
    let input = Input {
        spec: &spec,
        rotate_request: (mode & 2 != 0).then_some("fuzz"),
        token_rotate_requests: &rotate,
        acknowledged: if mode & 4 != 0 {
            Acknowledged::Everyone
        } else {
            Acknowledged::UpTo(0)
        },
        observed: &observed,
        sources: &sources,
        now: "2026-11-22T10:00:00Z".parse().expect("a valid time"),
    };
    let mut counter = 0u32;
    let mut generate = |_bytes: usize| -> Result<TokenValue, GenerateError> {
        counter += 1;
        Ok(TokenValue::new(format!("vx11_fuzz_generated_{counter:08}")).expect("a valid token"))
    };
    if let Ok(planned) = plan(&input, &mut generate)
        && value.len() >= 16
        && !spec_text.contains(&value)
        && !record_text.is_some_and(|r| r.contains(&value))
    {
        for problem in &planned.problems {
            assert!(
                !problem.detail.contains(&value),
                "a problem shows the value"
            );
        }
    }
});
