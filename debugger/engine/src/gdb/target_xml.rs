//! The target description (`target.xml` and the files it includes), which gives each register
//! its number for `p`/`P`.
//!
//! gdb numbers registers in document order across included features: a `<reg>` takes its
//! `regnum` attribute if it has one, else the number after the previous register's.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use thiserror::Error;

/// Bounds on what a stub may send: QEMU's RISC-V description is 5 files and ~180 registers.
const MAX_DEPTH: usize = 4;
const MAX_FILES: usize = 32;
const MAX_REGISTERS: usize = 8192;
const MAX_BITSIZE: u32 = 8192;

/// One register of the description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterInfo {
    pub name: String,
    /// The number `p`/`P` take.
    pub regnum: u32,
    pub bitsize: u32,
    /// The feature it belongs to, e.g. `org.gnu.gdb.riscv.csr`.
    pub feature: String,
}

/// A parsed target description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetDescription {
    /// e.g. `riscv:rv64`.
    pub architecture: Option<String>,
    pub registers: Vec<RegisterInfo>,
}

/// A description that could not be read.
#[derive(Debug, Error)]
pub enum TargetXmlError {
    #[error("{file}: malformed XML: {message}")]
    Xml { file: String, message: String },
    #[error("{file}: <reg> {what}")]
    Register { file: String, what: String },
    #[error("{file}: includes nest deeper than {MAX_DEPTH} levels")]
    TooDeep { file: String },
    #[error("the description spans more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("the description has more than {MAX_REGISTERS} registers")]
    TooManyRegisters,
}

impl TargetDescription {
    /// Parses `target.xml`, reading each included file through `fetch` (by its `href`).
    pub fn parse<E>(main: &str, fetch: &mut dyn FnMut(&str) -> Result<String, E>) -> Result<Self, E>
    where
        E: From<TargetXmlError>,
    {
        let mut p = Parser {
            desc: TargetDescription::default(),
            next_regnum: 0,
            files: 1,
        };
        p.file("target.xml", main, 0, fetch)?;
        Ok(p.desc)
    }

    pub fn register(&self, name: &str) -> Option<&RegisterInfo> {
        self.registers.iter().find(|r| r.name == name)
    }

    pub fn register_by_number(&self, regnum: u32) -> Option<&RegisterInfo> {
        self.registers.iter().find(|r| r.regnum == regnum)
    }
}

struct Parser {
    desc: TargetDescription,
    next_regnum: u32,
    files: usize,
}

impl Parser {
    fn file<E: From<TargetXmlError>>(
        &mut self,
        name: &str,
        text: &str,
        depth: usize,
        fetch: &mut dyn FnMut(&str) -> Result<String, E>,
    ) -> Result<(), E> {
        let xml_err = |e: &dyn std::fmt::Display| TargetXmlError::Xml {
            file: name.to_string(),
            message: e.to_string(),
        };
        let mut reader = Reader::from_str(text);
        let mut feature = String::new();
        let mut in_architecture = false;
        loop {
            let event = reader.read_event().map_err(|e| xml_err(&e))?;
            match event {
                Event::Eof => return Ok(()),
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    b"feature" => feature = attr(&e, "name", name)?.unwrap_or_default(),
                    b"architecture" => in_architecture = true,
                    b"include" => {
                        let Some(href) = attr(&e, "href", name)? else {
                            return Err(xml_err(&"<xi:include> without href").into());
                        };
                        if depth + 1 > MAX_DEPTH {
                            return Err(TargetXmlError::TooDeep {
                                file: name.to_string(),
                            }
                            .into());
                        }
                        self.files += 1;
                        if self.files > MAX_FILES {
                            return Err(TargetXmlError::TooManyFiles.into());
                        }
                        let sub = fetch(&href)?;
                        self.file(&href, &sub, depth + 1, fetch)?;
                    }
                    b"reg" => self.register(&e, name, &feature)?,
                    _ => {}
                },
                Event::Text(t) if in_architecture => {
                    let arch = t.decode().map_err(|e| xml_err(&e))?;
                    self.desc.architecture = Some(arch.trim().to_string());
                }
                Event::End(e) if e.local_name().as_ref() == b"architecture" => {
                    in_architecture = false
                }
                _ => {}
            }
        }
    }

    fn register(
        &mut self,
        e: &BytesStart<'_>,
        file: &str,
        feature: &str,
    ) -> Result<(), TargetXmlError> {
        let what = |what: String| TargetXmlError::Register {
            file: file.to_string(),
            what,
        };
        let name = attr(e, "name", file)?.ok_or_else(|| what("without a name".into()))?;
        let number = |key: &str| -> Result<Option<u32>, TargetXmlError> {
            attr(e, key, file)?
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| what(format!("{name}: {key}={v:?} is not a number")))
                })
                .transpose()
        };
        let bitsize = number("bitsize")?.ok_or_else(|| what(format!("{name} has no bitsize")))?;
        if bitsize == 0 || bitsize % 8 != 0 || bitsize > MAX_BITSIZE {
            return Err(what(format!("{name}: unusable bitsize {bitsize}")));
        }
        let regnum = number("regnum")?.unwrap_or(self.next_regnum);
        if self.desc.registers.len() >= MAX_REGISTERS {
            return Err(TargetXmlError::TooManyRegisters);
        }
        self.next_regnum = regnum
            .checked_add(1)
            .ok_or_else(|| what(format!("{name}: regnum out of range")))?;
        self.desc.registers.push(RegisterInfo {
            name,
            regnum,
            bitsize,
            feature: feature.to_string(),
        });
        Ok(())
    }
}

