//! lockscope's QEMU TCG plugin: lock events from an unmodified RISC-V kernel.
//!
//! QEMU loads a cdylib built from this crate (`api-v1/` for QEMU 6.2 to 8.x, `api-v2/` for QEMU 9
//! and later) with `-plugin liblockscope_qemu_vN.so,shm=PATH`. PATH is a file lockscope wrote
//! (layout: `lockscope-plugin-abi`): it says which instructions to watch, and the plugin writes
//! one event ring and one published state per vCPU into it. At translation time only the
//! watched instructions get a callback; everything else in the guest runs as without a plugin.
//! See docs/plugin.md.

pub mod ffi;
mod frame;
mod hart;
mod rw;
mod shared;
mod thread;

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::mem::offset_of;
use std::sync::OnceLock;

use lockscope_plugin_abi::{self as abi, Watch, WatchKind};

use hart::{Ctx, Hart};
pub use lockscope_plugin_abi::monotonic_ns;
use shared::Shared;

/// Most vCPUs the plugin keeps tables for (the file may describe fewer).
const MAX_VCPUS: usize = abi::MAX_HARTS as usize;

struct Plugin {
    shared: Shared,
    /// Sorted by pc. Callbacks get a pointer to their entry as user data.
    watch: &'static [Watch],
    min_pc: u64,
    max_pc: u64,
}

static PLUGIN: OnceLock<Plugin> = OnceLock::new();

/// One vCPU's private table, touched only by the thread running that vCPU.
struct Slot(UnsafeCell<Hart>);
// SAFETY: slot `i` is only ever accessed from callbacks for vCPU `i`, which QEMU runs on one
// thread at a time (its vCPU thread with MTTCG, the one TCG thread without).
unsafe impl Sync for Slot {}

static HARTS: [Slot; MAX_VCPUS] = [const { Slot(UnsafeCell::new(Hart::new())) }; MAX_VCPUS];

