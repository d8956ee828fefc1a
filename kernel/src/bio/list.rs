//! The buffer cache's lists, as xv6's bio.c has them: circular, doubly linked through raw
//! pointers, with a dummy head. Every read and write of a link is in this file.
//!
//! A list belongs to the hart holding its lock (a bucket's, or `bcache`). [`List::held`] is that
//! hart's word for it, given once per critical section; through the [`Held`] it returns, the
//! list's buffers are [`Node`]s. A buffer taken off a list is [`Loose`], its taker's alone until
//! it goes on another list. The operations on a `Held` are safe: the one promise they rest on
//! (the lock is held, and the list is well formed) is made where the `Held` is made.
//!
//! These operations also keep each buffer's `bucket`, the number of the list it is on ([`NONE`]
//! while loose), so it is written only by the holder of that list's lock: a hart holding list
//! `k` that reads `k` there knows the buffer is on its list.
//!
//! `bug=null-next` breaks the lists on purpose, in `link_front` (putting a buffer at the front):
//! a walk of the list then loads through a null link, as the student's kernel does.

use super::buf::Buf;
use crate::bugs;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::null_mut;
use core::sync::atomic::Ordering;
use lockscope_abi::{Bug, NONE};

/// A list node: a list's dummy head, or the first field of a [`Buf`] (`repr(C)`), so a buffer's
/// link pointer is its buffer pointer. A buffer on no list has null links.
#[repr(C)]
pub(super) struct Link {
    next: *mut Link,
    prev: *mut Link,
}

impl Link {
    pub(super) const fn new() -> Self {
        Self {
            next: null_mut(),
            prev: null_mut(),
        }
    }
}

/// A list's dummy head. [`Held::init`] makes it an empty list (it links to itself, which a
/// static's initializer cannot write).
pub(super) struct List {
    head: UnsafeCell<Link>,
}

// SAFETY: the head and the nodes are only reached through a `Held`, whose maker holds the
// list's lock: one hart at a time.
unsafe impl Sync for List {}

impl List {
    pub(super) const fn new() -> Self {
        Self {
            head: UnsafeCell::new(Link::new()),
        }
    }

    /// This hart's hold on the list, which the cache calls list `k` (a bucket number, or the
    /// starter's list).
    ///
    /// # Safety
    /// The calling hart holds the list's lock (or is the only hart running), from now until
    /// after the last use of the result and of the nodes it gives; and the list has been
    /// initialized by [`Held::init`], unless this hold is for doing that.
    pub(super) unsafe fn held(&self, k: usize) -> Held<'_> {
        Held {
            head: self.head.get(),
            k,
            _list: PhantomData,
        }
    }
}

/// A hold on a list: see [`List::held`]. Not `Send`: a hold is one hart's.
pub(super) struct Held<'a> {
    head: *mut Link,
    k: usize,
    _list: PhantomData<&'a List>,
}

/// A buffer whose list-owned fields are this hart's for `'h`: one on a held list, or a
/// [`Loose`] one (see [`Loose::node`]).
#[derive(Clone, Copy)]
pub(super) struct Node<'h> {
    b: *mut Buf,
    _held: PhantomData<&'h ()>,
}

impl Node<'_> {
    /// The buffer. Its fields that the list's lock owns are ours while the node lives.
    pub(super) fn buf(self) -> *mut Buf {
        self.b
    }
}

/// A buffer on no list, owned by one hart, which may put it on a list it holds.
pub(super) struct Loose {
    b: *mut Buf,
}

impl Loose {
    /// # Safety
    /// `b` is a buffer on no list (its links are null), and nobody else uses it.
    pub(super) unsafe fn new(b: *mut Buf) -> Self {
        Self { b }
    }

    /// The buffer as a node, to read and write its fields (ours: we own it). It is on no
    /// list: unlinking it panics.
    pub(super) fn node(&self) -> Node<'_> {
        Node {
            b: self.b,
            _held: PhantomData,
        }
    }
}

fn link(b: *mut Buf) -> *mut Link {
    b.cast()
}

impl<'a> Held<'a> {
    /// The cache's number for this list.
    pub(super) fn k(&self) -> usize {
        self.k
    }

    /// Makes the list empty (boot only: buffers on it are forgotten, not unlinked).
    pub(super) fn init(&self) {
        let h = self.head;
        // SAFETY: we hold the list (see `List::held`), so its head is ours to write.
        unsafe {
            (*h).next = h;
            (*h).prev = h;
        }
    }

