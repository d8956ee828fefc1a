//! RISC-V `scause` in words.
//!
//! Written out here because the names are the point: crates such as `riscv` decode the code into
//! an enum but have no human wording, and this table is short and fixed by the privileged spec.

use serde::{Deserialize, Serialize};

/// A decoded `scause` value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scause {
    pub raw: u64,
    /// The top bit: an interrupt rather than an exception.
    pub interrupt: bool,
    /// The exception or interrupt code (the raw value without the top bit).
    pub code: u64,
    /// For example "load page fault", or "reserved exception 10".
    pub name: String,
}

impl std::fmt::Display for Scause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (scause {:#x})", self.name, self.raw)
    }
}

fn exception_name(code: u64) -> Option<&'static str> {
    Some(match code {
        0 => "instruction address misaligned",
        1 => "instruction access fault",
        2 => "illegal instruction",
        3 => "breakpoint",
        4 => "load address misaligned",
        5 => "load access fault",
        6 => "store/AMO address misaligned",
        7 => "store/AMO access fault",
        8 => "environment call from U-mode",
        9 => "environment call from S-mode",
        10 => "environment call from VS-mode",
        11 => "environment call from M-mode",
        12 => "instruction page fault",
        13 => "load page fault",
        15 => "store/AMO page fault",
        18 => "software check",
        19 => "hardware error",
        20 => "instruction guest-page fault",
        21 => "load guest-page fault",
        22 => "virtual instruction",
        23 => "store/AMO guest-page fault",
        _ => return None,
    })
}

fn interrupt_name(code: u64) -> Option<&'static str> {
    Some(match code {
        1 => "supervisor software interrupt",
        2 => "virtual supervisor software interrupt",
        3 => "machine software interrupt",
        5 => "supervisor timer interrupt",
        6 => "virtual supervisor timer interrupt",
        7 => "machine timer interrupt",
        9 => "supervisor external interrupt",
        10 => "virtual supervisor external interrupt",
        11 => "machine external interrupt",
        12 => "supervisor guest external interrupt",
        13 => "counter overflow interrupt",
        _ => return None,
    })
}

/// Decodes an RV64 `scause` (or `mcause`) value.
pub fn decode_scause(raw: u64) -> Scause {
    let interrupt = raw >> 63 == 1;
    let code = raw & !(1 << 63);
    let name = if interrupt {
        interrupt_name(code).map_or_else(|| format!("reserved interrupt {code}"), str::to_string)
    } else {
        exception_name(code).map_or_else(|| format!("reserved exception {code}"), str::to_string)
    };
    Scause {
        raw,
        interrupt,
        code,
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_faults_and_timer_read_as_words() {
        assert_eq!(decode_scause(0xd).name, "load page fault");
        assert_eq!(decode_scause(0xf).name, "store/AMO page fault");
        assert_eq!(decode_scause(0xc).name, "instruction page fault");
        assert_eq!(decode_scause(2).name, "illegal instruction");
        let t = decode_scause((1 << 63) | 5);
        assert!(t.interrupt);
        assert_eq!(t.code, 5);
        assert_eq!(t.name, "supervisor timer interrupt");
        assert_eq!(
            decode_scause(0xd).to_string(),
            "load page fault (scause 0xd)"
        );
    }

    #[test]
    fn unknown_codes_say_reserved() {
        assert_eq!(decode_scause(14).name, "reserved exception 14");
        assert_eq!(decode_scause((1 << 63) | 4).name, "reserved interrupt 4");
        assert_eq!(
            decode_scause(u64::MAX).name,
            format!("reserved interrupt {}", u64::MAX >> 1)
        );
    }
}
