//! Finding the plugin build that fits a QEMU: the version probe on the real QEMU 7.2 and QEMU 10,
//! and the builds found where `cargo build` puts them; a file from another build is refused.

#[path = "plugin_util.rs"]
mod util;

use std::path::Path;

use lockscope_engine::sources::plugin::{
    self as plugin, abi, plugin_for_qemu, probe_qemu, PluginApi, PluginError, PluginFile,
};
use util::*;

#[test]
fn each_qemu_gets_the_build_it_can_load() {
    // Build both first: the finder looks in this checkout's target/release.
    let v1 = plugin_so(PluginApi::V1);
    let v2 = plugin_so(PluginApi::V2);
    let c = plugin_for_qemu(Path::new("qemu-system-riscv64")).unwrap();
    assert_eq!((c.qemu_version.major, c.qemu_version.minor), (7, 2));
    assert_eq!(c.api, PluginApi::V1);
    assert_eq!(c.path.file_name(), v1.file_name());
    let c = plugin_for_qemu(&qemu10()).unwrap();
    assert_eq!(c.qemu_version.major, 10);
    assert_eq!(c.api, PluginApi::V2);
    assert_eq!(c.path.file_name(), v2.file_name());
    // Not a QEMU at all: the header's fallback message.
    let e = probe_qemu(Path::new("/bin/true")).unwrap_err();
    assert!(matches!(e, PluginError::Unavailable { .. }));
    assert!(e.to_string().ends_with(": reading state only"), "{e}");
}

/// QEMU 7.2 refuses to start with a plugin file of another layout version, and the plugin says
/// why in the file.
#[test]
fn a_file_from_another_build_is_refused_with_a_reason() {
    let _g = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin");
    let plan = kernel_plan(&kernel());
    drop(PluginFile::create(&path, 1, abi::MIN_RING_ENTRIES, &plan, (8, 0)).unwrap());
    // Bump the layout version, as a lockscope from another build would have written it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] += 1;
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new("qemu-system-riscv64")
        .args([
            "-machine",
            "virt",
            "-bios",
            "none",
            "-nographic",
            "-display",
            "none",
        ])
        .args(plugin::qemu_plugin_args(&plugin_so(PluginApi::V1), &path))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("different builds"), "{err}");
    let e = PluginFile::open(&path).unwrap_err().to_string();
    let bumped = format!("layout version {}", abi::VERSION + 1);
    assert!(e.contains(&bumped), "{e}");
}

/// The plugin's file has all its blocks when it is created: a full /dev/shm is an error then,
/// not a SIGBUS in QEMU when a ring first reaches an unallocated page.
#[test]
fn the_plugin_file_is_reserved_whole() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin");
    let plan = kernel_plan(&kernel());
    let file = PluginFile::create(&path, 3, abi::DEFAULT_RING_ENTRIES, &plan, (8, 0)).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert!(m.len() > 3 * u64::from(abi::DEFAULT_RING_ENTRIES));
    assert!(
        m.blocks() * 512 >= m.len(),
        "{} of {} bytes",
        m.blocks() * 512,
        m.len()
    );
    drop(file);
}