fn attr(e: &BytesStart<'_>, key: &str, file: &str) -> Result<Option<String>, TargetXmlError> {
    for a in e.attributes() {
        let a = a.map_err(|err| TargetXmlError::Xml {
            file: file.to_string(),
            message: err.to_string(),
        })?;
        if a.key.local_name().as_ref() == key.as_bytes() {
            let v =
                a.normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|err| TargetXmlError::Xml {
                        file: file.to_string(),
                        message: err.to_string(),
                    })?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fetches the annexes QEMU 7.2 sent, as recorded under tests/fixtures/gdb.
    fn qemu_fetch(name: &str) -> Result<String, TargetXmlError> {
        Ok(match name {
            "riscv-64bit-cpu.xml" => {
                include_str!("../../tests/fixtures/gdb/riscv-64bit-cpu.xml")
            }
            "riscv-64bit-fpu.xml" => {
                include_str!("../../tests/fixtures/gdb/riscv-64bit-fpu.xml")
            }
            "riscv-64bit-virtual.xml" => {
                include_str!("../../tests/fixtures/gdb/riscv-64bit-virtual.xml")
            }
            "riscv-csr.xml" => include_str!("../../tests/fixtures/gdb/riscv-csr.xml"),
            other => panic!("unexpected annex {other}"),
        }
        .to_string())
    }

    #[test]
    fn qemu_riscv_numbering() {
        let main = include_str!("../../tests/fixtures/gdb/target.xml");
        let d = TargetDescription::parse(main, &mut qemu_fetch).unwrap();
        assert_eq!(d.architecture.as_deref(), Some("riscv:rv64"));
        let n = |name| d.register(name).unwrap().regnum;
        assert_eq!(n("zero"), 0);
        assert_eq!(n("ra"), 1);
        assert_eq!(n("sp"), 2);
        assert_eq!(n("pc"), 32);
        assert_eq!(n("ft0"), 33);
        assert_eq!(n("priv"), 65);
        // CSR n is 66 + n in QEMU's numbering.
        for (name, csr) in [
            ("sepc", 0x141),
            ("scause", 0x142),
            ("stval", 0x143),
            ("satp", 0x180),
            ("mhartid", 0xf14),
        ] {
            assert_eq!(n(name), 66 + csr, "{name}");
        }
        assert!(d.registers.iter().all(|r| r.bitsize == 64));
        assert_eq!(
            d.register("priv").unwrap().feature,
            "org.gnu.gdb.riscv.virtual"
        );
    }

    #[test]
    fn rejects_bad_descriptions() {
        let mut none = |_: &str| -> Result<String, TargetXmlError> { Ok(String::new()) };
        let bad = [
            r#"<target><reg name="x"/></target>"#,
            r#"<target><reg bitsize="64"/></target>"#,
            r#"<target><reg name="x" bitsize="7"/></target>"#,
            r#"<target><reg name="x" bitsize="64" regnum="-1"/></target>"#,
            r#"<target><xi:include/></target>"#,
            r#"<target><reg name="x" bitsize="64"</target>"#,
        ];
        for b in bad {
            assert!(TargetDescription::parse(b, &mut none).is_err(), "{b}");
        }
        // An include loop is stopped by the depth bound, not by running out of stack.
        let mut looping = |_: &str| -> Result<String, TargetXmlError> {
            Ok(r#"<feature><xi:include href="self.xml"/></feature>"#.to_string())
        };
        let e = TargetDescription::parse(
            r#"<target><xi:include href="self.xml"/></target>"#,
            &mut looping,
        );
        assert!(matches!(e, Err(TargetXmlError::TooDeep { .. })));
    }
}
