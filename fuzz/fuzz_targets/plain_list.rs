//! The plain `tokens` list: never panics; what parses reads back the same when written one
//! per line; an error repeats nothing of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx11_fuzz::assert_no_input_run;
use vx11_tokenset::parse_plain;

fuzz_target!(|data: &[u8]| {
    match parse_plain(data) {
        Ok(tokens) => {
            let written: String = tokens.iter().map(|t| format!("{}\n", t.expose())).collect();
            let again = parse_plain(written.as_bytes()).expect("written list reads back");
            let values = |list: &[vx11_tokenset::TokenValue]| {
                list.iter()
                    .map(|t| t.expose().to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(values(&again), values(&tokens));
        }
        Err(error) => assert_no_input_run(data, &error.to_string()),
    }
});
