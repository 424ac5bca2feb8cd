//! `tokens.json`: never panics; what parses round-trips; an error repeats nothing of the
//! file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx11_fuzz::assert_no_input_run;
use vx11_tokenset::TokenFile;

fuzz_target!(|data: &[u8]| {
    match TokenFile::parse(data) {
        Ok(file) => {
            let again = TokenFile::parse(file.to_json().as_bytes());
            assert_eq!(again.as_ref(), Ok(&file), "written file does not read back");
        }
        Err(error) => assert_no_input_run(data, &error.to_string()),
    }
});
