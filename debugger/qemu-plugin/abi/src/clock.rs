//! The clock of every time in the file: host `CLOCK_MONOTONIC` in ns. The plugin stamps events
//! with it and lockscope stamps the VM's stops with it, so both sides read this one function.
//! Portable (no TSC: hosts can be arm64).

/// Host `CLOCK_MONOTONIC` in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
