//! Reads the lockscope ABI out of guest memory.
