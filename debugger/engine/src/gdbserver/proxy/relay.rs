//! The relay: one connection to QEMU's all-stop stub shared by the user's gdb and lockscope's
//! own client, each of which believes it is alone.
//!
//! Each client has a view of the guest (stopped or running). QEMU runs only when neither holds
//! it stopped; while one holds it, the other's commands still interleave. A stop reply goes to
//! the client it belongs to (its interrupt, its breakpoint, its step); a client that interrupts
//! a guest the other one holds gets an interrupt stop at once, as QEMU would answer. When
//! lockscope resumes after one of its own stops, the guest resumes with the user's last resume
//! command. The proxy answers itself the commands QEMU 7.2 gets wrong with two clients: `?`
//! (removes the current CPU's breakpoints), `D` (removes everyone's), and duplicate `Z`/`z`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::events::{Shared, UserStopReason};
use super::link::Link;
use super::packet::{
    breakpoint_addr, hart_of, is_output, is_stop, qemu_thread, stop_signal, stop_thread,
    without_pid, Command,
};
use crate::gdb::codec::RspFrame;
use crate::gdb::hex::hex_decode_into;
use crate::gdb::stop::{StopReply, SIGINT};
use crate::gdb::ThreadId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    User,
    Ls,
}

enum Item {
    Packet(Vec<u8>),
    Interrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Absent,
    /// Connected while the guest ran; the proxy is stopping it for this client.
    Attaching,
    Stopped,
    Running,
}

struct Peer {
    link: Option<Link>,
    view: View,
    queue: VecDeque<Item>,
    /// The threads this client selected with `Hg`/`Hc` (or the stop it was told about).
    g: Option<Vec<u8>>,
    c: Option<Vec<u8>>,
    multiprocess: bool,
    interrupt_pending: bool,
    last_resume: Option<Vec<u8>>,
}

impl Peer {
    fn new(view: View) -> Self {
        Self {
            link: None,
            view,
            queue: VecDeque::new(),
            g: None,
            c: None,
            multiprocess: false,
            interrupt_pending: false,
            last_resume: None,
        }
    }

    fn holds(&self) -> bool {
        matches!(self.view, View::Stopped | View::Attaching)
    }

    fn send(&mut self, payload: &[u8]) {
        if let Some(l) = &mut self.link {
            l.send_packet(payload);
        }
    }
}

/// What the command in flight upstream is, so its reply goes where it belongs.
enum Pending {
    Reply(Who),
    Monitor(Who),
    SetThread {
        who: Option<Who>,
        op: u8,
        id: Vec<u8>,
    },
    Insert {
        who: Who,
        key: Vec<u8>,
    },
    Remove {
        who: Who,
        key: Vec<u8>,
    },
    Internal,
    ReadPc,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Up {
    Stopped,
    Running { owner: Option<Who>, step: bool },
}

#[derive(Clone, Copy, Default)]
struct Owners {
    user: bool,
    ls: bool,
}

impl Owners {
    fn get(&self, who: Who) -> bool {
        match who {
            Who::User => self.user,
            Who::Ls => self.ls,
        }
    }
    fn set(&mut self, who: Who, v: bool) {
        match who {
            Who::User => self.user = v,
            Who::Ls => self.ls = v,
        }
    }
}

/// A trap stop while both clients run and both have breakpoints: every hart's pc decides.
struct Attribution {
    stop: Vec<u8>,
    pcs: Vec<u64>,
    remaining: usize,
}

/// What `report_stop` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The user's gdb was told (`T05thread:..`), or will be as soon as the guest stops.
    Reported,
    /// The user's gdb already holds the guest stopped; its next `?` names the hart.
    AlreadyStopped,
    /// No gdb is connected; the next one to connect gets the hart from `?`.
    NoUser,
}

pub struct Relay {
    pub upstream: Link,
    user: Peer,
    ls: Peer,
    up: Up,
    interrupt_sent: bool,
    in_flight: Option<Pending>,
    internal: VecDeque<(Vec<u8>, Pending)>,
    up_g: Option<Vec<u8>>,
    up_c: Option<Vec<u8>>,
    threads: Vec<Vec<u8>>,
    /// QEMU's current thread: the one its last stop named.
    current: Vec<u8>,
    breakpoints: BTreeMap<Vec<u8>, Owners>,
    /// Nobody has resumed the guest since the proxy connected (which stopped it).
    idle_hold: bool,
    ls_step: Option<Vec<u8>>,
    pending_report: Option<u32>,
    reported: Option<u32>,
    attribution: Option<Attribution>,
    shared: Arc<Shared>,
    user_first: bool,
}

