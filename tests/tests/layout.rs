//! The code's layout, as `docs`' layout table and a newcomer rely on it: the token library
//! has no HTTP server in it, no production file grows past 500 lines without saying why at
//! its top, and no two files of a crate import each other (directly or round a loop).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's crates whose `src/` is checked.
const CRATES: &[&str] = &[
    "tokenset",
    "service",
    "gateway",
    "operator-backend",
    "controller",
    "tests",
    "bench",
];

/// Production lines a file may have without a word at its top on why it is longer.
const MAX_LINES: usize = 500;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_token_library_has_no_http_server_in_its_dependencies() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "vx11-tokenset",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--locked", "--offline"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.starts_with("vx11-tokenset "), "{tree}");
    let servers: BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| ["axum", "hyper", "hyper-util", "tower-http"].contains(name))
        .collect();
    assert!(servers.is_empty(), "vx11-tokenset depends on {servers:?}");
}

#[test]
fn no_production_file_is_over_500_lines_without_saying_why_at_its_top() {
    let mut long = Vec::new();
    for krate in CRATES {
        for file in rust_files(&workspace().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            if is_test_file(&file) {
                continue;
            }
            let lines = production_part(&text).lines().count();
            let top: String = text.lines().take(60).collect::<Vec<_>>().join("\n");
            if lines > MAX_LINES && !top.contains("Over 500 lines") {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these, or say at the top why one file (\"Over 500 lines …\"): {long:#?}"
    );
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    let mut cycles = Vec::new();
    for krate in CRATES {
        let src = workspace().join(krate).join("src");
        let graph = import_graph(&src);
        assert!(graph.len() > 1, "no modules found under {}", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_check_finds_a_loop_and_passes_a_tree() {
    let parse = |files: &[(&str, &str)]| {
        let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.to_string()).collect();
        files
            .iter()
            .map(|(module, text)| (module.to_string(), imports(module, text, &modules)))
            .collect::<BTreeMap<_, _>>()
    };
    let looped = parse(&[
        ("routes", "use crate::proxy::forward;"),
        ("proxy", "use crate::{check::Verdict, upstream};"),
        ("upstream", "fn f() { crate::routes::refuse() }"),
        ("check", ""),
    ]);
    assert_eq!(
        find_cycle(&looped),
        Some(vec![
            "proxy".into(),
            "upstream".into(),
            "routes".into(),
            "proxy".into()
        ])
    );
    let tree = parse(&[
        ("plan", "use crate::plan::round::Round;"),
        (
            "plan::round",
            "use super::Input; use crate::{plan::Input, status};",
        ),
        (
            "status",
            "#[cfg(test)]\nmod tests { use crate::plan::Input; }",
        ),
    ]);
    assert_eq!(find_cycle(&tree), None);
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A file of tests only (`tests.rs`, `*_tests.rs`).
fn is_test_file(file: &Path) -> bool {
    let stem = file.file_stem().unwrap().to_string_lossy();
    stem == "tests" || stem.ends_with("_tests")
}

/// The text before the file's `#[cfg(test)]` module.
fn production_part(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The module path of `file` under `src` (`plan/round.rs` → `plan::round`); `None` for the
/// crate root and the binaries' own files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return None;
    }
    Some(parts.join("::"))
}

/// Module → the other modules it names through `crate::` paths.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(String, String)> = rust_files(src)
        .into_iter()
        .filter(|file| !is_test_file(file))
        .filter_map(|file| {
            let module = module_of(src, &file)?;
            Some((module, std::fs::read_to_string(&file).unwrap()))
        })
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(module, text)| (module.clone(), imports(module, text, &modules)))
        .collect()
}

/// The modules `module`'s production code names with `crate::…` paths (grouped `use`s
/// included), leaving out its own ancestors and descendants: a parent that declares and
/// re-exports its children, and children that use their parent's types, are one piece.
fn imports(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    // Comments (doc links among them) name items without importing them.
    let code: String = production_part(text)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut named = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `vx11_tokenset::…`-like names ending in "crate" are not this crate.
        }
        for path in paths(rest) {
            if let Some(target) = longest_module(&path, modules) {
                named.insert(target);
            }
        }
    }
    named.retain(|target| {
        target != module
            && !target.starts_with(&format!("{module}::"))
            && !module.starts_with(&format!("{target}::"))
    });
    named
}

/// The paths of a `use` tree (or a plain path) at the start of `text`: `a::{b, c::d}` gives
/// `a::b` and `a::c::d`.
fn paths(text: &str) -> Vec<String> {
    fn tree(text: &str, prefix: &str, out: &mut Vec<String>) -> usize {
        let mut at = 0;
        let mut path = prefix.to_owned();
        loop {
            let ident: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            at += ident.len();
            if !ident.is_empty() {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(&ident);
            }
            if text[at..].starts_with("::{") {
                at += 3;
                loop {
                    let skipped = text[at..].len() - text[at..].trim_start().len();
                    at += skipped;
                    if text[at..].starts_with('}') {
                        return at + 1;
                    }
                    at += tree(&text[at..], &path, out);
                    let skipped = text[at..].len() - text[at..].trim_start().len();
                    at += skipped;
                    if text[at..].starts_with(',') {
                        at += 1;
                    } else if text[at..].starts_with('}') {
                        return at + 1;
                    } else {
                        return at;
                    }
                }
            } else if text[at..].starts_with("::") {
                at += 2;
            } else {
                out.push(path);
                return at;
            }
        }
    }
    let mut out = Vec::new();
    if text.starts_with('{') {
        tree(&format!("::{text}")[..], "", &mut out);
    } else {
        tree(text, "", &mut out);
    }
    out
}

/// The longest prefix of `path` that is one of `modules`.
fn longest_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

/// A loop in `graph`, as the modules round it with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, graph, &mut marks, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}
