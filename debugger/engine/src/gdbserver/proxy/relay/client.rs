//! The relay's side facing the clients: each command of the user's gdb or of lockscope's own
//! client is answered by the proxy, forwarded to QEMU, or held until QEMU can take it, and
//! resumes go to QEMU only when neither client holds the guest stopped.

use super::super::packet::{qemu_thread, Command};
use super::super::ram_reads::{parse_read, Need};
use super::{norm, with_prefix, Item, Pending, Relay, Up, View, Who};

impl Relay {
    pub(super) fn dispatch(&mut self, who: Who, p: Vec<u8>) {
        let command = Command::parse(&p);
        // Registers and memory are read through the thread `Hg` selected (QEMU translates
        // virtual addresses with that CPU's MMU): select this client's thread first.
        if matches!(
            p.first(),
            Some(b'g' | b'G' | b'p' | b'P' | b'm' | b'M' | b'X')
        ) {
            if let Some(g) = self.peer(who).g.clone() {
                if self.up_g.as_deref() != Some(&g[..]) {
                    self.peer(who).queue.push_front(Item::Packet(p));
                    let cmd = with_prefix(b"Hg", &g);
                    self.send_up(
                        &cmd,
                        Some(Pending::SetThread {
                            who: None,
                            op: b'g',
                            id: g,
                        }),
                    );
                    return;
                }
            }
        }
        if matches!(p.first(), Some(b'G' | b'P')) || command == Command::Monitor {
            // A register (satp, the mode) or anything may change: read them again.
            if let Some(r) = &mut self.ram_reads {
                r.forget();
            }
        }
        if let (Some(r), Some(thread), Some((addr, len))) =
            (self.ram_reads.as_mut(), self.up_g.clone(), parse_read(&p))
        {
            match r.read(&thread, addr, len) {
                Need::Reply(bytes) => {
                    self.shared
                        .ram_reads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.reply(who, &bytes);
                    return;
                }
                Need::Register(reg) => {
                    self.peer(who).queue.push_front(Item::Packet(p));
                    let cmd = format!("p{reg:x}");
                    self.send_up(cmd.as_bytes(), Some(Pending::ReadRegister { thread, reg }));
                    return;
                }
                Need::Relay => {}
            }
        }
        if p == b"qfThreadInfo" || p == b"qsThreadInfo" {
            // The harts never change: listed from the handshake's list, one per reply as QEMU
            // sends them (gdb asks after every stop; three round trips saved).
            let i = if p[1] == b'f' {
                0
            } else {
                self.peer(who).next_thread
            };
            let reply = match self.threads.get(i) {
                Some(t) => with_prefix(b"m", t),
                None => b"l".to_vec(),
            };
            self.peer(who).next_thread = i + 1;
            self.reply(who, &reply);
            return;
        }
        match command {
            Command::StopQuery => {
                let thread = match (self.reported, who) {
                    (Some(h), Who::User) => qemu_thread(h),
                    _ => self.current.clone(),
                };
                let stop = with_prefix(b"T05thread:", &thread);
                self.reply(who, &with_prefix(&stop, b";"));
                let t = Some(norm(&thread));
                let peer = self.peer(who);
                peer.g.clone_from(&t);
                peer.c = t;
            }
            Command::Detach => {
                self.reply(who, b"OK");
                self.forget(who, false);
            }
            Command::NoAck => {
                self.reply(who, b"OK");
                if let Some(l) = self.link(who) {
                    l.no_ack = true;
                }
            }
            Command::Resume { step, .. } => self.client_resume(who, p, step),
            Command::SetThread { op, id } => {
                let id = norm(&id);
                self.send_up(
                    &p,
                    Some(Pending::SetThread {
                        who: Some(who),
                        op,
                        id,
                    }),
                )
            }
            Command::Insert { key } => {
                let owners = self.breakpoints.get(&key).copied().unwrap_or_default();
                if owners.user || owners.ls {
                    // QEMU would insert a second copy, needing two removals.
                    self.breakpoints.entry(key).or_default().set(who, true);
                    self.reply(who, b"OK");
                } else {
                    self.send_up(&p, Some(Pending::Insert { who, key }));
                }
            }
            Command::Remove { key } => {
                let owners = self.breakpoints.get(&key).copied().unwrap_or_default();
                let other = match who {
                    Who::User => owners.ls,
                    Who::Ls => owners.user,
                };
                if other {
                    // Still the other client's: it stays in QEMU.
                    if let Some(o) = self.breakpoints.get_mut(&key) {
                        o.set(who, false);
                    }
                    self.reply(who, b"OK");
                } else {
                    self.send_up(&p, Some(Pending::Remove { who, key }));
                }
            }
            Command::Kill { replies } => {
                self.send_up(&p, replies.then_some(Pending::Reply(who)));
            }
            Command::Monitor => self.send_up(&p, Some(Pending::Monitor(who))),
            Command::Other => {
                if p.starts_with(b"qSupported") {
                    self.peer(who).multiprocess = p.windows(13).any(|w| w == b"multiprocess+");
                }
                self.send_up(&p, Some(Pending::Reply(who)));
            }
        }
    }

    pub(super) fn client_resume(&mut self, who: Who, p: Vec<u8>, step: bool) {
        self.idle_hold = false;
        match who {
            Who::Ls => self.ls_step = step.then(|| p.clone()),
            Who::User => {
                self.reported = None;
                self.shared.resumed();
            }
        }
        let peer = self.peer(who);
        peer.view = View::Running;
        peer.interrupt_pending = false;
        peer.last_resume = Some(p);
    }

    /// Resumes QEMU when nobody holds it, with the right resume command: lockscope's own step,
    /// else the user's last resume, else a plain continue. Returns true if it sent something.
    pub(super) fn maybe_resume(&mut self) -> bool {
        if self.busy() || self.idle_hold || self.user.holds() || self.ls.holds() {
            return false;
        }
        let (cmd, owner, step, hc) = if let Some(s) = self.ls_step.take() {
            (s, Some(Who::Ls), true, self.ls.c.clone())
        } else if let (View::Running, Some(a)) = (self.user.view, &self.user.last_resume) {
            let step = matches!(Command::parse(a), Command::Resume { step: true, .. });
            (a.clone(), Some(Who::User), step, self.user.c.clone())
        } else if self.ls.view == View::Running {
            (b"vCont;c".to_vec(), Some(Who::Ls), false, None)
        } else {
            (b"vCont;c".to_vec(), None, false, None)
        };
        if matches!(Command::parse(&cmd), Command::Resume { uses_hc: true, .. }) {
            if let Some(c) = hc.filter(|c| self.up_c.as_ref() != Some(c)) {
                if owner == Some(Who::Ls) && step {
                    self.ls_step = Some(cmd);
                }
                let sel = with_prefix(b"Hc", &c);
                self.internal.push_back((
                    sel,
                    Pending::SetThread {
                        who: None,
                        op: b'c',
                        id: c,
                    },
                ));
                return true;
            }
        }
        self.send_up(&cmd, None);
        self.up = Up::Running { owner, step };
        if let Some(r) = &mut self.ram_reads {
            r.forget();
        }
        false
    }
}
