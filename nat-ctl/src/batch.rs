//! BPF_MAP_LOOKUP_BATCH for hash maps, which aya 0.14 does not wrap: a whole table in a few
//! syscalls instead of two per entry. The sweeper reads every mapping each interval (the
//! sessions and filter entries it walks inside the kernel), and the commands read the
//! sessions; entry by entry that is millions of syscalls at a million sessions.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, MapData},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per call. A call fails with ENOSPC if one hash bucket holds more than this.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of `map`, or `None` when this kernel cannot batch-read it (the caller
/// iterates entry by entry instead).
pub fn lookup_all<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
) -> std::io::Result<Option<Vec<(K, V)>>> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    // SAFETY: Pod types are plain integers and arrays of them; all-zero is a valid value.
    let (mut keys, mut values): (Vec<K>, Vec<V>) = unsafe {
        (
            vec![std::mem::zeroed(); CHUNK],
            vec![std::mem::zeroed(); CHUNK],
        )
    };
    let mut out = Vec::new();
    // The kernel's cursor: a bucket index for hash maps.
    let mut cursor = 0u64;
    let mut first = true;
    loop {
        let mut next = 0u64;
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &cursor as *const u64 as u64
            },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the map's sizes (the
        // Pod types are the map's key and value types), and at two 8-byte cursors.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (ret < 0).then(std::io::Error::last_os_error);
        // Entries filled, also on the last call (which ends with ENOENT).
        let n = (attr.count as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err.and_then(|e| e.raw_os_error()) {
            None => {}
            Some(libc::ENOENT) => return Ok(Some(out)),
            // Not supported for this map or kernel (ENOTSUPP is 524 inside the kernel).
            Some(libc::EINVAL | libc::EOPNOTSUPP | 524) if first => return Ok(None),
            Some(e) => return Err(std::io::Error::from_raw_os_error(e)),
        }
        cursor = next;
        first = false;
    }
}