    fn node(&self, l: *mut Link) -> Node<'_> {
        Node {
            b: l.cast(),
            _held: PhantomData,
        }
    }

    /// `b`, which the caller knows is on this list.
    ///
    /// # Safety
    /// `b` is on this list (it may have been found in an earlier hold of the same list, and
    /// nothing moved it since).
    pub(super) unsafe fn assume(&self, b: *mut Buf) -> Node<'_> {
        self.node(link(b))
    }

    /// The list front to back. The walk is lazy, as a C loop is: a node's `next` is read only
    /// when the walk moves past it, after the caller has looked at the node. So under
    /// `bug=null-next` the walk hands out a null node, and the caller's first look at it
    /// faults (on the buffer field it reads, not on a link).
    ///
    /// # Safety
    /// Nothing takes a node off this list or puts one on it while the walk is in use.
    pub(super) unsafe fn iter(&self) -> Iter<'_> {
        Iter {
            held: self,
            at: self.head,
            back: false,
        }
    }

    /// As [`Held::iter`], back to front.
    ///
    /// # Safety
    /// As [`Held::iter`].
    pub(super) unsafe fn iter_back(&self) -> Iter<'_> {
        Iter {
            held: self,
            at: self.head,
            back: true,
        }
    }

    /// Puts `b` at the back (boot only: the lists are built in buffer order).
    pub(super) fn push_back(&self, b: Loose) -> Node<'_> {
        let (h, l) = (self.head, link(b.b));
        // SAFETY: we hold the list, so the head and its last node are ours; we own `b`, on no
        // list.
        unsafe {
            (*l).next = h;
            (*l).prev = (*h).prev;
            (*(*h).prev).next = l;
            (*h).prev = l;
            (*b.b).bucket.store(self.k as u32, Ordering::Relaxed);
        }
        self.node(l)
    }

    /// Puts `b` at the front.
    pub(super) fn push_front(&self, b: Loose) -> Node<'_> {
        // SAFETY: we hold the list and own `b`, on no list.
        unsafe {
            self.link_front(link(b.b));
            (*b.b).bucket.store(self.k as u32, Ordering::Relaxed);
        }
        self.node(link(b.b))
    }

    /// Takes `b` off the list and clears its links (a stale link hides bugs a null one shows).
    /// The caller owns it afterwards.
    pub(super) fn unlink(&self, b: Node<'_>) -> Loose {
        // SAFETY: `b` is a node: on a list we hold (this one, or the caller's bookkeeping is
        // wrong, but only its own lists are touched), or loose, which `unlink_links` catches.
        unsafe {
            self.unlink_links(link(b.b));
            (*b.b).bucket.store(NONE, Ordering::Relaxed);
        }
        Loose { b: b.b }
    }

    /// Moves `b` to the front of the list.
    pub(super) fn to_front(&self, b: Node<'_>) -> Node<'_> {
        let l = link(b.b);
        // SAFETY: as in `unlink`; off the list for a moment, `b` is ours.
        unsafe {
            self.unlink_links(l);
            self.link_front(l);
        }
        self.node(l)
    }

    /// # Safety
    /// We hold the list and own `l`, on no list.
    unsafe fn link_front(&self, l: *mut Link) {
        let h = self.head;
        // SAFETY: the caller's contract: the head, its first node and `l` are ours to write.
        unsafe {
            if bugs::active(Bug::NullNext) {
                // The seed's prev/head mix-up: `b->next = b->prev` where `head->next` was
                // meant. A loose buffer's prev is null (`unlink_links`), so b->next stays null
                // and the next walk of this list loads through it.
                (*l).next = (*l).prev;
            } else {
                (*l).next = (*h).next;
            }
            (*l).prev = h;
            (*(*h).next).prev = l;
            (*h).next = l;
        }
    }

    /// # Safety
    /// `l` is a node of a list we hold, or was one: a node unlinked already (through a copy of
    /// its `Node`) is caught here, by its null `prev`, before anything is written through it.
    unsafe fn unlink_links(&self, l: *mut Link) {
        // SAFETY: the caller's contract; on a list, `prev` is never null (bug=null-next breaks
        // `next` only), and the neighbours are nodes of the same list, ours to write.
        unsafe {
            if (*l).prev.is_null() {
                panic!("bcache: a buffer taken off its list twice");
            }
            (*(*l).prev).next = (*l).next;
            (*(*l).next).prev = (*l).prev;
            (*l).next = null_mut();
            (*l).prev = null_mut();
        }
    }
}

/// A walk of a held list: see [`Held::iter`].
pub(super) struct Iter<'h> {
    held: &'h Held<'h>,
    /// The node handed out last, or the head.
    at: *mut Link,
    back: bool,
}

impl<'h> Iterator for Iter<'h> {
    type Item = Node<'h>;

    fn next(&mut self) -> Option<Node<'h>> {
        // SAFETY: we hold the list (`Held`), which nothing changes during the walk (`iter`'s
        // contract), and `at` is its head or a node on it. (Under bug=null-next it can be
        // null: the student's kernel faults here, or where the caller looks at the node.)
        let l = unsafe {
            if self.back {
                (*self.at).prev
            } else {
                (*self.at).next
            }
        };
        if l == self.held.head {
            return None;
        }
        self.at = l;
        Some(self.held.node(l))
    }
}
