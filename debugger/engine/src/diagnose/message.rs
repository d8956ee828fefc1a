//! The message a hart passed to the kernel's `panic(char *s)`: xv6's `panic` prints it and
//! spins, and by then the argument register is long reused, so it is read back from the call
//! site: the instructions that set `a0` before the caller's `call panic`.

use super::calls::argument_a0;
use super::regs::FrameRegs;
use crate::memory::GuestMemory;
use crate::symbols::{RawFrame, RawFrameKind, Symbols};

/// Longest message read.
const MAX_MESSAGE: usize = 256;

/// The string passed to the function of frame `k` by its caller (frame `k + 1`), when the call
/// site says where it is and it reads as text. `regs[k + 1]` are the caller's registers.
pub fn panic_message(
    symbols: &Symbols,
    frames: &[RawFrame],
    regs: &[FrameRegs],
    k: usize,
    mem: &mut dyn GuestMemory,
) -> Option<String> {
    let caller = frames
        .get(k + 1)
        .filter(|f| f.kind == RawFrameKind::Return)?;
    // The call instruction is the one the return address follows.
    let code = symbols.function_instructions(caller.pc - 1).ok()?;
    let call = code.iter().find(|i| i.end() == caller.pc && i.is_call())?;
    let addr = argument_a0(symbols, call.address, regs.get(k + 1), Some(&mut *mem))?;
    read_string(symbols, mem, addr)
}

/// A NUL-terminated string at `addr`: from the ELF when it is a constant, else from memory.
pub fn read_string(symbols: &Symbols, mem: &mut dyn GuestMemory, addr: u64) -> Option<String> {
    // Memory first (the kernel's own bytes), halving near the end of a region; the ELF's
    // image when memory cannot be read there.
    let mut n = MAX_MESSAGE;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let ok = loop {
        if mem.read(addr, &mut buf[..n]).is_ok() {
            buf.truncate(n);
            break true;
        }
        n /= 2;
        if n < 8 {
            buf = vec![0u8; 64];
            break symbols.read_static_into(addr, &mut buf).is_ok();
        }
    };
    if !ok {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    (!s.is_empty() && s.chars().all(|c| !c.is_control() || c == '\t')).then(|| s.to_owned())
}
