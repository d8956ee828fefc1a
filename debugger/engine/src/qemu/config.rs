//! [`QemuConfig`]: the one QEMU command line of the project.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::QemuError;

/// The QEMU binary the kernel needs.
pub const QEMU_BINARY: &str = "qemu-system-riscv64";
/// Guest physical address of the start of RAM on QEMU `virt`.
pub const RAM_BASE: u64 = 0x8000_0000;
/// RAM size the kernel is tested with, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 128;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: the console (and QEMU's Ctrl-A monitor) on QEMU's stdin/stdout.
    Stdio,
    /// The console is appended to a file; no monitor. For a UI that owns the terminal.
    File(PathBuf),
    /// No console and no monitor (`-serial none`): for tests that only talk to the gdb stub.
    None,
}

/// One way to boot the kernel. Build with [`QemuConfig::new`] and the setters, then
/// [`QemuConfig::command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuConfig {
    /// The QEMU binary (default [`QEMU_BINARY`], looked up in PATH).
    pub qemu: PathBuf,
    /// The ELF loaded with `-kernel`; `None` boots a bare machine (tests that write a program
    /// through the gdb stub).
    pub kernel: Option<PathBuf>,
    pub smp: u32,
    pub memory_mib: u32,
    /// Passed with `-append`; the kernel reads them from `/chosen/bootargs`.
    pub bootargs: String,
    /// A raw disk image attached as virtio-blk on the first virtio-mmio slot.
    pub disk: Option<PathBuf>,
    /// Let the guest's writes reach the disk image. Off by default: QEMU then writes to a
    /// temporary overlay (`snapshot=on`), so the image stays as built and any number of QEMUs
    /// can share it (QEMU locks an image it may write).
    pub disk_writable: bool,
    /// Open QEMU's gdb stub on `127.0.0.1:port`.
    pub gdb_port: Option<u16>,
    /// Start with the harts stopped until gdb continues them (`-S`).
    pub wait_for_gdb: bool,
    /// Back guest RAM with this file, shared, so the host can read RAM while the guest runs.
    /// Guest address `a` is at file offset `a - RAM_BASE`.
    pub shared_ram: Option<PathBuf>,
    pub console: Console,
    /// Appended as is, last.
    pub extra_args: Vec<OsString>,
}

