//! Where the reader is in each of the plugin's rings: kept by the open file, advanced by
//! draining.

use lockscope_plugin_abi::Event;

/// Read cursors and running totals of every ring.
#[derive(Clone, Debug)]
pub(super) struct Cursors {
    pub(super) next: Vec<u64>,
    pub(super) lost: Vec<u64>,
    pub(super) bad: u64,
    pub(super) scratch: Vec<Event>,
}

impl Cursors {
    pub fn new(nharts: u32) -> Self {
        Self {
            next: vec![0; nharts as usize],
            lost: vec![0; nharts as usize],
            bad: 0,
            scratch: Vec::new(),
        }
    }
}
