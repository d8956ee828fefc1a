//! Booting QEMU for the lockscope kernel.
