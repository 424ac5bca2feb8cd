//! Finding the token in a request (`X-VX11-Token`, `Authorization: Bearer`, `?token=`):
//! never panics, a token found is never empty, and its `Debug` never shows it.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vx11_tokenset::{TOKEN_HEADER, presented_token};

fuzz_target!(|data: &[u8]| {
    // Input: <header value> \n <authorization value> \n <query>; empty parts are absent.
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (header, authorization, query) = (parts.next(), parts.next(), parts.next());
    let mut headers = HeaderMap::new();
    for (name, value) in [(TOKEN_HEADER, header), ("authorization", authorization)] {
        if let Some(value) = value.filter(|v| !v.is_empty())
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            headers.insert(name, value);
        }
    }
    let query = query.and_then(|q| std::str::from_utf8(q).ok());
    if let Ok(Some(token)) = presented_token(&headers, query) {
        assert!(!token.expose().is_empty(), "an empty token was extracted");
        // Exactly the carrier and the fingerprint, whatever the value.
        let expected = format!(
            "PresentedToken {{ carrier: {:?}, fingerprint: {} }}",
            token.carrier,
            token.digest().fingerprint()
        );
        assert_eq!(
            format!("{token:?}"),
            expected,
            "Debug shows more than the fingerprint"
        );
    }
});
