//! Where vx11's tests and local runs keep what outlives a process: the dev cluster, the
//! node's state, build caches. `$VX11_CACHE_DIR`, else `~/.cache/vx11`.

use std::path::{Path, PathBuf};

pub fn cache_root() -> PathBuf {
    std::env::var_os("VX11_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/vx11")))
        .unwrap_or_else(|| std::env::temp_dir().join("vx11"))
}
