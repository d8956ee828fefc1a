//! The shared file: created before QEMU starts, mapped for the session's life.

use std::fs::OpenOptions;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use lockscope_plugin_abi::{self as abi, Control, Header, Layout};

use super::cursors::Cursors;
use super::{PluginError, WatchPlan};

pub use super::abi::monotonic_ns;

/// What the plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginStatus {
    /// QEMU has not loaded it (yet).
    Waiting,
    /// Loaded and watching: the plugin API version it was built for, and QEMU's vCPUs.
    Running { api: u32, vcpus: u32 },
    /// It refused the file, and why.
    Failed(String),
    /// QEMU exited.
    Exited,
}

/// The plugin's shared file, mapped read-write (lockscope writes the control block).
pub struct PluginFile {
    pub(super) path: PathBuf,
    map: memmap2::MmapMut,
    pub(super) layout: Layout,
    pub(super) nharts: u32,
    pub(super) entries: u64,
    pub(super) cursors: Cursors,
}

impl std::fmt::Debug for PluginFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginFile")
            .field("path", &self.path)
            .field("nharts", &self.nharts)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl PluginFile {
    /// Writes a new file at `path` for `nharts` vCPUs (QEMU's `-smp`), `ring_entries` events
    /// per ring (a power of two; [`abi::DEFAULT_RING_ENTRIES`] by default) and this watch plan.
    /// `sleep_offsets`: offsets of the inner spinlock and of `locked` in a sleeplock (xv6: 8, 0).
    pub fn create(
        path: &Path,
        nharts: u32,
        ring_entries: u32,
        plan: &WatchPlan,
        sleep_offsets: (u32, u32),
    ) -> Result<PluginFile, PluginError> {
        let io = |source| PluginError::Io {
            path: path.to_owned(),
            source,
        };
        if nharts == 0 || nharts > abi::MAX_HARTS {
            return Err(PluginError::TooManyHarts {
                harts: nharts,
                max: abi::MAX_HARTS,
            });
        }
        let mut header = Header::new(nharts, ring_entries, plan.watch.len() as u32);
        header.sleep_lk_off = sleep_offsets.0;
        header.sleep_locked_off = sleep_offsets.1;
        let layout = header
            .validate(header.file_size)
            .map_err(|e| PluginError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        file.set_len(layout.file_size).map_err(io)?;
        // All its blocks now (it may sit in /dev/shm beside guest RAM): a full disk is this
        // error, not a SIGBUS in QEMU's plugin later.
        crate::qemu::ram_dir::reserve(&file, layout.file_size).map_err(|source| {
            PluginError::NoSpace {
                path: path.to_owned(),
                bytes: layout.file_size,
                source,
            }
        })?;
        // SAFETY: our own new file; QEMU (the only other user) is not started yet, and every
        // later access to live fields goes through atomics.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io)?;
        map[..size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&header));
        let w = layout.watch_off as usize;
        map[w..w + plan.watch.len() * size_of::<abi::Watch>()]
            .copy_from_slice(bytemuck::cast_slice(&plan.watch));
        Ok(PluginFile {
            path: path.to_owned(),
            map,
            layout,
            nharts,
            entries: ring_entries as u64,
            cursors: Cursors::new(nharts),
        })
    }

    /// Maps an existing file (a QEMU that is running or has exited) and checks its header.
    pub fn open(path: &Path) -> Result<PluginFile, PluginError> {
        let io = |source| PluginError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < size_of::<Header>() as u64 {
            return Err(PluginError::Corrupt {
                path: path.to_owned(),
                reason: format!("{len} bytes is shorter than its header"),
            });
        }
        // SAFETY: shared with QEMU's plugin; live fields are only accessed through atomics.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io)?;
        let mut header: Header = bytemuck::Zeroable::zeroed();
        bytemuck::bytes_of_mut(&mut header).copy_from_slice(&map[..size_of::<Header>()]);
        let layout = header.validate(len).map_err(|e| PluginError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(PluginFile {
            path: path.to_owned(),
            map,
            layout,
            nharts: header.nharts,
            entries: header.ring_entries as u64,
            cursors: Cursors::new(header.nharts),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn nharts(&self) -> u32 {
        self.nharts
    }

    pub(super) fn u64_at(&self, off: u64) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off as usize + 8 <= self.map.len());
        // SAFETY: in bounds and 8-aligned (asserted; the map is page aligned); shared memory
        // is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(off as usize) as *mut u64) }
    }

    fn u32_at(&self, off: u64) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off as usize + 4 <= self.map.len());
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(off as usize) as *mut u32) }
    }

    /// Copies `buf.len()` bytes (a multiple of 8) at 8-aligned `off` with atomic loads: the
    /// plugin writes the file concurrently, so a plain memcpy would be a data race.
    pub(super) fn copy_out(&self, off: u64, buf: &mut [u8]) {
        assert!(off.is_multiple_of(8) && buf.len().is_multiple_of(8));
        assert!(off as usize + buf.len() <= self.map.len());
        // SAFETY: the range is in bounds and 8-aligned (asserted; the map is page aligned).
        let src = unsafe { self.map.as_ptr().add(off as usize) } as *mut u64;
        for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
            // SAFETY: i < buf.len() / 8, inside the range checked above; atomic access.
            let v = unsafe { AtomicU64::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        fence(Ordering::Acquire);
    }

    /// What the plugin says about itself.
    pub fn status(&self) -> PluginStatus {
        let state = self
            .u32_at(abi::PLUGIN_STATE_OFFSET as u64)
            .load(Ordering::Acquire);
        match state {
            abi::STATE_RUNNING => PluginStatus::Running {
                api: self
                    .u32_at(offset_of!(Header, plugin_api) as u64)
                    .load(Ordering::Relaxed),
                vcpus: self
                    .u32_at(offset_of!(Header, qemu_vcpus) as u64)
                    .load(Ordering::Relaxed),
            },
            abi::STATE_FAILED => {
                let mut msg = [0u8; abi::MESSAGE_LEN];
                self.copy_out(offset_of!(Header, message) as u64, &mut msg);
                PluginStatus::Failed(abi::text(&msg).unwrap_or("(message not UTF-8)").to_owned())
            }
            abi::STATE_EXITED => PluginStatus::Exited,
            _ => PluginStatus::Waiting,
        }
    }

    fn control(&self, field: usize) -> &AtomicU64 {
        self.u64_at(self.layout.control_off + field as u64)
    }

    /// The VM stopped (lockscope's own stop or a user's gdb stop), at host monotonic `now_ns`.
    /// Call it once the stop is confirmed (the stop reply arrived), so no event after it is
    /// stamped earlier than one before it.
    pub fn note_stopped(&self, now_ns: u64) {
        let began = self.control(offset_of!(Control, stop_began_ns));
        if began.load(Ordering::Relaxed) == 0 {
            began.store(now_ns.max(1), Ordering::Relaxed);
        }
    }

    /// The VM is about to resume, at host monotonic `now_ns`: the stop is taken out of the
    /// plugin's clock from now on. Call it just before sending the continue.
    pub fn note_resumed(&self, now_ns: u64) {
        let began = self.control(offset_of!(Control, stop_began_ns));
        let b = began.load(Ordering::Relaxed);
        if b == 0 {
            return;
        }
        let total = self.control(offset_of!(Control, stopped_total_ns));
        let t = total.load(Ordering::Relaxed) + now_ns.saturating_sub(b);
        total.store(t, Ordering::Release);
        began.store(0, Ordering::Relaxed);
        let stops = self.control(offset_of!(Control, stops));
        stops.store(stops.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The saved-context address of thread `index` (1-based, as events carry it): xv6's
    /// `&proc[i].context`, or `&cpus[h].context` for hart `h`'s scheduler. `None` for 0 or an
    /// index the plugin has not published.
    pub fn thread_context(&self, index: u32) -> Option<u64> {
        if index == 0 || index > abi::MAX_THREADS {
            return None;
        }
        let v = self
            .u64_at(self.layout.thread(index))
            .load(Ordering::Acquire);
        (v != 0).then_some(v)
    }

    /// Every thread the plugin has seen: (index, context address).
    pub fn threads(&self) -> Vec<(u32, u64)> {
        (1..=abi::MAX_THREADS)
            .filter_map(|i| self.thread_context(i).map(|c| (i, c)))
            .collect()
    }

    /// Time the VM has spent stopped so far (finished stops).
    pub fn stopped_total_ns(&self) -> u64 {
        self.control(offset_of!(Control, stopped_total_ns))
            .load(Ordering::Acquire)
    }

    /// Plugin time now: what an event written now would carry. Stamp snapshots with it so
    /// they compare with events.
    pub fn now_ns(&self) -> u64 {
        let b = self
            .control(offset_of!(Control, stop_began_ns))
            .load(Ordering::Relaxed);
        let now = if b != 0 { b } else { monotonic_ns() };
        now.saturating_sub(self.stopped_total_ns())
    }
}
