//! Opening a file of the token directory so that nothing in the directory can block the
//! watcher or send it outside: links are followed only while they stay inside the
//! directory (kubelet's `tokens.json -> ..data/tokens.json`, `..data -> ..<timestamp>`),
//! only regular files are read (checked before opening and again on the opened
//! descriptor, which is opened non-blocking so that a FIFO cannot hang the open), and
//! never more than a size limit.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::load_error::LoadError;

/// The bytes of `dir/name`, `None` when there is no such file.
pub fn read_in_dir(dir: &Path, name: &str, limit: u64) -> Result<Option<Vec<u8>>, LoadError> {
    let path = dir.join(name);
    let io_error = |error: io::Error| LoadError::Io {
        path: path.clone(),
        error: error.to_string(),
    };
    let root = match dir.canonicalize() {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    // Resolved from the canonical directory, so a swap of a link above it cannot make a
    // file inside look outside (or the reverse) between the two steps.
    let target = match root.join(name).canonicalize() {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    if !target.starts_with(&root) {
        return Err(LoadError::OutsideDir {
            path,
            dir: dir.to_owned(),
        });
    }
    let kind = std::fs::metadata(&target).map_err(io_error)?;
    if !kind.is_file() {
        return Err(not_regular(path, &kind));
    }
    // O_NONBLOCK: if a FIFO took the file's place since the check, the open does not wait
    // for a writer. O_NOFOLLOW: nor did a link.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&target)
        .map_err(io_error)?;
    let opened = file.metadata().map_err(io_error)?;
    if !opened.is_file() {
        return Err(not_regular(path, &opened));
    }
    read_bounded(file, &path, opened.len(), limit).map(Some)
}

fn read_bounded(file: File, path: &Path, size: u64, limit: u64) -> Result<Vec<u8>, LoadError> {
    let too_large = |size| LoadError::TooLarge {
        path: path.to_owned(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The file may grow between the size check and the read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| LoadError::Io {
            path: path.to_owned(),
            error: error.to_string(),
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn not_regular(path: std::path::PathBuf, metadata: &Metadata) -> LoadError {
    let file_type = metadata.file_type();
    let kind = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    LoadError::NotRegular { path, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kubelet_layout() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_22_10_00_00.1");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tokens"), b"x").unwrap();
        std::os::unix::fs::symlink("..2026_11_22_10_00_00.1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tokens", dir.path().join("tokens")).unwrap();
        assert_eq!(
            read_in_dir(dir.path(), "tokens", 10).unwrap(),
            Some(b"x".to_vec())
        );
        assert_eq!(read_in_dir(dir.path(), "tokens.json", 10).unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_inside() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mount");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink("../outside", dir.join("a")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("b")).unwrap();
        std::os::unix::fs::symlink(".", dir.join("c")).unwrap();
        std::fs::create_dir(dir.join("d")).unwrap();
        for name in ["a", "b"] {
            let err = read_in_dir(&dir, name, 10).unwrap_err();
            assert!(matches!(err, LoadError::OutsideDir { .. }), "{name}: {err}");
        }
        for name in ["c", "d"] {
            let err = read_in_dir(&dir, name, 10).unwrap_err();
            assert!(err.to_string().contains("is a directory"), "{name}: {err}");
        }
    }
}
