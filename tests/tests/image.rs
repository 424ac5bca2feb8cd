//! The image that `tests/image/build.sh` assembles without Docker (an OCI image layout tar, for
//! `ctr images import`) is the image the Dockerfile describes: the same binaries in the same
//! place, USER, ENTRYPOINT and EXPOSE, what the final stage inherits from distroless
//! (WorkingDir, PATH, the nonroot user in /etc/passwd), and exactly the shared libraries the
//! binaries load. The Dockerfile is parsed here on its own, not by the script, so the two
//! readings check each other; the chart's commands and user are checked against the image too.
//!
//! The script builds the release binaries (first time: 10+ minutes on 2 cores) and caches the
//! assembly; `VX11_IMAGE_TAR=<tar>` makes these tests check that tar and build nothing (then
//! the reproducibility test is skipped). Running the image under containerd and runc is
//! `tests/image/ctr-check.sh` (root), not part of `cargo test`.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/image/build.sh");
/// What `FROM gcr.io/distroless/cc-debian12:nonroot` gives the final stage.
const BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";
const BASE_WORKDIR: &str = "/home/nonroot";
const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Dockerfile's final stage, and the binaries its build stage makes.
#[derive(Debug)]
struct Dockerfile {
    base: String,
    bins: Vec<String>,
    copy_dest: String,
    user: String,
    expose: BTreeSet<String>,
    entrypoint: Vec<String>,
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(format!("{REPO}/Dockerfile")).unwrap();
    // Instructions, continuation lines joined, comments dropped.
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        if current.is_empty() && raw.trim_start().starts_with('#') {
            continue;
        }
        match raw.trim_end().strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(raw);
                if !current.trim().is_empty() {
                    lines.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM in the Dockerfile");
    let (build, last) = lines.split_at(last_from);

    let bins: Vec<String> = build
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_string())
        .collect();
    let mut df = Dockerfile {
        base: last[0].split_whitespace().nth(1).unwrap().to_string(),
        bins,
        copy_dest: String::new(),
        user: "65532".into(),
        expose: BTreeSet::new(),
        entrypoint: Vec::new(),
    };
    for line in &last[1..] {
        let (instr, rest) = line.split_once(' ').unwrap();
        let rest = rest.trim();
        match instr {
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(words[..2], ["--from=build", "/out/"], "{line}");
                df.copy_dest = words[2].trim_end_matches('/').to_string();
            }
            "USER" => df.user = rest.to_string(),
            "EXPOSE" => df.expose.extend(rest.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            })),
            "ENTRYPOINT" => df.entrypoint = serde_json::from_str(rest).unwrap(),
            other => panic!("the final stage has {other}, which this test does not know: {line}"),
        }
    }
    df
}

fn app_version() -> String {
    let chart = std::fs::read_to_string(format!("{REPO}/charts/vx11/Chart.yaml")).unwrap();
    chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("appVersion in Chart.yaml")
}

/// Runs the build script; its last stdout line is the tar.
fn build(args: &[&str], envs: &[(&str, &str)]) -> PathBuf {
    let out = Command::new("bash")
        .arg(BUILD_SCRIPT)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{BUILD_SCRIPT} {args:?}: {}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("the tar's path on stdout"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))[..64].to_string()
}

/// One entry of the layer: `tar -tv --numeric-owner` fields.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    date: String,
}

