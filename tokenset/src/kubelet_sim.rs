//! kubelet's AtomicWriter (`pkg/volume/util/atomic_writer.go` in Kubernetes), step for step:
//! the file operations a pod sees when kubelet updates a Secret volume.
//!
//! ```text
//! <dir>/..2026_11_22_10_00_00.123456789/tokens.json   the data, one directory per version
//! <dir>/..data -> ..2026_11_22_10_00_00.123456789     swapped atomically by rename(2)
//! <dir>/tokens.json -> ..data/tokens.json             per-key links, made once
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";

/// The mode kubelet gives Secret files by default (`defaultMode: 0644`).
pub const DEFAULT_MODE: u32 = 0o644;

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The content was already there: nothing was touched (but missing per-key links).
    Unchanged,
    /// A new timestamped directory was made and `..data` now points at it.
    Swapped { data_dir: String },
}

/// Projects `payload` (path → content) into `target`, as kubelet does.
///
/// The steps, numbered as in kubelet (7, ownership, does not apply):
///
/// - (1) validate the paths;
/// - (2) read `..data`;
/// - (3) find the paths of the old version that are gone;
/// - (4) compare contents: if nothing changed and nothing is gone, only make sure the per-key
///   links exist;
/// - (5) make `..YYYY_MM_DD_HH_MM_SS.<random>`;
/// - (6) write the files into it (mode [`DEFAULT_MODE`]);
/// - (8) link `..data_tmp` to it;
/// - (9) rename `..data_tmp` over `..data`;
/// - (10) link each top-level name to `..data/<name>`;
/// - (11) remove the links of names that are gone;
/// - (12) remove the old timestamped directory.
pub fn write(target: &Path, payload: &BTreeMap<String, Vec<u8>>) -> io::Result<Outcome> {
    write_with_mode(target, payload, DEFAULT_MODE)
}

/// [`write`] with another file mode (a volume's `defaultMode`).
pub fn write_with_mode(
    target: &Path,
    payload: &BTreeMap<String, Vec<u8>>,
    mode: u32,
) -> io::Result<Outcome> {
    // (1)
    for path in payload.keys() {
        validate_path(path)?;
    }
    fs::create_dir_all(target)?;

    // (2)
    let data_dir = target.join(DATA_DIR);
    let old_ts_dir = match fs::read_link(&data_dir) {
        Ok(link) => Some(link),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let mut paths_to_remove = BTreeSet::new();
    let mut should_write = true;
    let mut remove_old = old_ts_dir.clone();
    if let Some(old) = &old_ts_dir {
        let old_path = target.join(old);
        // (3)
        paths_to_remove = old_paths_gone(payload, &old_path)?;
        // (4)
        if !payload_differs(payload, &old_path)? && paths_to_remove.is_empty() {
            should_write = false;
            remove_old = None;
        }
    }

    let mut outcome = Outcome::Unchanged;
    if should_write {
        // (5)
        let ts_dir = new_timestamp_dir(target)?;
        let ts_name = file_name(&ts_dir);
        // (6)
        for (path, content) in payload {
            let full = ts_dir.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&full, content)?;
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))?;
        }
        // (8)
        let new_data_dir = target.join(NEW_DATA_DIR);
        if let Err(e) = symlink(&ts_name, &new_data_dir) {
            let _ = fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        // (9)
        if let Err(e) = fs::rename(&new_data_dir, &data_dir) {
            let _ = fs::remove_file(&new_data_dir);
            let _ = fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        outcome = Outcome::Swapped { data_dir: ts_name };
    }

    // (10)
    for path in payload.keys() {
        let top = top_level(path);
        let visible = target.join(top);
        if fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new(DATA_DIR).join(top), &visible)?;
        }
    }

    // (11) only names in the volume's root; deeper paths went with the old directory.
    for path in &paths_to_remove {
        if !path.contains('/') {
            fs::remove_file(target.join(path))?;
        }
    }

    // (12)
    if let Some(old) = remove_old {
        fs::remove_dir_all(target.join(old))?;
    }
    Ok(outcome)
}

/// kubelet's rules: relative, no `..` element, not starting with `..`, names ≤ 255 bytes,
/// paths ≤ 4096 bytes.
fn validate_path(path: &str) -> io::Result<()> {
    let invalid = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path {path:?}: {why}"),
        ))
    };
    if path.is_empty() {
        return invalid("must not be empty");
    }
    if path.starts_with('/') {
        return invalid("must be relative");
    }
    if path.len() > 4096 {
        return invalid("must be at most 4096 characters");
    }
    for item in path.split('/') {
        if item == ".." {
            return invalid("must not contain '..'");
        }
        if item.len() > 255 {
            return invalid("file names must be at most 255 characters");
        }
    }
    if path.starts_with("..") {
        return invalid("must not start with '..'");
    }
    Ok(())
}