/// Thread ids compare by meaning: QEMU writes `p01.02`, gdb `p1.2`.
fn norm(id: &[u8]) -> Vec<u8> {
    match ThreadId::parse(id) {
        Ok(t) => t.to_string().into_bytes(),
        Err(_) => id.to_vec(),
    }
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(rest);
    v
}

fn stop_reason(p: &[u8]) -> UserStopReason {
    match StopReply::parse(p) {
        Ok(StopReply::Signal(s)) => match (s.signal, s.break_kind) {
            (SIGINT, _) => UserStopReason::Interrupted,
            (_, Some(crate::gdb::BreakKind::Watchpoint { addr, .. })) => {
                UserStopReason::Watchpoint { addr }
            }
            (crate::gdb::stop::SIGTRAP, _) => UserStopReason::Trap,
            (s, _) => UserStopReason::Signal(s),
        },
        _ => UserStopReason::Signal(0),
    }
}

impl Relay {
    pub fn new(
        upstream: Link,
        threads: Vec<Vec<u8>>,
        current: Vec<u8>,
        hold_for_user: bool,
        shared: Arc<Shared>,
    ) -> Self {
        let user = Peer::new(if hold_for_user {
            View::Stopped
        } else {
            View::Absent
        });
        if hold_for_user {
            shared.stopped(None, UserStopReason::WaitingForGdb);
        }
        Self {
            upstream,
            user,
            ls: Peer::new(View::Absent),
            up: Up::Stopped,
            interrupt_sent: false,
            in_flight: None,
            internal: VecDeque::new(),
            up_g: None,
            up_c: Some(norm(&current)),
            threads,
            current,
            breakpoints: BTreeMap::new(),
            idle_hold: true,
            ls_step: None,
            pending_report: None,
            reported: None,
            attribution: None,
            shared,
            user_first: true,
        }
    }

    fn peer(&mut self, who: Who) -> &mut Peer {
        match who {
            Who::User => &mut self.user,
            Who::Ls => &mut self.ls,
        }
    }

    pub fn link(&mut self, who: Who) -> Option<&mut Link> {
        self.peer(who).link.as_mut()
    }

    pub fn has_client(&self, who: Who) -> bool {
        match who {
            Who::User => self.user.link.is_some(),
            Who::Ls => self.ls.link.is_some(),
        }
    }

    fn up_stopped(&self) -> bool {
        self.up == Up::Stopped
    }

    // ---- clients come and go ----

    pub fn attach(&mut self, who: Who, link: Link) {
        let peer_addr = link.peer;
        let held = self.peer(who).view == View::Stopped;
        let mut p = Peer::new(View::Absent);
        p.link = Some(link);
        *self.peer(who) = p;
        if who == Who::User {
            self.shared.attached(peer_addr);
        }
        if held {
            // The guest waits for this gdb (`-S`).
            self.peer(who).view = View::Stopped;
        } else {
            self.begin_attach(who);
        }
        self.pump();
    }

    /// Connecting stops the guest, as connecting to QEMU's stub does.
    fn begin_attach(&mut self, who: Who) {
        if self.up_stopped() {
            self.peer(who).view = View::Stopped;
            if who == Who::User {
                let hart = hart_of(&self.current);
                self.shared.stopped(hart, UserStopReason::Attached);
            }
        } else {
            self.peer(who).view = View::Attaching;
            self.interrupt_upstream();
        }
    }

    /// The client detached (`D`) or its connection ended: its breakpoints go, and the guest
    /// runs on unless the other client holds it.
    pub fn detach(&mut self, who: Who, closed: bool) {
        self.forget(who, closed);
        self.pump();
    }

    fn forget(&mut self, who: Who, closed: bool) {
        let was_present = self.peer(who).view != View::Absent;
        {
            let p = self.peer(who);
            p.view = View::Absent;
            p.interrupt_pending = false;
            p.last_resume = None;
            if closed {
                p.link = None;
                p.queue.clear();
            }
        }
        if who == Who::Ls {
            self.ls_step = None;
        }
        let mut gone = Vec::new();
        for (key, owners) in self.breakpoints.iter_mut() {
            if owners.get(who) {
                owners.set(who, false);
                if !owners.user && !owners.ls {
                    gone.push(key.clone());
                }
            }
        }
        for key in gone {
            self.breakpoints.remove(&key);
            self.internal
                .push_back((with_prefix(b"z", &key), Pending::Internal));
        }
        self.idle_hold = false;
        if who == Who::User && was_present {
            self.shared.detached();
        }
    }

    // ---- input ----

    pub fn on_client_frames(&mut self, who: Who, frames: Vec<RspFrame>) {
        for f in frames {
            let p = self.peer(who);
            match f {
                RspFrame::Interrupt => p.queue.push_back(Item::Interrupt),
                RspFrame::Packet(payload) => {
                    if let Some(l) = &mut p.link {
                        l.ack();
                    }
                    p.queue.push_back(Item::Packet(payload));
                }
                _ => {}
            }
        }
        self.pump();
    }

