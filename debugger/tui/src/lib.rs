//! lockscope TUI.
