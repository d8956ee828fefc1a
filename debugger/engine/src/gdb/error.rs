//! Errors of the gdb client. Every message says what to do about it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::codec::CodecError;
use super::hex::HexError;
use super::stop::StopError;
use super::target_xml::TargetXmlError;

/// What went wrong talking to a gdb stub.
#[derive(Debug, Error)]
pub enum GdbError {
    #[error("no gdb stub at {addr}: start QEMU with -gdb tcp::{port}, or use `lockscope run` ({source})", port = addr.port())]
    NoStub {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot resolve {addr:?}: give the gdb stub address as HOST:PORT, e.g. 127.0.0.1:1234"
    )]
    BadAddress { addr: String },
    #[error("the gdb stub at {addr} accepted the connection but did not answer within {} ms: another debugger (gdb or lockscope) is probably attached, and QEMU serves one at a time; detach it and retry", timeout.as_millis())]
    Busy { addr: SocketAddr, timeout: Duration },
    #[error("the gdb stub did not answer {what} within {} ms: QEMU is hung or the host is overloaded; retry, or raise the timeout", timeout.as_millis())]
    Timeout { what: String, timeout: Duration },
    #[error("the connection to QEMU's gdb stub closed while {during}: QEMU exited or was killed; check its console and start a new session")]
    Disconnected { during: String },
    #[error(
        "the guest shut down (exit status {status}): QEMU has ended the session; start a new one"
    )]
    Exited { status: u8 },
    #[error(
        "the guest was terminated by signal {signal}: QEMU has ended the session; start a new one"
    )]
    Terminated { signal: u8 },
    #[error("cannot {op} while the guest is running: interrupt it first (its state would not be stable, and any byte sent would stop it)")]
    Running { op: String },
    #[error("cannot {op}: the guest is already stopped; resume it first")]
    Stopped { op: String },
    #[error("this connection is unusable after an earlier failure ({cause}); connect again")]
    Unusable { cause: String },
    #[error("the gdb stub refused `{command}` with error {code}{hint}")]
    Refused {
        command: String,
        code: String,
        hint: &'static str,
    },
    #[error("the gdb stub does not support `{command}`: is this QEMU's gdb stub? lockscope needs QEMU 7.2 or newer")]
    Unsupported { command: String },
    #[error("cannot read {len} bytes at {addr:#x}: no RAM or device there (the stub said {code}); check the address against the ELF and the machine's memory map")]
    BadAddressRead { addr: u64, len: usize, code: String },
    #[error("unexpected reply to `{command}`: {reply:?} ({why}); is this QEMU's gdb stub?")]
    Protocol {
        command: String,
        reply: String,
        why: String,
    },
    #[error("the link to the gdb stub keeps corrupting packets: gave up after {attempts} attempts to send `{command}`")]
    Corrupted { command: String, attempts: u32 },
    #[error(
        "register {name} is unknown to this target: its target description has no such register"
    )]
    NoRegister { name: String },
    #[error("only 64-bit RISC-V targets are supported, but the stub describes {arch:?}")]
    Architecture { arch: String },
    #[error("breakpoint at {addr:#x}: {problem}")]
    Breakpoint { addr: u64, problem: String },
    #[error("bad target description from the stub: {0}")]
    TargetXml(#[from] TargetXmlError),
    #[error("garbled data from the gdb stub: {0}")]
    Codec(#[from] CodecError),
    #[error("I/O error on the gdb connection while {during}: {source}")]
    Io {
        during: String,
        #[source]
        source: io::Error,
    },
}

impl GdbError {
    /// True when the session cannot go on and must reconnect (QEMU gone or the link broken).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Disconnected { .. }
                | Self::Exited { .. }
                | Self::Terminated { .. }
                | Self::Unusable { .. }
                | Self::Io { .. }
                | Self::Corrupted { .. }
        )
    }

    pub(crate) fn protocol(command: &str, reply: &[u8], why: impl std::fmt::Display) -> Self {
        let mut reply = String::from_utf8_lossy(reply).into_owned();
        if reply.len() > 120 {
            let mut cut = 120;
            while !reply.is_char_boundary(cut) {
                cut -= 1;
            }
            reply.truncate(cut);
            reply.push_str("...");
        }
        Self::Protocol {
            command: command.to_string(),
            reply,
            why: why.to_string(),
        }
    }

    pub(crate) fn hex(command: &str, reply: &[u8], e: HexError) -> Self {
        Self::protocol(command, reply, e)
    }

    pub(crate) fn stop(command: &str, reply: &[u8], e: StopError) -> Self {
        Self::protocol(command, reply, e)
    }
}
