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

mod client;
mod stops;

use super::events::{Shared, UserStopReason};
use super::link::Link;
use super::packet::{hart_of, qemu_thread};
use super::ram_reads::RamReads;
use crate::gdb::codec::RspFrame;
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
    /// The next thread `qsThreadInfo` lists.
    next_thread: usize,
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
            next_thread: 0,
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
    /// A register `ram_reads` needs, of this thread.
    ReadRegister {
        thread: Vec<u8>,
        reg: u32,
    },
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
    /// Memory reads answered from guest RAM while the guest is stopped.
    ram_reads: Option<RamReads>,
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
        ram_reads: Option<RamReads>,
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
            ram_reads,
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
}
