//! The shell commands of `README.md` and `docs/*.md`, as a test runs them.
//!
//! Every fenced `sh` block carries a tag on the line before it, an HTML comment that
//! Markdown does not show, saying which test runs it:
//!
//! - `<!-- doc-test: local -->`: `tests/tests/doc_commands.rs` runs the file's `local`
//!   blocks in order in one `bash`, from the repository's root, as a reader would paste
//!   them. A `curl` line is checked against its trailing comment: a status there
//!   (`# 401 missing_token`) must be the answer, no status means a 2xx; a stream (`-N`)
//!   passes once its head says 200 (it is cut after a few seconds).
//! - `<!-- doc-test: node -->`: `tests/tests/make_run.rs` runs these blocks the same way
//!   on the vx11 that `make run` starts on the real node (`make run` itself excepted,
//!   being what the test runs first; see that test for the lines it supplies).
//! - `<!-- doc-test: by <file> [<file>…] -->`: another test or CI script runs these
//!   commands; each named file must exist and hold every command's first words.
//! - `<!-- doc-test: manual <reason> -->`: not run by any test, for the reason given
//!   (printed by the test, so it stays visible).
//!
//! A block without a tag fails the test: a documented command nobody runs is how an
//! example came to answer 415.

use std::path::{Path, PathBuf};

/// Who runs a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// `tests/tests/doc_commands.rs`, here and now.
    Local,
    /// `tests/tests/make_run.rs`, on `make run`'s real node.
    Node,
    /// The files named, each of which runs the block's commands.
    By(Vec<String>),
    /// Nobody; the reason.
    Manual(String),
}

/// One fenced shell block.
#[derive(Debug, Clone)]
pub struct Block {
    pub file: PathBuf,
    /// 1-based line of the opening fence.
    pub line: usize,
    pub runner: Option<Runner>,
    pub text: String,
}

/// Where a tag is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError {
    pub line: usize,
    pub message: String,
}

const TAG_PREFIX: &str = "<!-- doc-test:";
const SHELL_LANGUAGES: [&str; 4] = ["sh", "bash", "shell", "console"];

/// The shell blocks of one Markdown text, with their tags.
pub fn shell_blocks(file: &Path, markdown: &str) -> Result<Vec<Block>, TagError> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(language) = lines[index].trim_start().strip_prefix("```") else {
            index += 1;
            continue;
        };
        let opening = index;
        let mut body = Vec::new();
        index += 1;
        while index < lines.len() && !lines[index].trim_start().starts_with("```") {
            body.push(lines[index]);
            index += 1;
        }
        index += 1;
        if !SHELL_LANGUAGES.contains(&language.trim()) {
            continue;
        }
        let runner = match opening.checked_sub(1).map(|i| lines[i].trim()) {
            Some(tag) if tag.starts_with(TAG_PREFIX) => {
                Some(parse_tag(tag).map_err(|message| TagError {
                    line: opening,
                    message,
                })?)
            }
            _ => None,
        };
        blocks.push(Block {
            file: file.to_path_buf(),
            line: opening + 1,
            runner,
            text: body.join("\n"),
        });
    }
    Ok(blocks)
}

fn parse_tag(tag: &str) -> Result<Runner, String> {
    let inner = tag
        .strip_prefix(TAG_PREFIX)
        .and_then(|t| t.strip_suffix("-->"))
        .ok_or_else(|| format!("a tag is one line: `{TAG_PREFIX} local -->`"))?
        .trim();
    let (kind, rest) = inner.split_once(' ').unwrap_or((inner, ""));
    let rest = rest.trim();
    match kind {
        "local" if rest.is_empty() => Ok(Runner::Local),
        "node" if rest.is_empty() => Ok(Runner::Node),
        "by" if !rest.is_empty() => Ok(Runner::By(
            rest.split_whitespace().map(str::to_owned).collect(),
        )),
        "manual" if !rest.is_empty() => Ok(Runner::Manual(rest.to_owned())),
        _ => Err(format!(
            "`{inner}`: the tag is `local`, `node`, `by <file>…` or `manual <reason>`"
        )),
    }
}

/// One command as a reader types it: continuation lines joined, the trailing comment apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// 1-based line in the Markdown file.
    pub line: usize,
    pub text: String,
    pub comment: String,
}

