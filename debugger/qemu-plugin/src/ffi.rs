//! QEMU's TCG plugin API, declared by hand.
//!
//! Why not the `qemu-plugin` crate: it is GPL-2.0-or-later and its default registration puts
//! every callback behind one global mutex; lockscope needs eleven functions whose C signatures
//! are identical in API version 1 (QEMU 6.2 to 8.x) and versions 2 to 5 (QEMU 9 and later), so
//! one set of declarations serves both builds. Only `qemu_plugin_version`, which QEMU checks
//! before calling `qemu_plugin_install`, differs (see the `api-v1` and `api-v2` crates).
//! Signatures as in QEMU's `include/qemu/qemu-plugin.h`.

use std::ffi::{c_char, c_int, c_uint, c_void};

pub type PluginId = u64;
/// `qemu_plugin_meminfo_t`: a u32 bit field in every API version.
pub type MemInfo = u32;

/// `qemu_info_t`.
#[repr(C)]
pub struct QemuInfo {
    pub target_name: *const c_char,
    pub version_min: c_int,
    pub version_cur: c_int,
    pub system_emulation: bool,
    /// `system.smp_vcpus` (the union's only member).
    pub smp_vcpus: c_int,
    pub max_vcpus: c_int,
}

/// Opaque `struct qemu_plugin_tb`.
#[repr(C)]
pub struct Tb {
    _private: [u8; 0],
}

/// Opaque `struct qemu_plugin_insn`.
#[repr(C)]
pub struct Insn {
    _private: [u8; 0],
}

/// `QEMU_PLUGIN_CB_NO_REGS`: our callbacks read no guest register.
pub const CB_NO_REGS: c_int = 0;
/// `QEMU_PLUGIN_MEM_W`.
pub const MEM_W: c_int = 2;

pub type TbTransCb = unsafe extern "C" fn(id: PluginId, tb: *mut Tb);
pub type InsnExecCb = unsafe extern "C" fn(vcpu: c_uint, udata: *mut c_void);
pub type MemCb = unsafe extern "C" fn(vcpu: c_uint, info: MemInfo, vaddr: u64, udata: *mut c_void);
pub type AtExitCb = unsafe extern "C" fn(id: PluginId, udata: *mut c_void);

// Resolved against the QEMU executable when it dlopen()s the plugin.
unsafe extern "C" {
    pub fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    pub fn qemu_plugin_register_atexit_cb(id: PluginId, cb: AtExitCb, udata: *mut c_void);
    pub fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    pub fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    pub fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    pub fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: InsnExecCb,
        flags: c_int,
        udata: *mut c_void,
    );
    pub fn qemu_plugin_register_vcpu_mem_cb(
        insn: *mut Insn,
        cb: MemCb,
        flags: c_int,
        rw: c_int,
        udata: *mut c_void,
    );
    pub fn qemu_plugin_mem_is_store(info: MemInfo) -> bool;
}
