//! The images a node runs, made on this machine by `tests/image/build.sh` (no Docker engine,
//! no registry): vx11's image from the release binaries, and the pod sandbox (pause) image.

use std::path::PathBuf;

use crate::{Binaries, Error, Result};

/// The image script, in this crate's source tree.
pub const IMAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/image/build.sh");

/// Builds (or takes from the script's cache) vx11's image and the pause image; returns their
/// OCI archives, for [`NodeOptions::images`](crate::NodeOptions::images). The first build
/// compiles the release binaries (minutes); the script's progress goes to stderr.
pub fn build_images(binaries: &Binaries) -> Result<Vec<PathBuf>> {
    let pause = binaries.program("vx11-pause");
    Ok(vec![
        run_image_script(&[])?,
        run_image_script(&["--pause".into(), pause.display().to_string()])?,
    ])
}

fn run_image_script(args: &[String]) -> Result<PathBuf> {
    crate::binaries::run_script_for_path(IMAGE_SCRIPT, args).map_err(Error::Binaries)
}
