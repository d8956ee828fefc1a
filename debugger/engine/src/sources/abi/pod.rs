//! Plain-data reads out of guest memory.

use crate::memory::{GuestMemory, MemoryError};

/// Reads a `T` at `addr`.
pub(crate) fn read_pod<T: bytemuck::Pod, M: GuestMemory + ?Sized>(
    mem: &mut M,
    addr: u64,
) -> Result<T, MemoryError> {
    let mut v = T::zeroed();
    mem.read(addr, bytemuck::bytes_of_mut(&mut v))?;
    Ok(v)
}

/// Reads `n` consecutive `T`s at `addr`. `n` must already be validated against the ABI capacity.
pub(crate) fn read_pods<T: bytemuck::Pod, M: GuestMemory + ?Sized>(
    mem: &mut M,
    addr: u64,
    n: usize,
) -> Result<Vec<T>, MemoryError> {
    let mut v = vec![T::zeroed(); n];
    mem.read(addr, bytemuck::cast_slice_mut(&mut v))?;
    Ok(v)
}

/// Reads one u32 at `addr` (a state word such as the panic record's).
pub(crate) fn read_u32<M: GuestMemory + ?Sized>(
    mem: &mut M,
    addr: u64,
) -> Result<u32, MemoryError> {
    read_pod(mem, addr)
}