impl QemuConfig {
    /// The canonical configuration: 4 harts, 128 MiB, console on stdio, no boot arguments.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: Some(kernel.into()),
            ..Self::bare()
        }
    }

    /// A machine with no kernel loaded: QEMU's reset code jumps to the start of RAM, where a
    /// test writes its program through the gdb stub.
    pub fn bare() -> Self {
        Self {
            qemu: PathBuf::from(QEMU_BINARY),
            kernel: None,
            smp: 4,
            memory_mib: DEFAULT_MEMORY_MIB,
            bootargs: String::new(),
            disk: None,
            disk_writable: false,
            gdb_port: None,
            wait_for_gdb: false,
            shared_ram: None,
            console: Console::Stdio,
            extra_args: Vec::new(),
        }
    }

    pub fn smp(mut self, n: u32) -> Self {
        self.smp = n;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Boot arguments, space separated (`workload=kalloctest kalloc=global`).
    pub fn bootargs(mut self, args: impl Into<String>) -> Self {
        self.bootargs = args.into();
        self
    }

    pub fn disk(mut self, image: impl Into<PathBuf>) -> Self {
        self.disk = Some(image.into());
        self
    }

    /// See [`QemuConfig::disk_writable`].
    pub fn disk_writable(mut self, writable: bool) -> Self {
        self.disk_writable = writable;
        self
    }

    pub fn gdb_port(mut self, port: u16) -> Self {
        self.gdb_port = Some(port);
        self
    }

    pub fn wait_for_gdb(mut self, wait: bool) -> Self {
        self.wait_for_gdb = wait;
        self
    }

    pub fn shared_ram(mut self, file: impl Into<PathBuf>) -> Self {
        self.shared_ram = Some(file.into());
        self
    }

    pub fn console(mut self, console: Console) -> Self {
        self.console = console;
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// QEMU's arguments, without the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        let machine = if self.shared_ram.is_some() {
            "virt,memory-backend=ram"
        } else {
            "virt"
        };
        push("-machine");
        push(machine);
        push("-bios");
        push("none");
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-smp");
        push(&self.smp.to_string());
        match &self.console {
            Console::Stdio => push("-nographic"),
            Console::File(path) => {
                push("-display");
                push("none");
                push("-monitor");
                push("none");
                push("-serial");
                a.push(prefixed("file:", path));
            }
            Console::None => {
                for x in ["-display", "none", "-monitor", "none", "-serial", "none"] {
                    push(x);
                }
            }
        }
        if let Some(kernel) = &self.kernel {
            a.push("-kernel".into());
            a.push(kernel.clone().into());
        }
        if !self.bootargs.is_empty() {
            a.push("-append".into());
            a.push(self.bootargs.clone().into());
        }
        if let Some(ram) = &self.shared_ram {
            a.push("-object".into());
            let mut spec = OsString::from(format!(
                "memory-backend-file,id=ram,size={}M,share=on,mem-path=",
                self.memory_mib
            ));
            spec.push(ram.as_os_str());
            a.push(spec);
        }
        if let Some(disk) = &self.disk {
            a.push("-global".into());
            a.push("virtio-mmio.force-legacy=false".into());
            a.push("-drive".into());
            let mut spec = OsString::from("file=");
            spec.push(disk.as_os_str());
            spec.push(",if=none,format=raw,id=x0");
            if !self.disk_writable {
                spec.push(",snapshot=on");
            }
            a.push(spec);
            a.push("-device".into());
            a.push("virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0".into());
        }
        if let Some(port) = self.gdb_port {
            a.push("-gdb".into());
            a.push(format!("tcp:127.0.0.1:{port}").into());
        }
        if self.wait_for_gdb {
            a.push("-S".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Checks the inputs and that QEMU is installed, and returns the command to spawn.
    pub fn command(&self) -> Result<Command, QemuError> {
        if !(1..=lockscope_abi::MAX_HARTS as u32).contains(&self.smp) {
            return Err(QemuError::BadSmp(self.smp));
        }
        if let Some(kernel) = self.kernel.as_ref().filter(|k| !k.is_file()) {
            return Err(QemuError::NoKernel {
                path: kernel.clone(),
            });
        }
        if let Some(disk) = &self.disk {
            if !disk.is_file() {
                return Err(QemuError::NoDisk { path: disk.clone() });
            }
        }
        let qemu = find_in_path(&self.qemu).ok_or_else(|| QemuError::NotInstalled {
            binary: self.qemu.display().to_string(),
        })?;
        let mut cmd = Command::new(qemu);
        cmd.args(self.args());
        Ok(cmd)
    }

    /// The command line as one shell-like string, for logs and error messages.
    pub fn display(&self) -> String {
        let mut s = self.qemu.display().to_string();
        for a in self.args() {
            let a = a.to_string_lossy();
            s.push(' ');
            if a.contains(' ') || a.is_empty() {
                s.push('\'');
                s.push_str(&a);
                s.push('\'');
            } else {
                s.push_str(&a);
            }
        }
        s
    }
}

fn prefixed(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str());
    s
}

/// `binary` itself if it names a path, else the first match in PATH.
pub fn find_in_path(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(c: &QemuConfig) -> Vec<String> {
        c.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn canonical_command_line() {
        let c = QemuConfig::new("/k")
            .smp(2)
            .bootargs("kalloc=global trace=off");
        assert_eq!(
            strings(&c),
            [
                "-machine",
                "virt",
                "-bios",
                "none",
                "-m",
                "128M",
                "-smp",
                "2",
                "-nographic",
                "-kernel",
                "/k",
                "-append",
                "kalloc=global trace=off"
            ]
        );
    }

    #[test]
    fn shared_ram_gdb_and_disk() {
        let c = QemuConfig::new("/k")
            .shared_ram("/tmp/ram")
            .gdb_port(1234)
            .wait_for_gdb(true)
            .disk("/tmp/fs.img")
            .console(Console::File("/tmp/console".into()));
        let a = strings(&c);
        assert_eq!(a[1], "virt,memory-backend=ram");
        let joined = a.join(" ");
        assert!(joined
            .contains("-object memory-backend-file,id=ram,size=128M,share=on,mem-path=/tmp/ram"));
        assert!(joined.contains("-gdb tcp:127.0.0.1:1234 -S"));
        assert!(joined.contains("-drive file=/tmp/fs.img,if=none,format=raw,id=x0,snapshot=on"));
        let w = strings(&c.clone().disk_writable(true)).join(" ");
        assert!(
            w.contains("-drive file=/tmp/fs.img,if=none,format=raw,id=x0 "),
            "{w}"
        );
        assert!(joined.contains("-serial file:/tmp/console"));
        assert!(!joined.contains("-nographic"));
        assert!(!joined.contains("-append"));
    }

    #[test]
    fn missing_pieces_give_actionable_errors() {
        let e = QemuConfig::new("/nonexistent/kernel")
            .command()
            .unwrap_err();
        assert!(e.to_string().contains("cargo xtask build"), "{e}");
        let e = QemuConfig::new("/nonexistent/kernel")
            .smp(9)
            .command()
            .unwrap_err();
        assert!(matches!(e, QemuError::BadSmp(9)));
        let kernel = std::env::current_exe().unwrap();
        let mut c = QemuConfig::new(kernel);
        c.qemu = "qemu-system-does-not-exist".into();
        let e = c.command().unwrap_err();
        assert!(
            e.to_string().contains("apt-get install qemu-system-misc"),
            "{e}"
        );
    }
}