impl Command {
    /// What a `curl` command's comment says it answers: `Some(status)` when the comment
    /// starts with one, else `None` (any 2xx).
    pub fn expected_status(&self) -> Option<u16> {
        let first = self.comment.split_whitespace().next()?;
        let digits = first.trim_end_matches(|c: char| !c.is_ascii_digit());
        (digits.len() == 3)
            .then(|| digits.parse().ok())
            .flatten()
            .filter(|s| (100..600).contains(s))
    }

    /// The program the command runs first (after any `NAME=value` assignments).
    pub fn program(&self) -> Option<&str> {
        self.text
            .split_whitespace()
            .find(|word| !is_assignment(word))
    }

    /// The first two words of the command (`make run`, `kubectl vx11`): what a `by` file
    /// must mention.
    pub fn head(&self) -> String {
        self.text
            .split_whitespace()
            .skip_while(|word| is_assignment(word))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A `curl` that streams (`-N`): it never ends on its own.
    pub fn is_stream(&self) -> bool {
        self.text.split_whitespace().any(|w| {
            w == "-N"
                || w == "--no-buffer"
                || (w.starts_with('-') && !w.starts_with("--") && w.contains('N'))
        })
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The commands of a block, `line` being its opening fence's.
pub fn commands(block_text: &str, fence_line: usize) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (offset, raw) in block_text.lines().enumerate() {
        let line = fence_line + 1 + offset;
        let (code, comment) = split_comment(raw);
        let code = code.trim_end();
        let (start, mut text) = pending.take().unwrap_or((line, String::new()));
        if let Some(continued) = code.strip_suffix('\\') {
            text.push_str(continued.trim());
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(code.trim());
        let text = text.trim().to_owned();
        if !text.is_empty() {
            commands.push(Command {
                line: start,
                text,
                comment: comment.trim().to_owned(),
            });
        }
    }
    if let Some((line, text)) = pending {
        commands.push(Command {
            line,
            text: text.trim().to_owned(),
            comment: String::new(),
        });
    }
    commands
}

/// `code  # comment` → (`code`, `comment`); a `#` inside quotes or a word is code.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return (&line[..at], &line[at + 1..]),
            _ => {}
        }
        previous = c;
    }
    (line, "")
}

/// The Markdown files whose commands are checked: `README.md` and `docs/*.md`, sorted.
pub fn documented_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    Ok(files)
}

/// The bash function every `local` script starts with: `curl` with a time limit, retries
/// while a service it talks to is still starting, and the answer's status kept for
/// [`check_line`].
pub const CURL_WRAPPER: &str = r#"
__vx11_status=000
curl() {
  local out
  out=$(mktemp)
  # Retried while a service is starting; a stream (-N) never: its time limit is not an error.
  local retry=(--retry-connrefused --retry 60 --retry-max-time 120 --retry-delay 1) arg
  for arg in "$@"; do
    case "$arg" in --no-buffer|-N|-[a-zA-Z]*N*) retry=();; esac
  done
  command curl --max-time 5 "${retry[@]}" -o "$out" -w '%{http_code}' "$@" > "$out.status"
  __vx11_exit=$?
  __vx11_status=$(cat "$out.status")
  head -c 2000 "$out"; echo
  rm -f "$out" "$out.status"
  return 0
}
__vx11_check() { # want(any2xx|NNN) stream(0|1) where
  local want=$1 stream=$2 where=$3
  if [ "$stream" = 1 ] && [ "$__vx11_exit" = 28 ] && [ "$__vx11_status" = 200 ]; then
    echo "ok $where: stream open (200)"; return 0
  fi
  if [ "$__vx11_exit" != 0 ]; then
    echo "FAILED $where: curl exited $__vx11_exit (status $__vx11_status)"; __vx11_failed=1; return 0
  fi
  case "$want" in
    any2xx) case "$__vx11_status" in 2??) echo "ok $where: $__vx11_status";; *) echo "FAILED $where: answered $__vx11_status, the docs promise a 2xx"; __vx11_failed=1;; esac;;
    *) if [ "$__vx11_status" = "$want" ]; then echo "ok $where: $__vx11_status"; else echo "FAILED $where: answered $__vx11_status, the docs say $want"; __vx11_failed=1; fi;;
  esac
}
__vx11_failed=0
"#;