#[inline]
fn with_hart(vcpu: c_uint, f: impl FnOnce(&mut Ctx<'_>)) {
    let Some(p) = PLUGIN.get() else { return };
    if vcpu >= p.shared.nharts {
        return;
    }
    // SAFETY: see `Slot`: only this vCPU's callbacks touch its slot, one at a time.
    let h = unsafe { &mut *HARTS[vcpu as usize].0.get() };
    let mut ctx = Ctx {
        h,
        s: &p.shared,
        hart: vcpu,
    };
    f(&mut ctx);
}

unsafe extern "C" fn on_exec(vcpu: c_uint, udata: *mut c_void) {
    // SAFETY: udata points into the leaked watch table (see `on_tb`).
    let w = unsafe { &*(udata as *const Watch) };
    with_hart(vcpu, |c| match WatchKind::from_u32(w.kind) {
        Some(WatchKind::Call) => c.call(w.aux),
        Some(WatchKind::SleepCall) => c.sleep_call(w.aux),
        Some(WatchKind::Acquired | WatchKind::Return) => c.acquired(),
        Some(WatchKind::RwCall) => c.rw_call(w.aux, w.flags),
        Some(WatchKind::RwReturn) => c.rw_return(),
        Some(WatchKind::RwWait) => c.rw_wait(),
        _ => {}
    });
}

unsafe extern "C" fn on_mem(vcpu: c_uint, info: ffi::MemInfo, vaddr: u64, udata: *mut c_void) {
    // SAFETY: udata points into the leaked watch table (see `on_tb`).
    let w = unsafe { &*(udata as *const Watch) };
    // SAFETY: a plain query of the info word QEMU passed.
    let store = unsafe { ffi::qemu_plugin_mem_is_store(info) };
    // An AMO without MTTCG is a load and a store: act on the store only (the context switch's
    // incoming side is a load).
    with_hart(vcpu, |c| match WatchKind::from_u32(w.kind) {
        Some(WatchKind::Tas) if store => c.tas(vaddr, w.flags as u8),
        Some(WatchKind::Release) if store => c.release(vaddr),
        Some(WatchKind::SleepAcquireStore) if store => c.sleep_store(vaddr, true),
        Some(WatchKind::SleepReleaseStore) if store => c.sleep_store(vaddr, false),
        Some(WatchKind::SwitchOut) if store => c.switch_out(vaddr.wrapping_sub(w.aux)),
        Some(WatchKind::SwitchIn) if !store => c.switch_in(vaddr.wrapping_sub(w.aux)),
        _ => {}
    });
}

/// At translation: a callback on the watched instructions of this block, nothing else.
unsafe extern "C" fn on_tb(_id: ffi::PluginId, tb: *mut ffi::Tb) {
    let Some(p) = PLUGIN.get() else { return };
    // SAFETY: `tb` is the block QEMU is translating, valid during this callback.
    let n = unsafe { ffi::qemu_plugin_tb_n_insns(tb) };
    if n == 0 {
        return;
    }
    // SAFETY: indices below n_insns.
    let first = unsafe { ffi::qemu_plugin_insn_vaddr(ffi::qemu_plugin_tb_get_insn(tb, 0)) };
    // SAFETY: as above.
    let last = unsafe { ffi::qemu_plugin_insn_vaddr(ffi::qemu_plugin_tb_get_insn(tb, n - 1)) };
    if last < p.min_pc || first > p.max_pc {
        return;
    }
    let mut k = p.watch.partition_point(|w| w.pc < first);
    for i in 0..n {
        if k >= p.watch.len() {
            break;
        }
        // SAFETY: i < n_insns.
        let insn = unsafe { ffi::qemu_plugin_tb_get_insn(tb, i) };
        // SAFETY: a valid insn of this block.
        let pc = unsafe { ffi::qemu_plugin_insn_vaddr(insn) };
        while k < p.watch.len() && p.watch[k].pc < pc {
            k += 1;
        }
        while k < p.watch.len() && p.watch[k].pc == pc {
            let w = &p.watch[k];
            let udata = w as *const Watch as *mut c_void;
            match WatchKind::from_u32(w.kind) {
                Some(
                    WatchKind::Call
                    | WatchKind::SleepCall
                    | WatchKind::Acquired
                    | WatchKind::Return
                    | WatchKind::RwCall
                    | WatchKind::RwReturn
                    | WatchKind::RwWait,
                ) => {
                    // SAFETY: insn belongs to the block being translated; udata is 'static.
                    unsafe {
                        ffi::qemu_plugin_register_vcpu_insn_exec_cb(
                            insn,
                            on_exec,
                            ffi::CB_NO_REGS,
                            udata,
                        )
                    }
                }
                Some(kind) => {
                    // QEMU 7.2 never calls a callback registered for loads only (measured
                    // here): the incoming context's load asks for both and keeps the load.
                    let rw = if kind == WatchKind::SwitchIn {
                        ffi::MEM_RW
                    } else {
                        ffi::MEM_W
                    };
                    // SAFETY: as above.
                    unsafe {
                        ffi::qemu_plugin_register_vcpu_mem_cb(
                            insn,
                            on_mem,
                            ffi::CB_NO_REGS,
                            rw,
                            udata,
                        )
                    }
                }
                None => {}
            }
            k += 1;
        }
    }
}

unsafe extern "C" fn on_exit(_id: ffi::PluginId, _udata: *mut c_void) {
    if let Some(p) = PLUGIN.get() {
        p.shared.set_state(abi::STATE_EXITED);
    }
}

/// The arguments QEMU passed (`shm=PATH`).
fn args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    (0..argc.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: QEMU passes argc valid NUL-terminated strings.
            let p = unsafe { *argv.add(i) };
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// Maps the file and checks it; on failure says why in the file (when it is ours) and on stderr.
fn open(path: &str, api: u32, vcpus: u32) -> Result<Plugin, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat {path}: {e}"))?
        .len();
    if len < std::mem::size_of::<abi::Header>() as u64 || len > 1 << 36 {
        return Err(format!(
            "{path} is {len} bytes: not a lockscope plugin file"
        ));
    }
    // SAFETY: a fresh shared mapping of the whole file; it is never unmapped (QEMU exits with it).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!(
            "cannot map {path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let base = base as *mut u8;
    // SAFETY: the mapping is at least a header long; read unaligned-safe by copy.
    let header: abi::Header = unsafe { std::ptr::read_volatile(base as *const abi::Header) };
    let layout = header.validate(len).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: live mapping, validated layout.
    let shared = unsafe { Shared::new(base, len as usize, layout, &header) };
    let fail = |msg: String| {
        shared.set_message(&msg);
        shared.set_state(abi::STATE_FAILED);
        msg
    };
    if vcpus > header.nharts {
        return Err(fail(format!(
            "QEMU has {vcpus} vCPUs but the file has rings for {}: lockscope must size it for -smp",
            header.nharts
        )));
    }
    // Copy the watch table once; callbacks point into the copy.
    let mut watch = Vec::with_capacity(header.nwatch as usize);
    for i in 0..header.nwatch as u64 {
        let off = layout.watch_off + i * std::mem::size_of::<Watch>() as u64;
        // SAFETY: inside the validated file; Watch is Pod.
        let w: Watch = unsafe { std::ptr::read_unaligned(base.add(off as usize) as *const Watch) };
        if WatchKind::from_u32(w.kind).is_none() {
            return Err(fail(format!("watch entry {i} has unknown kind {}", w.kind)));
        }
        watch.push(w);
    }
    watch.sort_by_key(|w| w.pc);
    let min_pc = watch.first().map_or(u64::MAX, |w| w.pc);
    let max_pc = watch.last().map_or(0, |w| w.pc);
    shared.init_rings();
    shared.set_header_u32(offset_of!(abi::Header, plugin_api), api);
    shared.set_header_u32(offset_of!(abi::Header, qemu_vcpus), vcpus);
    shared.set_state(abi::STATE_RUNNING);
    Ok(Plugin {
        shared,
        watch: Vec::leak(watch),
        min_pc,
        max_pc,
    })
}

/// `qemu_plugin_install` of both cdylibs: `api` is the QEMU plugin API version they declare.
///
/// # Safety
/// Called by QEMU with its own valid `info` and `argv`.
pub unsafe fn install(
    api: u32,
    id: ffi::PluginId,
    info: *const ffi::QemuInfo,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: QEMU passes a valid info.
    let info = unsafe { &*info };
    if !info.system_emulation {
        eprintln!("lockscope plugin: needs system emulation (qemu-system-riscv64)");
        return -1;
    }
    let vcpus = info.smp_vcpus.max(1) as u32;
    let args = args(argc, argv);
    let Some(path) = args.iter().find_map(|a| a.strip_prefix("shm=")) else {
        eprintln!(
            "lockscope plugin: missing argument shm=PATH (lockscope passes it); got {args:?}"
        );
        return -1;
    };
    match open(path, api, vcpus) {
        Ok(p) => {
            if PLUGIN.set(p).is_err() {
                eprintln!("lockscope plugin: loaded twice");
                return -1;
            }
            // SAFETY: registering our callbacks with the id QEMU gave us.
            unsafe {
                ffi::qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
                ffi::qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
            }
            0
        }
        Err(msg) => {
            eprintln!("lockscope plugin: {msg}");
            -1
        }
    }
}

/// Defines the two symbols QEMU looks up in a plugin, for API version `$api`.
#[macro_export]
macro_rules! export_plugin {
    ($api:expr) => {
        /// Checked by QEMU before it calls `qemu_plugin_install`.
        #[no_mangle]
        pub static qemu_plugin_version: std::ffi::c_int = $api;

        /// # Safety
        /// Called by QEMU once, with valid arguments.
        #[no_mangle]
        pub unsafe extern "C" fn qemu_plugin_install(
            id: $crate::ffi::PluginId,
            info: *const $crate::ffi::QemuInfo,
            argc: std::ffi::c_int,
            argv: *const *const std::ffi::c_char,
        ) -> std::ffi::c_int {
            // SAFETY: forwarded from QEMU as is.
            unsafe { $crate::install($api, id, info, argc, argv) }
        }
    };
}