/// Paths (files and directories, relative) of the old version that the payload no longer has.
fn old_paths_gone(payload: &BTreeMap<String, Vec<u8>>, old: &Path) -> io::Result<BTreeSet<String>> {
    let mut old_paths = BTreeSet::new();
    match walk(old, old, &mut old_paths) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        other => other?,
    }
    let mut new_paths = BTreeSet::new();
    for path in payload.keys() {
        let mut prefix = String::new();
        for (i, part) in path.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(part);
            new_paths.insert(prefix.clone());
        }
    }
    Ok(old_paths.difference(&new_paths).cloned().collect())
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if let Ok(relative) = path.strip_prefix(root) {
            out.insert(relative.to_string_lossy().into_owned());
        }
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

fn payload_differs(payload: &BTreeMap<String, Vec<u8>>, old: &Path) -> io::Result<bool> {
    for (path, content) in payload {
        match fs::read(old.join(path)) {
            Ok(on_disk) if on_disk == *content => {}
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// `os.MkdirTemp(target, "..2006_01_02_15_04_05.")`: the UTC time and a random number.
fn new_timestamp_dir(target: &Path) -> io::Result<std::path::PathBuf> {
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.");
    for _ in 0..10_000 {
        let random = getrandom::u32().map_err(|e| io::Error::other(e.to_string()))?;
        let dir = target.join(format!("{stamp}{random}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                // 0755 whatever the umask: group and others must be able to traverse it.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free timestamped directory name",
    ))
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

fn file_name(path: &Path) -> String {
    path.components()
        .next_back()
        .and_then(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// [`write`], answering whether anything changed (`false` when the content was already there).
pub fn project(target: &Path, payload: &BTreeMap<String, Vec<u8>>) -> io::Result<bool> {
    Ok(matches!(write(target, payload)?, Outcome::Swapped { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn entries(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn first_write_makes_data_link_and_key_links() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = write(dir.path(), &payload(&[("tokens.json", "{}")])).unwrap();
        let Outcome::Swapped { data_dir } = outcome else {
            panic!("expected a swap")
        };
        assert!(data_dir.starts_with(".."), "{data_dir}");
        assert_eq!(
            fs::read_link(dir.path().join("..data")).unwrap(),
            Path::new(&data_dir)
        );
        assert_eq!(
            fs::read_link(dir.path().join("tokens.json")).unwrap(),
            Path::new("..data/tokens.json")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("tokens.json")).unwrap(),
            "{}"
        );
        let mode = fs::metadata(dir.path().join(&data_dir).join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(!dir.path().join("..data_tmp").exists());
    }

    #[test]
    fn update_swaps_and_removes_old_version() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &payload(&[("a", "1"), ("b", "1")])).unwrap();
        let old = fs::read_link(dir.path().join("..data")).unwrap();
        let outcome = write(dir.path(), &payload(&[("a", "2")])).unwrap();
        assert!(matches!(outcome, Outcome::Swapped { .. }));
        let new = fs::read_link(dir.path().join("..data")).unwrap();
        assert_ne!(old, new);
        assert!(!dir.path().join(&old).exists(), "old version removed");
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "2");
        assert!(
            fs::symlink_metadata(dir.path().join("b")).is_err(),
            "b's link removed"
        );
        let names = entries(dir.path());
        let expected: BTreeSet<String> = ["..data", "a", new.to_str().unwrap()]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn unchanged_content_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &payload(&[("a", "1")])).unwrap();
        let before = fs::read_link(dir.path().join("..data")).unwrap();
        assert_eq!(
            write(dir.path(), &payload(&[("a", "1")])).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(fs::read_link(dir.path().join("..data")).unwrap(), before);
    }

    #[test]
    fn nested_paths_link_their_top_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &payload(&[("conf/x", "1")])).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("conf")).unwrap(),
            Path::new("..data/conf")
        );
        assert_eq!(fs::read_to_string(dir.path().join("conf/x")).unwrap(), "1");
    }

    #[test]
    fn refuses_paths_kubelet_refuses() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "/abs", "a/../b", "..hidden", ".."] {
            assert!(
                write(dir.path(), &payload(&[(bad, "x")])).is_err(),
                "{bad:?}"
            );
        }
    }
}