/// The bash lines that run `command` and, for a `curl`, check its answer.
pub fn check_line(file: &str, command: &Command) -> String {
    let where_ = format!("{file}:{}", command.line);
    if command.program() != Some("curl") {
        return format!(
            "{}\n__e=$?; if [ $__e != 0 ]; then echo \"FAILED {where_}: exited $__e\"; __vx11_failed=1; fi",
            command.text
        );
    }
    let want = command
        .expected_status()
        .map_or_else(|| "any2xx".to_owned(), |s| s.to_string());
    format!(
        "{}\n__vx11_check {want} {} '{where_}'",
        command.text,
        u8::from(command.is_stream())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "text\n<!-- doc-test: local -->\n```sh\nT=x; G=http://h\ncurl $G/health   # 200 {\"status\":\"ok\"}\ncurl -H \"X-VX11-Token: $T\" \\\n  -d '{\"a\":\"#1\"}' $G/chat\ncurl -N \"$G/s?token=$T\" # SSE\n```\n\n```sh\nmake run\n```\n```yaml\na: b\n```\n";

    #[test]
    fn blocks_tags_and_commands_are_read_as_a_reader_sees_them() {
        let blocks = shell_blocks(Path::new("x.md"), DOC).unwrap();
        assert_eq!(blocks.len(), 2, "the yaml block is not a shell block");
        assert_eq!(blocks[0].runner, Some(Runner::Local));
        assert_eq!(blocks[0].line, 3);
        assert_eq!(blocks[1].runner, None, "an untagged block is reported");
        let commands = commands(&blocks[0].text, blocks[0].line);
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[1].expected_status(), Some(200));
        assert_eq!(commands[1].line, 5);
        assert_eq!(
            commands[2].line, 6,
            "a continued command starts where it starts"
        );
        assert!(
            commands[2].text.contains("'{\"a\":\"#1\"}'"),
            "a # in quotes is code"
        );
        assert_eq!(commands[2].expected_status(), None);
        assert!(commands[3].is_stream() && !commands[1].is_stream());
        assert_eq!(commands[3].comment, "SSE");
        assert_eq!(commands[0].program(), None, "assignments only");
    }

    #[test]
    fn statuses_come_only_from_a_leading_number() {
        let command = |comment: &str| Command {
            line: 1,
            text: "curl x".into(),
            comment: comment.into(),
        };
        assert_eq!(command("401 missing_token").expected_status(), Some(401));
        assert_eq!(
            command("200 once tokens are loaded, else 503").expected_status(),
            Some(200)
        );
        assert_eq!(command("200, public").expected_status(), Some(200));
        assert_eq!(command("proxied to the backend").expected_status(), None);
        assert_eq!(command("SSE; a `tokens` event").expected_status(), None);
        assert_eq!(command("9999 x").expected_status(), None);
    }

    #[test]
    fn a_bad_tag_is_an_error_that_says_the_grammar() {
        let error = shell_blocks(
            Path::new("x.md"),
            "<!-- doc-test: lokal -->\n```sh\nls\n```\n",
        )
        .unwrap_err();
        assert!(error.message.contains("`local`"), "{error:?}");
        assert_eq!(
            parse_tag("<!-- doc-test: by .ci/run tests/tests/make_run.rs -->"),
            Ok(Runner::By(vec![
                ".ci/run".into(),
                "tests/tests/make_run.rs".into()
            ]))
        );
        assert_eq!(parse_tag("<!-- doc-test: node -->"), Ok(Runner::Node));
        assert!(parse_tag("<!-- doc-test: node extra -->").is_err());
        assert!(
            parse_tag("<!-- doc-test: manual -->").is_err(),
            "manual needs a reason"
        );
    }

    #[test]
    fn heads_skip_assignments() {
        let c = Command {
            line: 1,
            text: "KUBECONFIG=x kubectl vx11 -n vx11 status".into(),
            comment: String::new(),
        };
        assert_eq!(c.head(), "kubectl vx11");
        assert_eq!(c.program(), Some("kubectl"));
    }
}
