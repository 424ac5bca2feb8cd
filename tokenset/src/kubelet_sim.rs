//! kubelet's update of a Secret volume (`AtomicWriter` in `pkg/volume/util`), replayed on
//! a local directory, so that readers are tested against the same file operations a pod
//! sees: a timestamped directory with the payload, a `..data_tmp` symlink renamed over
//! `..data`, one top-level symlink per key, then the old directory removed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Writes `payload` (key → content) into `dir` as kubelet does. Returns `false`, touching
/// nothing, when the content is already there.
pub fn project(dir: &Path, payload: &BTreeMap<String, Vec<u8>>) -> io::Result<bool> {
    fs::create_dir_all(dir)?;
    let old_target = fs::read_link(dir.join(DATA_DIR)).ok();
    if let Some(old) = &old_target
        && unchanged(&dir.join(old), payload)
    {
        return Ok(false);
    }

    let stamp = format!(
        "..{}.{}",
        chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S"),
        random_suffix()?
    );
    let new_dir = dir.join(&stamp);
    fs::create_dir(&new_dir)?;
    for (key, content) in payload {
        fs::write(new_dir.join(key), content)?;
    }

    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    fs::rename(&tmp, dir.join(DATA_DIR))?;

    for key in payload.keys() {
        let link = dir.join(key);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(key), &link)?;
        }
    }
    // Keys that left the payload lose their top-level link.
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("..") && !payload.contains_key(name.as_ref()) {
            let _ = fs::remove_file(dir.join(name.as_ref()));
        }
    }
    if let Some(old) = old_target {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

fn unchanged(current: &Path, payload: &BTreeMap<String, Vec<u8>>) -> bool {
    let Ok(entries) = fs::read_dir(current) else {
        return false;
    };
    let count = entries.count();
    count == payload.len()
        && payload
            .iter()
            .all(|(key, content)| fs::read(current.join(key)).is_ok_and(|c| &c == content))
}

fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{}", b % 10)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_data_and_keeps_key_links() {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = BTreeMap::from([("tokens.json".to_string(), b"one".to_vec())]);
        assert!(project(dir.path(), &payload).unwrap());
        let first = fs::read_link(dir.path().join("..data")).unwrap();
        assert_eq!(fs::read(dir.path().join("tokens.json")).unwrap(), b"one");
        assert!(
            !project(dir.path(), &payload).unwrap(),
            "same content, no write"
        );

        payload.insert("tokens.json".into(), b"two".to_vec());
        assert!(project(dir.path(), &payload).unwrap());
        let second = fs::read_link(dir.path().join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!dir.path().join(first).exists(), "old dir removed");
        assert_eq!(
            fs::read_link(dir.path().join("tokens.json")).unwrap(),
            Path::new("..data/tokens.json")
        );
        assert_eq!(fs::read(dir.path().join("tokens.json")).unwrap(), b"two");
    }
}
