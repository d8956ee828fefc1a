//! Which plugin build fits the QEMU found, and where the plugin is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PluginError;

/// A directory (or a `.so` file) to look for the plugin in first.
pub const PLUGIN_DIR_ENV: &str = "LOCKSCOPE_PLUGIN_DIR";

/// A QEMU version, from `--version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl QemuVersion {
    /// From `QEMU emulator version 7.2.22 (Debian ...)`.
    pub fn parse(version_output: &str) -> Option<QemuVersion> {
        let rest = version_output.split("version ").nth(1)?;
        let word = rest.split_whitespace().next()?;
        let mut it = word.split('.').map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
        });
        let major = it.next()?.ok()?;
        let minor = it.next().and_then(Result::ok).unwrap_or(0);
        let micro = it.next().and_then(Result::ok).unwrap_or(0);
        Some(QemuVersion {
            major,
            minor,
            micro,
        })
    }
}

/// The plugin API a build targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginApi {
    /// Version 1: QEMU 6.2 to 8.x (Debian 12's 7.2, Ubuntu 22.04 and 24.04).
    V1,
    /// Version 2 and later: QEMU 9 and later, which refuse version 1.
    V2,
}

impl PluginApi {
    /// The API a QEMU of this version loads, or why none.
    pub fn for_qemu(v: QemuVersion) -> Result<PluginApi, String> {
        match (v.major, v.minor) {
            (0..=5, _) | (6, 0..=1) => Err(format!(
                "QEMU {v} is older than 6.2, the first with the plugin API lockscope uses"
            )),
            (6..=8, _) => Ok(PluginApi::V1),
            _ => Ok(PluginApi::V2),
        }
    }

    /// The file name of this build: `liblockscope_qemu_v1.so` or `liblockscope_qemu_v2.so`.
    pub fn file_name(self) -> &'static str {
        match self {
            PluginApi::V1 => "liblockscope_qemu_v1.so",
            PluginApi::V2 => "liblockscope_qemu_v2.so",
        }
    }

    /// The cargo package that builds it.
    pub fn package(self) -> &'static str {
        match self {
            PluginApi::V1 => "lockscope-qemu-v1",
            PluginApi::V2 => "lockscope-qemu-v2",
        }
    }
}

/// Runs `qemu --version` (and `-help`, to see whether it was built with plugins).
pub fn probe_qemu(qemu: &Path) -> Result<QemuVersion, PluginError> {
    let unavailable = |reason: String| PluginError::Unavailable { reason };
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(|e| unavailable(format!("cannot run {} --version: {e}", qemu.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = QemuVersion::parse(&text).ok_or_else(|| {
        unavailable(format!(
            "{} --version printed no version: {:?}",
            qemu.display(),
            text.lines().next().unwrap_or("")
        ))
    })?;
    let help = Command::new(qemu)
        .arg("-help")
        .output()
        .map_err(|e| unavailable(format!("cannot run {} -help: {e}", qemu.display())))?;
    if !String::from_utf8_lossy(&help.stdout).contains("-plugin") {
        return Err(unavailable(format!(
            "QEMU {v} at {} was built without plugin support (no -plugin option)",
            qemu.display()
        )));
    }
    Ok(v)
}

/// Where to look for the plugin build `api`, in order: `$LOCKSCOPE_PLUGIN_DIR`, beside the
/// running binary, `../lib/lockscope` from it, the build tree the binary is in
/// (`target/<profile>/`), and the build tree of the checkout it was built from.
fn candidates(api: PluginApi) -> Vec<PathBuf> {
    let name = api.file_name();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os(PLUGIN_DIR_ENV) {
        let d = PathBuf::from(d);
        if d.extension().is_some_and(|e| e == "so") {
            return vec![d];
        }
        dirs.push(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            dirs.push(dir.join("../lib/lockscope"));
            // Test binaries run from target/<profile>/deps.
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for profile in ["release", "debug"] {
        dirs.push(checkout.join("target").join(profile));
    }
    dirs.into_iter().map(|d| d.join(name)).collect()
}

/// The plugin build `api`, or an error that says how to build it.
pub fn find_plugin(api: PluginApi) -> Result<PathBuf, PluginError> {
    let tried = candidates(api);
    if let Some(p) = tried.iter().find(|p| p.is_file()) {
        return Ok(p.canonicalize().unwrap_or_else(|_| p.clone()));
    }
    Err(PluginError::Unavailable {
        reason: format!(
            "{} not found (looked in {}); build it with `cargo build --release -p {}` in the lockscope checkout (or `cargo xtask build`) and put it beside the lockscope binary, or point {PLUGIN_DIR_ENV} at it",
            api.file_name(),
            tried
                .iter()
                .filter_map(|p| p.parent())
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            api.package()
        ),
    })
}

/// The plugin for this QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginChoice {
    pub qemu_version: QemuVersion,
    pub api: PluginApi,
    pub path: PathBuf,
}

/// Probes `qemu` and finds the plugin build it can load. The error reads "this QEMU cannot load
/// lockscope's plugin (...): reading state only", for the dashboard's header.
pub fn plugin_for_qemu(qemu: &Path) -> Result<PluginChoice, PluginError> {
    let v = probe_qemu(qemu)?;
    let api = PluginApi::for_qemu(v).map_err(|reason| PluginError::Unavailable { reason })?;
    Ok(PluginChoice {
        qemu_version: v,
        api,
        path: find_plugin(api)?,
    })
}

/// QEMU's arguments that load `plugin` on `file`. Commas in paths are doubled, as QEMU's
/// option syntax wants.
pub fn qemu_plugin_args(plugin: &Path, file: &Path) -> Vec<OsString> {
    let esc = |p: &Path| p.to_string_lossy().replace(',', ",,");
    vec![
        "-plugin".into(),
        format!("{},shm={}", esc(plugin), esc(file)).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_choose_the_api() {
        let v = QemuVersion::parse(
            "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b2)\nCopyright",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.micro), (7, 2, 22));
        assert_eq!(PluginApi::for_qemu(v), Ok(PluginApi::V1));
        let v = QemuVersion::parse("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)").unwrap();
        assert_eq!(PluginApi::for_qemu(v), Ok(PluginApi::V2));
        let v = QemuVersion::parse("QEMU emulator version 9.0.0").unwrap();
        assert_eq!(PluginApi::for_qemu(v), Ok(PluginApi::V2));
        let v =
            QemuVersion::parse("QEMU emulator version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6)").unwrap();
        assert_eq!(PluginApi::for_qemu(v), Ok(PluginApi::V1));
        let v = QemuVersion::parse("QEMU emulator version 5.2.0").unwrap();
        assert!(PluginApi::for_qemu(v)
            .unwrap_err()
            .contains("older than 6.2"));
        assert!(QemuVersion::parse("nonsense").is_none());
    }

    #[test]
    fn plugin_args_escape_commas() {
        let a = qemu_plugin_args(Path::new("/a,b/lib.so"), Path::new("/tmp/f"));
        assert_eq!(a[1], OsString::from("/a,,b/lib.so,shm=/tmp/f"));
    }

    #[test]
    fn a_missing_plugin_says_how_to_build_it() {
        std::env::set_var(PLUGIN_DIR_ENV, "/nonexistent/x.so");
        let e = find_plugin(PluginApi::V1).unwrap_err().to_string();
        std::env::remove_var(PLUGIN_DIR_ENV);
        assert!(e.contains("cannot load lockscope's plugin"), "{e}");
        assert!(e.contains("reading state only"), "{e}");
    }
}
