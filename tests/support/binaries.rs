//! Locating the programs the tests drive: both receptor implementations, receptorctl and
//! the python of the test virtualenv.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// Which receptor program runs a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Implementation {
    /// The reference Go receptor 1.6.9 (`RECEPTOR_REFERENCE_BIN`).
    Go,
    /// This project's `receptor` (`RECEPTOR_BIN`).
    Rust,
}

impl Implementation {
    /// The path of this implementation's `receptor` binary.
    pub fn binary(self) -> Result<PathBuf> {
        match self {
            Implementation::Go => reference_receptor(),
            Implementation::Rust => rust_receptor(),
        }
    }

    /// A short lowercase name: `go` or `rust`.
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Go => "go",
            Implementation::Rust => "rust",
        }
    }
}

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cached(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    find: fn() -> Result<PathBuf>,
) -> Result<PathBuf> {
    cell.get_or_init(|| find().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn existing_executable(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{what}: {} does not exist (run scripts/test.sh, which prepares it)",
            path.display()
        )
    }
}

/// The reference Go receptor: `RECEPTOR_REFERENCE_BIN`, else what
/// `scripts/reference-receptor` prints (it downloads the binary on first use).
pub fn reference_receptor() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        if let Some(path) = std::env::var_os("RECEPTOR_REFERENCE_BIN") {
            return existing_executable(PathBuf::from(path), "RECEPTOR_REFERENCE_BIN");
        }
        let script = repo_root().join("scripts/reference-receptor");
        let out = Command::new(&script)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "RECEPTOR_REFERENCE_BIN is not set and {} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        existing_executable(PathBuf::from(path), "scripts/reference-receptor")
    })
}

/// Our `receptor`: `RECEPTOR_BIN`, else `receptor` in the cargo profile folder that holds
/// this test binary (`target/debug/deps/e2e-*` -> `target/debug/receptor`).
pub fn rust_receptor() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        if let Some(path) = std::env::var_os("RECEPTOR_BIN") {
            return existing_executable(PathBuf::from(path), "RECEPTOR_BIN");
        }
        let exe = std::env::current_exe().context("locating the test binary")?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| anyhow!("unexpected test binary path {}", exe.display()))?;
        existing_executable(
            profile_dir.join("receptor"),
            "RECEPTOR_BIN is not set and the built receptor",
        )
    })
}

/// The `receptorctl` 1.6.9 command: `RECEPTORCTL`, else `.venv/bin/receptorctl`.
pub fn receptorctl() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || match std::env::var_os("RECEPTORCTL") {
        Some(path) => existing_executable(PathBuf::from(path), "RECEPTORCTL"),
        None => existing_executable(
            repo_root().join(".venv/bin/receptorctl"),
            "RECEPTORCTL is not set and .venv's receptorctl",
        ),
    })
}

/// The python that has receptorctl installed: `PYTHON`, else `.venv/bin/python`.
pub fn python() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || match std::env::var_os("PYTHON") {
        Some(path) => existing_executable(PathBuf::from(path), "PYTHON"),
        None => existing_executable(
            repo_root().join(".venv/bin/python"),
            "PYTHON is not set and .venv's python",
        ),
    })
}

/// The folder holding the plugin cdylibs (`libreceptor_*.so`) of this build.
///
/// `scripts/test.sh` builds the whole workspace first and exports `RECEPTOR_PLUGIN_DIR`,
/// so tests never build (and never overwrite a library another test process has
/// loaded). Without it (a developer running one crate's tests), the workspace's
/// libraries are built once into the test binary's target folder, under a file lock
/// shared by all test processes.
pub fn plugin_dir() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        if let Some(dir) = std::env::var_os("RECEPTOR_PLUGIN_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let exe = std::env::current_exe().context("test executable path")?;
        // target/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .context("test binary is not in target/<profile>/deps")?
            .to_path_buf();
        let target = profile_dir.parent().context("no target folder")?;
        build_workspace_libs(&profile_dir, target)?;
        Ok(profile_dir)
    })
}

fn build_workspace_libs(profile_dir: &Path, target: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let lock_path = target.join(".receptor-test-build.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("locking {}", lock_path.display());
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "--workspace", "--lib", "--target-dir"])
        .arg(target);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .context("running cargo build for the plugins")?;
    if !status.success() {
        bail!("building the workspace's plugin libraries failed");
    }
    drop(lock);
    Ok(())
}

/// The path of one plugin library of this build, e.g. `plugin_lib("receptor_tcp")`.
pub fn plugin_lib(name: &str) -> Result<PathBuf> {
    let path = plugin_dir()?.join(format!("lib{name}.so"));
    existing_executable(path, "plugin library")
}
