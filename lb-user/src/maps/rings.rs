//! Maglev rings into `RINGS`, many at a time.
//!
//! Every update of an array of maps from a system call waits for an RCU
//! grace period (the kernel makes sure no program still runs on the map
//! it replaced), some milliseconds each: one update per VIP makes a start
//! with thousands of VIPs take minutes. So rings are *staged* (a fresh map
//! per ring, filled through a memory mapping while no packet can see it)
//! and then *published* together with one `BPF_MAP_UPDATE_BATCH` on the
//! outer array, which waits once for the whole batch. Each element of the
//! batch is one pointer swap, as a single update is: a packet sees a VIP's
//! old ring or its new one, never a mix, and never a ring not yet filled.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, IterableMap as _, MapData};
use lb_common::{
    BPF_F_INNER_MAP, BPF_F_MMAPABLE, RING_FIRST_SLOT, RING_WORDS, RingElement, ring_elements,
};

/// Rings staged and not yet published.
pub(super) struct Staged {
    /// The `RINGS` descriptor (a duplicate of the one aya holds).
    outer: OwnedFd,
    rings: Vec<(u32, Array<MapData, RingElement>)>,
}

impl Staged {
    pub(super) fn new(outer: OwnedFd) -> Self {
        Self {
            outer,
            rings: Vec::new(),
        }
    }

    /// Creates the ring of VIP `index` holding `slots` (word 0: the size),
    /// filled but not visible to the data plane yet. Staging an index twice
    /// before a publish keeps the later ring.
    pub(super) fn stage(&mut self, index: u32, slots: &[u32]) -> Result<()> {
        let size = u32::try_from(slots.len()).context("ring too large")?;
        let entries = ring_elements(size);
        // The flags must equal the outer map's template's; `LAYOUT_VERSION`
        // 3 and later always made it with both.
        let ring: Array<MapData, RingElement> =
            Array::create(entries, BPF_F_INNER_MAP | BPF_F_MMAPABLE)
                .with_context(|| format!("creating a ring of {size} slots"))?;
        fill_mapped(ring.map(), entries, size, slots)?;
        self.rings.retain(|(i, _)| *i != index);
        self.rings.push((index, ring));
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.rings.len()
    }

    /// Publishes every staged ring with one batch update of `RINGS`. On
    /// failure the rings that were not published are dropped (the caller
    /// stages them again); those before the failing one are in.
    pub(super) fn publish(&mut self) -> Result<()> {
        if self.rings.is_empty() {
            return Ok(());
        }
        let rings = std::mem::take(&mut self.rings);
        let keys: Vec<u32> = rings.iter().map(|(i, _)| *i).collect();
        let fds: Vec<u32> = rings
            .iter()
            .map(|(_, m)| m.map().fd().as_fd().as_raw_fd() as u32)
            .collect();
        let (done, result) = super::batch::update(&self.outer, &keys, &fds);
        result
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("publishing rings: {done} of {} in", keys.len()))
    }
}

/// Writes the size and `slots` into `map` (an array of `entries`
/// `RingElement`s made with `BPF_F_MMAPABLE`) through a shared mapping of
/// it: the words are contiguous, word 0 the size and word
/// `RING_FIRST_SLOT + i` slot `i`.
fn fill_mapped(map: &MapData, entries: u32, size: u32, slots: &[u32]) -> Result<()> {
    let words = entries as usize * RING_WORDS as usize;
    let len = words * size_of::<u32>();
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: a fresh shared mapping of `len` bytes of an mmapable BPF
    // array, whose value area the kernel sized to `entries` elements of
    // `RingElement` (8 bytes, no padding); nothing else maps it yet.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping a new ring");
    }
    // SAFETY: `addr` is a valid, page-aligned (so u32-aligned) writable
    // mapping of `words` u32s, alive until the munmap below, and only this
    // slice refers to it.
    let ring = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u32>(), words) };
    ring[0] = size;
    let first = RING_FIRST_SLOT as usize;
    ring[first..first + slots.len()].copy_from_slice(slots);
    // SAFETY: unmaps exactly the mapping made above; `ring` is not used
    // after this.
    if unsafe { libc::munmap(addr, len) } != 0 {
        bail!("unmapping a new ring: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
