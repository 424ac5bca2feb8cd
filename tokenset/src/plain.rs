//! The plain `tokens` list for hand-made Secrets: one plaintext token per line, `#`
//! comments, hashed as soon as it is read.

use crate::value::{InvalidToken, TokenValue};

/// The file name (and Secret key) of the plain list.
pub const PLAIN_FILE_NAME: &str = "tokens";

/// Parses the plain list. Blank lines and lines starting with `#` are skipped; leading and
/// trailing whitespace is trimmed.
pub fn parse_plain(bytes: &[u8]) -> Result<Vec<TokenValue>, PlainError> {
    let text = std::str::from_utf8(bytes).map_err(|e| PlainError::NotUtf8 {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let token = TokenValue::new(line).map_err(|reason| PlainError::InvalidToken {
            line: index + 1,
            reason,
        })?;
        tokens.push(token);
    }
    Ok(tokens)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("line {line} is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: {reason}")]
    InvalidToken { line: usize, reason: InvalidToken },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_whitespace() {
        let tokens =
            parse_plain(b"# operator tokens\n\n  vx11-operator-test-token  \n#x\r\nanother-token-0123456789\r\n")
                .unwrap();
        let values: Vec<_> = tokens.iter().map(|t| t.expose()).collect();
        assert_eq!(
            values,
            ["vx11-operator-test-token", "another-token-0123456789"]
        );
    }

    #[test]
    fn short_token_names_the_line_not_the_value() {
        let err = parse_plain(b"# c\nvx11-operator-test-token\nvx11-test-token\n").unwrap_err();
        assert_eq!(
            err,
            PlainError::InvalidToken {
                line: 3,
                reason: InvalidToken::TooShort { len: 15 }
            }
        );
        assert!(!err.to_string().contains("vx11-test-token"));
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err =
            parse_plain(b"vx11-operator-test-token\n\xff\xfe-token-token-token\n").unwrap_err();
        assert_eq!(err, PlainError::NotUtf8 { line: 2 });
    }
}
