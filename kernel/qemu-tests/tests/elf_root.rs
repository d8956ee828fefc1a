//! The root descriptor in the built ELF matches the ABI crate this workspace compiles.

use lockscope_abi::*;
use lockscope_kernel_tests::{kernel, symbol, symbol_bytes};

#[test]
fn root_symbol_has_the_abi_magic_version_and_sizes() {
    let elf = std::fs::read(kernel()).unwrap();
    let (addr, size) = symbol(&elf, ROOT_SYMBOL).expect("LOCKSCOPE_ROOT symbol in the kernel ELF");
    assert_eq!(size as usize, std::mem::size_of::<Root>());
    assert!(addr >= 0x8000_0000, "root at {addr:#x} is not in RAM");
    let bytes = symbol_bytes(&elf, ROOT_SYMBOL).expect("the root's initial bytes are in the ELF");
    let root: Root = bytemuck::pod_read_unaligned(&bytes);
    assert_eq!(root.magic, ROOT_MAGIC);
    assert_eq!(root.version, ABI_VERSION);
    assert_eq!(root.root_size as usize, std::mem::size_of::<Root>());
    assert_eq!(root.ring_entries as usize, RING_ENTRIES);
    assert_eq!(root.event_size as usize, std::mem::size_of::<Event>());
    assert_eq!(
        root.lock_info_size as usize,
        std::mem::size_of::<LockInfo>()
    );
    assert_eq!(
        root.hart_state_size as usize,
        std::mem::size_of::<HartState>()
    );
    assert_eq!(
        root.panic_record_size as usize,
        std::mem::size_of::<PanicRecord>()
    );
    assert_eq!(root.max_harts as usize, MAX_HARTS);
    assert_eq!(root.max_locks as usize, MAX_LOCKS);
    // Pointers are filled at boot, not in the file.
    assert_eq!(root.flags & FLAG_READY, 0);
    assert_eq!(root.locks, 0);
}

#[test]
fn panic_halt_symbol_is_a_function() {
    let elf = std::fs::read(kernel()).unwrap();
    let (addr, size) = symbol(&elf, PANIC_HALT_SYMBOL).expect("lockscope_panic_halt symbol");
    assert!(addr >= 0x8000_0000 && size > 0);
}
