//! gdb Remote Serial Protocol client.