    pub fn on_upstream_frames(&mut self, frames: Vec<RspFrame>) {
        for f in frames {
            if let RspFrame::Packet(p) = f {
                self.upstream.ack();
                self.on_upstream_packet(p);
            }
        }
        self.pump();
    }

    /// lockscope found a panic or a deadlock on `hart`: the user's gdb sees a stop there.
    pub fn report_stop(&mut self, hart: u32) -> ReportOutcome {
        let outcome = if self.user.link.is_none() {
            self.reported = Some(hart);
            ReportOutcome::NoUser
        } else if self.user.view != View::Running {
            self.reported = Some(hart);
            ReportOutcome::AlreadyStopped
        } else if self.up_stopped() {
            self.deliver_report(hart);
            ReportOutcome::Reported
        } else {
            self.pending_report = Some(hart);
            self.interrupt_upstream();
            ReportOutcome::Reported
        };
        self.pump();
        outcome
    }

    fn deliver_report(&mut self, hart: u32) {
        let stop = with_prefix(b"T05thread:", &qemu_thread(hart));
        let stop = with_prefix(&stop, b";");
        self.deliver_stop(Who::User, &stop, Some(UserStopReason::Reported));
    }

    // ---- the queue ----

    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            if self.in_flight.is_none() && self.up_stopped() {
                if let Some((cmd, pending)) = self.internal.pop_front() {
                    self.send_up(&cmd, Some(pending));
                    continue;
                }
            }
            let order = if self.user_first {
                [Who::User, Who::Ls]
            } else {
                [Who::Ls, Who::User]
            };
            self.user_first = !self.user_first;
            for who in order {
                progress |= self.step_client(who);
            }
            if !progress && !self.maybe_resume() {
                break;
            }
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some()
            || !self.up_stopped()
            || self.attribution.is_some()
            || !self.internal.is_empty()
    }

    fn step_client(&mut self, who: Who) -> bool {
        let busy = self.busy();
        let p = self.peer(who);
        match p.queue.front() {
            None => false,
            Some(Item::Interrupt) => {
                p.queue.pop_front();
                self.client_interrupt(who);
                true
            }
            Some(Item::Packet(_)) => match p.view {
                // QEMU drops a packet sent while the guest runs, and stops the guest.
                View::Running => {
                    p.queue.pop_front();
                    self.client_interrupt(who);
                    true
                }
                View::Absent => {
                    self.begin_attach(who);
                    true
                }
                View::Attaching => false,
                View::Stopped if busy => false,
                View::Stopped => {
                    let Some(Item::Packet(payload)) = p.queue.pop_front() else {
                        return false;
                    };
                    self.dispatch(who, payload);
                    true
                }
            },
        }
    }

    fn client_interrupt(&mut self, who: Who) {
        if self.peer(who).view != View::Running {
            return; // QEMU ignores an interrupt while stopped.
        }
        if self.up_stopped() {
            // The other client holds the guest: it is stopped already, as the interrupt asks.
            let stop = format!("T02thread:{};", String::from_utf8_lossy(&self.current));
            self.deliver_stop(who, stop.as_bytes(), None);
            return;
        }
        self.peer(who).interrupt_pending = true;
        self.interrupt_upstream();
    }

    fn interrupt_upstream(&mut self) {
        if !self.interrupt_sent && !self.up_stopped() {
            self.upstream.send_interrupt();
            self.interrupt_sent = true;
        }
    }

    fn reply(&mut self, who: Who, payload: &[u8]) {
        self.peer(who).send(payload);
    }

    fn send_up(&mut self, cmd: &[u8], pending: Option<Pending>) {
        self.upstream.send_packet(cmd);
        self.in_flight = pending;
    }

    fn dispatch(&mut self, who: Who, p: Vec<u8>) {
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

    fn client_resume(&mut self, who: Who, p: Vec<u8>, step: bool) {
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
    fn maybe_resume(&mut self) -> bool {
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
        false
    }

    // ---- replies and stops from QEMU ----

    fn on_upstream_packet(&mut self, p: Vec<u8>) {
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
        }
    }

    fn on_stop(&mut self, p: Vec<u8>, owner: Option<Who>, step: bool) {
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

    fn finish_stop(&mut self, p: &[u8], to_user: bool, to_ls: bool) {
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

    fn deliver_stop(&mut self, who: Who, p: &[u8], reason: Option<UserStopReason>) {
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

    fn has_breakpoints(&self, who: Who) -> bool {
        self.breakpoints.values().any(|o| o.get(who))
    }

    fn start_attribution(&mut self, stop: Vec<u8>) {
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

    fn on_pc(&mut self, reply: &[u8]) {
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
