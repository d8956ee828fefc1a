//! Helpers for the QEMU boot tests in `tests/`.
