//! How a QEMU run of the kernel ended: the kernel's verdict through the SiFive test device.

use std::process::ExitStatus;

use lockscope_abi::exit;

/// How a QEMU run of the kernel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitVerdict {
    /// The kernel wrote PASS to the SiFive test device ([`exit::PASS`]).
    Pass,
    /// The workload's check failed ([`exit::FAIL`]).
    Fail,
    /// The kernel rejected its boot arguments ([`exit::BOOTARGS`]).
    BadBootargs,
    /// The kernel panicked with `panic=exit` ([`exit::PANIC`]).
    Panic,
    /// QEMU itself failed (status 1: bad option, missing file), or another code.
    Other(i32),
    /// Killed by a signal (for example a timeout).
    Killed,
}

impl ExitVerdict {
    pub fn from_code(code: Option<i32>) -> Self {
        match code {
            Some(exit::PASS) => ExitVerdict::Pass,
            Some(exit::FAIL) => ExitVerdict::Fail,
            Some(exit::BOOTARGS) => ExitVerdict::BadBootargs,
            Some(exit::PANIC) => ExitVerdict::Panic,
            Some(c) => ExitVerdict::Other(c),
            None => ExitVerdict::Killed,
        }
    }

    pub fn from_status(status: ExitStatus) -> Self {
        Self::from_code(status.code())
    }

    pub fn passed(self) -> bool {
        self == ExitVerdict::Pass
    }
}

impl std::fmt::Display for ExitVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitVerdict::Pass => write!(f, "pass"),
            ExitVerdict::Fail => write!(f, "fail (the workload's check failed)"),
            ExitVerdict::BadBootargs => write!(f, "bad boot arguments"),
            ExitVerdict::Panic => write!(f, "kernel panic"),
            ExitVerdict::Other(1) => write!(f, "QEMU error (exit status 1)"),
            ExitVerdict::Other(c) => write!(f, "unexpected exit status {c}"),
            ExitVerdict::Killed => write!(f, "killed by a signal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decode() {
        assert_eq!(ExitVerdict::from_code(Some(0)), ExitVerdict::Pass);
        assert_eq!(ExitVerdict::from_code(Some(2)), ExitVerdict::Fail);
        assert_eq!(ExitVerdict::from_code(Some(3)), ExitVerdict::BadBootargs);
        assert_eq!(ExitVerdict::from_code(Some(4)), ExitVerdict::Panic);
        assert_eq!(ExitVerdict::from_code(Some(1)), ExitVerdict::Other(1));
        assert_eq!(ExitVerdict::from_code(None), ExitVerdict::Killed);
        assert!(!ExitVerdict::Fail.passed());
    }
}
