//! ELF and DWARF symbols, and disassembly.
