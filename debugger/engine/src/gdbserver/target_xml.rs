//! QEMU 7.2's RISC-V target description, as its stub sends it (captured once into
//! tests/fixtures/gdb). Serving the same files gives the user's gdb QEMU's register numbers and
//! names (pc 32, `priv` 65, CSR n at 66 + n) against a saved stop.

/// A target description: `target.xml` and the files it includes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetXml {
    pub files: Vec<(String, String)>,
}

impl TargetXml {
    /// QEMU 7.2's description of an RV64 `virt` CPU.
    pub fn qemu72() -> Self {
        let f = |name: &str, text: &str| (name.to_string(), text.to_string());
        Self {
            files: vec![
                f(
                    "target.xml",
                    include_str!("../../tests/fixtures/gdb/target.xml"),
                ),
                f(
                    "riscv-64bit-cpu.xml",
                    include_str!("../../tests/fixtures/gdb/riscv-64bit-cpu.xml"),
                ),
                f(
                    "riscv-64bit-fpu.xml",
                    include_str!("../../tests/fixtures/gdb/riscv-64bit-fpu.xml"),
                ),
                f(
                    "riscv-64bit-virtual.xml",
                    include_str!("../../tests/fixtures/gdb/riscv-64bit-virtual.xml"),
                ),
                f(
                    "riscv-csr.xml",
                    include_str!("../../tests/fixtures/gdb/riscv-csr.xml"),
                ),
            ],
        }
    }

    /// The file gdb asks for by name (`target.xml`, or an `xi:include`).
    pub fn annex(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::target_xml::{TargetDescription, TargetXmlError};

    #[test]
    fn qemu_numbering_survives() {
        let x = TargetXml::qemu72();
        let main = x.annex("target.xml").unwrap();
        let d = TargetDescription::parse(main, &mut |n: &str| {
            x.annex(n)
                .map(str::to_string)
                .ok_or(TargetXmlError::TooManyFiles)
        })
        .unwrap();
        assert_eq!(d.register("pc").unwrap().regnum, 32);
        assert_eq!(d.register("priv").unwrap().regnum, 65);
        assert_eq!(d.register("mstatus").unwrap().regnum, 834);
        assert_eq!(d.register("satp").unwrap().regnum, 66 + 0x180);
    }
}