/// The image tar unpacked: the layout, its blobs, the layer's entries and unpacked rootfs.
#[derive(Debug)]
struct Image {
    tar: PathBuf,
    index: Value,
    manifest: Value,
    config: Value,
    layer_digest: String,
    diff_id: String,
    /// In the layer's order.
    entries: Vec<(String, Entry)>,
    rootfs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Image {
    fn open(tar: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&layout));
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap();
            let path = layout.join("blobs/sha256").join(hex);
            assert_eq!(sha256(&path), hex, "blob {digest} has another content");
            path
        };
        let json = |path: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };

        assert_eq!(
            json(&layout.join("oci-layout")),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );
        let index = json(&layout.join("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{index}");
        let manifest = json(&blob(manifests[0]["digest"].as_str().unwrap()));
        let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{manifest}");
        let layer_digest = layers[0]["digest"].as_str().unwrap().to_string();
        let layer = blob(&layer_digest);
        assert_eq!(
            layers[0]["size"].as_u64().unwrap(),
            std::fs::metadata(&layer).unwrap().len()
        );
        let plain = dir.path().join("layer.tar");
        let gunzipped = Command::new("gzip")
            .arg("-dc")
            .arg(&layer)
            .stdout(std::fs::File::create(&plain).unwrap())
            .status()
            .unwrap();
        assert!(gunzipped.success());
        let diff_id = format!("sha256:{}", sha256(&plain));

        let listing = run(Command::new("tar")
            .args(["-tv", "--numeric-owner", "-f"])
            .arg(&plain));
        let entries = listing
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(f.len(), 6, "a name with a space or a link: {line}");
                let entry = Entry {
                    mode: f[0].to_string(),
                    owner: f[1].to_string(),
                    date: format!("{} {}", f[3], f[4]),
                };
                (f[5].trim_end_matches('/').to_string(), entry)
            })
            .collect();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&plain)
            .arg("-C")
            .arg(&rootfs));
        Self {
            tar,
            index,
            manifest,
            config,
            layer_digest,
            diff_id,
            entries,
            rootfs,
            _dir: dir,
        }
    }

    fn entry(&self, path: &str) -> &Entry {
        let path = path.trim_start_matches('/');
        self.entries
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("{path} is not in the layer"))
    }

    /// What `ldd` says each binary of the unpacked rootfs loads (absolute paths).
    fn ldd(&self, bin: &str) -> BTreeSet<String> {
        // As the image's loader sees it: cargo test sets LD_LIBRARY_PATH, the image does not.
        let out = run(Command::new("ldd")
            .env_remove("LD_LIBRARY_PATH")
            .arg(self.rootfs.join(bin.trim_start_matches('/'))));
        assert!(!out.contains("not found"), "{bin}: {out}");
        out.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    [_, "=>", path, ..] => Some(path.to_string()),
                    [path, ..] if path.starts_with('/') => Some(path.to_string()),
                    _ => None, // linux-vdso.so.1
                }
            })
            .collect()
    }
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let tar = match std::env::var_os("VX11_IMAGE_TAR") {
            Some(tar) if !tar.is_empty() => PathBuf::from(tar),
            _ => build(&[], &[]),
        };
        Image::open(tar)
    })
}

