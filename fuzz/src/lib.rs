//! What the fuzz targets share: the check that an error message repeats nothing of the
//! input it describes.

/// The shortest token is 16 characters; no word of an error message is that long.
pub const TOKEN_LIKE: usize = 16;

/// Panics if `message` (an error's `Display`: its `Debug` adds type names) holds a run of [`TOKEN_LIKE`] or more token characters (anything
/// printable but space and the JSON punctuation) that also occurs in `input`.
pub fn assert_no_input_run(input: &[u8], message: &str) {
    // Fixed words of the messages long enough to be a run (serde_json's): an input that
    // holds them is not echoed by them.
    let message = message.replace("(\\u0000-\\u001F)", "");
    let message = message.as_str();
    let is_run_byte = |b: &u8| b.is_ascii_graphic() && !b"\"{}[],:`".contains(b);
    for run in message.as_bytes().split(|b| !is_run_byte(b)) {
        if run.len() < TOKEN_LIKE {
            continue;
        }
        for window in run.windows(TOKEN_LIKE) {
            assert!(
                !contains(input, window),
                "the error repeats input {:?}: {message}",
                String::from_utf8_lossy(window)
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
