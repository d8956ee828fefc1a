//! The relay's side facing QEMU: replies go back to the client whose command is in flight, and
//! a stop goes to the client it belongs to (attributed by the stopped hart's pc when a
//! breakpoint could be either client's).

use super::super::events::UserStopReason;
use super::super::packet::{
    breakpoint_addr, hart_of, is_output, is_stop, stop_signal, stop_thread, without_pid,
};
use super::{norm, stop_reason, with_prefix, Attribution, Pending, Relay, Up, View, Who};
use crate::gdb::hex::hex_decode_into;
use crate::gdb::stop::SIGINT;

impl Relay {
    pub(super) fn on_upstream_packet(&mut self, p: Vec<u8>) {
        if let Up::Running { owner, step } = self.up {
            if is_stop(&p) {
                self.on_stop(p, owner, step);
            } else if !is_output(&p) {
                // QEMU refused the resume command (`E22` for a bad thread): it did not run.
                self.up = Up::Stopped;
                self.interrupt_sent = false;
                if let Some(o) = owner {
                    self.peer(o).view = View::Stopped;
                    self.reply(o, &p);
                }
            }
            return;
        }
        let ok = p == b"OK";
        match self.in_flight.take() {
            // A stop QEMU announced to a new connection, or a late reply.
            None => {}
            Some(Pending::Reply(w)) => self.reply(w, &p),
            Some(Pending::Monitor(w)) => {
                self.reply(w, &p);
                if is_output(&p) {
                    self.in_flight = Some(Pending::Monitor(w));
                }
            }
            Some(Pending::SetThread { who, op, id }) => {
                if ok {
                    let sel = Some(id);
                    match op {
                        b'g' => self.up_g.clone_from(&sel),
                        _ => self.up_c.clone_from(&sel),
                    }
                    if let Some(w) = who {
                        let peer = self.peer(w);
                        match op {
                            b'g' => peer.g = sel,
                            _ => peer.c = sel,
                        }
                    }
                }
                if let Some(w) = who {
                    self.reply(w, &p);
                }
            }
            Some(Pending::Insert { who, key }) => {
                if ok {
                    self.breakpoints.entry(key).or_default().set(who, true);
                }
                self.reply(who, &p);
            }
            Some(Pending::Remove { who, key }) => {
                // On an error (QEMU 7.2 stops at the first CPU without it) it stays tracked,
                // and goes when its owner detaches.
                if ok {
                    self.breakpoints.remove(&key);
                }
                self.reply(who, &p);
            }
            Some(Pending::Internal) => {}
            Some(Pending::ReadPc) => self.on_pc(&p),
            Some(Pending::ReadRegister { thread, reg }) => {
                if let Some(r) = &mut self.ram_reads {
                    r.learned(&thread, reg, &p);
                }
            }
        }
    }

    pub(super) fn on_stop(&mut self, p: Vec<u8>, owner: Option<Who>, step: bool) {
        self.up = Up::Stopped;
        self.interrupt_sent = false;
        if let Some(t) = stop_thread(&p) {
            self.up_g = Some(norm(&t));
            self.up_c = Some(norm(&t));
            self.current = t;
        }
        let (to_user, to_ls) = match stop_signal(&p) {
            None => (true, true),
            Some(SIGINT) => (self.user.interrupt_pending, self.ls.interrupt_pending),
            Some(_) if owner == Some(Who::Ls) && step => (false, true),
            Some(_) => {
                let ls_bps = self.has_breakpoints(Who::Ls);
                let user_runs = self.user.view == View::Running;
                let ls_runs = self.ls.view == View::Running;
                if ls_bps && ls_runs && user_runs && self.has_breakpoints(Who::User) {
                    self.start_attribution(p);
                    return;
                }
                if ls_bps && ls_runs {
                    (false, true)
                } else if user_runs {
                    (true, false)
                } else {
                    (false, ls_runs)
                }
            }
        };
        self.finish_stop(&p, to_user, to_ls);
    }

    pub(super) fn finish_stop(&mut self, p: &[u8], to_user: bool, to_ls: bool) {
        if to_user {
            self.deliver_stop(Who::User, p, None);
        }
        if to_ls {
            self.deliver_stop(Who::Ls, p, None);
        }
        let interrupted = format!("T02thread:{};", String::from_utf8_lossy(&self.current));
        for who in [Who::User, Who::Ls] {
            if self.peer(who).interrupt_pending {
                self.deliver_stop(who, interrupted.as_bytes(), None);
            }
            if self.peer(who).view == View::Attaching {
                self.peer(who).view = View::Stopped;
                if who == Who::User {
                    let hart = hart_of(&self.current);
                    self.shared.stopped(hart, UserStopReason::Attached);
                }
            }
        }
        if let Some(h) = self.pending_report.take() {
            if self.user.view == View::Running {
                self.deliver_report(h);
            } else {
                self.reported = Some(h);
            }
        }
    }

    pub(super) fn deliver_stop(&mut self, who: Who, p: &[u8], reason: Option<UserStopReason>) {
        let peer = self.peer(who);
        if peer.view == View::Absent {
            return;
        }
        let bytes = if peer.multiprocess {
            p.to_vec()
        } else {
            without_pid(p)
        };
        peer.send(&bytes);
        peer.view = View::Stopped;
        peer.interrupt_pending = false;
        let t = stop_thread(p).map(|t| norm(&t));
        peer.g.clone_from(&t);
        peer.c.clone_from(&t);
        if who == Who::User {
            let hart = t.as_deref().and_then(hart_of);
            self.shared
                .stopped(hart, reason.unwrap_or_else(|| stop_reason(p)));
        }
    }

    pub(super) fn has_breakpoints(&self, who: Who) -> bool {
        self.breakpoints.values().any(|o| o.get(who))
    }

    pub(super) fn start_attribution(&mut self, stop: Vec<u8>) {
        self.attribution = Some(Attribution {
            stop,
            pcs: Vec::new(),
            remaining: self.threads.len(),
        });
        for t in self.threads.clone() {
            let id = norm(&t);
            self.internal.push_back((
                with_prefix(b"Hg", &id),
                Pending::SetThread {
                    who: None,
                    op: b'g',
                    id,
                },
            ));
            self.internal.push_back((b"g".to_vec(), Pending::ReadPc));
        }
    }

    pub(super) fn on_pc(&mut self, reply: &[u8]) {
        let Some(a) = &mut self.attribution else {
            return;
        };
        let mut pc = [0u8; 8];
        if reply.len() >= 33 * 16 && hex_decode_into(&reply[32 * 16..33 * 16], &mut pc).is_ok() {
            a.pcs.push(u64::from_le_bytes(pc));
        }
        a.remaining = a.remaining.saturating_sub(1);
        if a.remaining > 0 {
            return;
        }
        let Some(a) = self.attribution.take() else {
            return;
        };
        let hit = |who: Who| {
            self.breakpoints.iter().any(|(key, o)| {
                o.get(who)
                    && matches!(breakpoint_addr(key), Some((0 | 1, addr)) if a.pcs.contains(&addr))
            })
        };
        let ls_hit = hit(Who::Ls);
        // A watchpoint or a stop at none of lockscope's breakpoints is the user's.
        let to_user = hit(Who::User) || !ls_hit;
        self.finish_stop(&a.stop, to_user, ls_hit);
    }
}
