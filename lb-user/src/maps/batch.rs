//! The kernel's batch operations on maps (one system call for many
//! elements), which aya has no call for.

use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// `BPF_MAP_UPDATE_BATCH` of u32 keys to u32 values (map descriptors for
/// an array of maps). Returns how many elements the kernel updated, and
/// the error that stopped it, if any.
pub(super) fn update(map: &OwnedFd, keys: &[u32], values: &[u32]) -> (u32, std::io::Result<()>) {
    debug_assert_eq!(keys.len(), values.len());
    // SAFETY: `bpf_attr` is plain integers; all zero is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.batch.keys = keys.as_ptr() as u64;
    attr.batch.values = values.as_ptr() as u64;
    attr.batch.count = keys.len() as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    // SAFETY: `attr` is a valid `bpf_attr` for the batch command; `keys`
    // and `values` hold `count` u32s each (the map's key and value size)
    // and outlive the call, which only reads them and writes `count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_MAP_UPDATE_BATCH as libc::c_long,
            &mut attr as *mut bpf_attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    // SAFETY: the batch member is the one written above and by the kernel.
    let done = unsafe { attr.batch.count };
    let result = if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    };
    (done, result)
}

/// `BPF_MAP_LOOKUP_BATCH` of every element of a per-CPU array of
/// `entries` values of `V` (whose size is a multiple of 8, as the kernel
/// lays per-CPU values out): the values of CPU 0..`cpus` of element 0,
/// then of element 1, and so on.
pub(super) fn lookup_percpu_array<V: aya::Pod + Default>(
    map: BorrowedFd<'_>,
    entries: u32,
    cpus: usize,
) -> std::io::Result<Vec<V>> {
    assert!(
        size_of::<V>().is_multiple_of(8),
        "per-CPU values are 8-byte aligned"
    );
    let mut keys = vec![0u32; entries as usize];
    let mut values = vec![V::default(); entries as usize * cpus];
    let mut out_batch = 0u32;
    // SAFETY: `bpf_attr` is plain integers; all zero is its empty value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.batch.out_batch = &mut out_batch as *mut u32 as u64;
    attr.batch.keys = keys.as_mut_ptr() as u64;
    attr.batch.values = values.as_mut_ptr() as u64;
    attr.batch.count = entries;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    // SAFETY: `attr` is a valid `bpf_attr` for the batch command; `keys`
    // has room for `count` u32 keys, `values` for `count` elements of
    // `cpus` values each (the map's layout), `out_batch` for one key; all
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_MAP_LOOKUP_BATCH as libc::c_long,
            &mut attr as *mut bpf_attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    // SAFETY: the batch member is the one written above and by the kernel.
    let done = unsafe { attr.batch.count };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // ENOENT: the walk reached the end, which it does here.
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    if done != entries {
        return Err(std::io::Error::other(format!(
            "batch lookup returned {done} of {entries} elements"
        )));
    }
    Ok(values)
}