#[test]
fn names_the_image_as_the_chart_does() {
    let img = image();
    let version = app_version();
    let annotations = &img.index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        format!("docker.io/library/vx11:{version}")
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], version);
    assert_eq!(
        img.index["manifests"][0]["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );
    assert_eq!(img.config["architecture"], "amd64");
    assert_eq!(img.config["os"], "linux");
    assert_eq!(
        img.manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(img.config["rootfs"]["diff_ids"][0], img.diff_id.as_str());
    println!(
        "{}: manifest {}, layer {}, {} bytes",
        img.tar.display(),
        img.index["manifests"][0]["digest"],
        img.layer_digest,
        std::fs::metadata(&img.tar).unwrap().len()
    );
}

#[test]
fn config_is_the_dockerfiles_final_stage() {
    let df = dockerfile();
    assert_eq!(
        df.base, BASE,
        "the final stage's base changed: update BASE_* in tests/image/build.sh and this test"
    );
    let c = &image().config["config"];
    assert_eq!(c["User"], df.user.as_str());
    assert_eq!(
        df.user, "65532:65532",
        "the chart runs the pods as 65532:65532"
    );
    assert_eq!(c["Entrypoint"], serde_json::json!(df.entrypoint));
    assert!(c.get("Cmd").is_none_or(Value::is_null));
    let ports: BTreeSet<String> = c["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ports, df.expose);
    assert_eq!(c["WorkingDir"], BASE_WORKDIR);
    assert_eq!(c["Env"], serde_json::json!([BASE_PATH]));
}

#[test]
fn layer_holds_the_binaries_and_nothing_but_what_they_need() {
    let df = dockerfile();
    let img = image();
    assert!(!df.bins.is_empty());

    let names: Vec<&str> = img.entries.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "the layer's entries are in name order");
    for (name, e) in &img.entries {
        assert_eq!(e.date, "1970-01-01 00:00", "{name}: mtime");
        let owner = if name == "home/nonroot" {
            "65532/65532"
        } else {
            "0/0"
        };
        assert_eq!(e.owner, owner, "{name}: owner");
        assert!(
            e.mode.starts_with('-') || e.mode.starts_with('d'),
            "{name}: only files and directories ({})",
            e.mode
        );
    }

    let mut expected_files = BTreeSet::from(["/etc/passwd".to_string(), "/etc/group".to_string()]);
    for bin in &df.bins {
        let path = format!("{}/{bin}", df.copy_dest);
        assert_eq!(img.entry(&path).mode, "-rwxr-xr-x", "{path}");
        let libs = img.ldd(&path);
        assert!(
            libs.iter().any(|l| l.contains("/libc.so.")),
            "{path} loads glibc: {libs:?}"
        );
        for lib in &libs {
            assert!(
                img.entry(lib).mode.starts_with('-'),
                "{lib}, which {path} loads, is a file in the layer"
            );
        }
        expected_files.insert(path);
        expected_files.extend(libs);
    }
    let files: BTreeSet<String> = img
        .entries
        .iter()
        .filter(|(_, e)| e.mode.starts_with('-'))
        .map(|(n, _)| format!("/{n}"))
        .collect();
    assert_eq!(
        files, expected_files,
        "the binaries, the libraries ldd lists for them, passwd and group: nothing else (no shell)"
    );
    // Directories: the files' parents, /tmp and the base's home of nonroot, with theirs.
    let mut expected_dirs = BTreeSet::new();
    for p in expected_files
        .iter()
        .map(String::as_str)
        .chain(["/tmp/x", "/home/nonroot/x"])
    {
        let mut p = Path::new(p);
        while let Some(parent) = p.parent().filter(|d| *d != Path::new("/")) {
            expected_dirs.insert(parent.to_str().unwrap().to_string());
            p = parent;
        }
    }
    let dirs: BTreeSet<String> = img
        .entries
        .iter()
        .filter(|(_, e)| e.mode.starts_with('d'))
        .map(|(n, _)| format!("/{n}"))
        .collect();
    assert_eq!(dirs, expected_dirs);
    assert_eq!(img.entry("/tmp").mode, "drwxrwxrwt");
    assert_eq!(img.entry(BASE_WORKDIR).mode, "drwx------");
}

#[test]
fn the_images_user_is_distroless_nonroot() {
    let img = image();
    let read = |f: &str| std::fs::read_to_string(img.rootfs.join(f)).unwrap();
    let passwd = read("etc/passwd");
    let group = read("etc/group");
    assert!(
        passwd
            .lines()
            .any(|l| l == "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"),
        "{passwd}"
    );
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    assert!(passwd.lines().any(|l| l.starts_with("root:x:0:0:")));
    assert!(
        !img.rootfs.join("sbin/nologin").exists() && !img.rootfs.join("bin/sh").exists(),
        "no shell"
    );
}

#[test]
fn the_charts_pods_run_what_the_image_has() {
    let img = image();
    let user = img.config["config"]["User"].as_str().unwrap();
    let (uid, gid) = user.split_once(':').unwrap();
    let helpers =
        std::fs::read_to_string(format!("{REPO}/charts/vx11/templates/_helpers.tpl")).unwrap();
    let value = |key: &str| -> String {
        helpers
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{key} in _helpers.tpl"))
    };
    assert_eq!(value("runAsUser:"), uid);
    assert_eq!(value("runAsGroup:"), gid);
    assert_eq!(value("readOnlyRootFilesystem:"), "true");

    let mut commands = BTreeMap::new();
    for entry in std::fs::read_dir(format!("{REPO}/charts/vx11/templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            if let Some(cmd) = line.trim().strip_prefix("command:") {
                let cmd: Vec<String> = serde_json::from_str(cmd.trim()).unwrap();
                commands.insert(cmd[0].clone(), path.clone());
            }
        }
    }
    assert_eq!(commands.len(), 3, "{commands:?}");
    for (cmd, template) in &commands {
        assert_eq!(
            img.entry(cmd).mode,
            "-rwxr-xr-x",
            "{} runs {cmd}",
            template.display()
        );
    }
    let entrypoint = img.config["config"]["Entrypoint"][0].as_str().unwrap();
    assert!(commands.contains_key(entrypoint));
}

#[test]
fn assembly_is_reproducible() {
    if std::env::var_os("VX11_IMAGE_TAR").is_some_and(|v| !v.is_empty()) {
        println!("VX11_IMAGE_TAR is set: nothing is built, skipped");
        return;
    }
    let first = &image().tar;
    let dir = tempfile::tempdir().unwrap();
    let again = build(
        &["--out", dir.path().to_str().unwrap()],
        &[("VX11_REBUILD", "1")],
    );
    assert_eq!(
        sha256(&again),
        sha256(first),
        "the same binaries give the same tar"
    );
}

#[test]
fn pause_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("pause.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .unwrap();
    let bin = dir.path().join("vx11-pause");
    let compiled = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    if !compiled.is_ok_and(|s| s.success()) {
        println!("no `cc -static` here: skipped");
        return;
    }
    let out = dir.path().join("out");
    let tar = build(
        &[
            "--pause",
            bin.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(tar.ends_with("vx11-pause-image.tar"));
    let img = Image::open(tar);
    assert_eq!(
        img.index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/vx11-pause:1"
    );
    let c = &img.config["config"];
    assert_eq!(c["User"], "65535:65535");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/pause"]));
    let names: Vec<&str> = img.entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pause"]);
    assert_eq!(img.entry("pause").mode, "-rwxr-xr-x");
    assert_eq!(
        std::fs::read(img.rootfs.join("pause")).unwrap(),
        std::fs::read(&bin).unwrap()
    );
}
