//! mimalloc's options, as each binary wants them (feature `allocator`). By default (v3) mimalloc
//! keeps freed pages for a second, then gives them back, and commits its arenas eagerly.
//! - `compact` gives freed memory back at once: it frees batches, pages and parts all the time, and
//!   with the defaults much of its peak RSS was memory it no longer used (bench/NOTES.md).
//! - `ingest` never gives it back: its invocations come seconds apart, so with the defaults each
//!   one faulted its whole working set in again (the kernel zeroing every page), and a Lambda's
//!   memory is its own anyway. Its peak stays that of its largest batch.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (the `-sys` crate names only some).
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`, in milliseconds (1,000 by default); 0 purges freed pages at once.
const PURGE_DELAY: mi_option_t = 15;

/// [`return_freed_memory_at_once`] as a constructor the binary lists in `.init_array`, so that it
/// runs before mimalloc's own: mimalloc reserves its first arena as it starts, and whether the
/// arena commits eagerly is decided at that moment.
pub extern "C" fn for_compaction() {
    return_freed_memory_at_once();
}

/// [`keep_freed_memory`] as a constructor, like [`for_compaction`].
pub extern "C" fn for_ingest() {
    keep_freed_memory();
}

/// Compaction's options: no eager arena commit, freed pages given back at once.
pub fn return_freed_memory_at_once() {
    // SAFETY: setting an option only stores its value in mimalloc's table of options.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

/// Ingest's options: freed pages kept (a purge delay of -1 is mimalloc's "never").
pub fn keep_freed_memory() {
    // SAFETY: setting an option only stores its value in mimalloc's table of options.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}

/// The options' values now: (arena eager commit, purge delay in ms).
pub fn options() -> (i64, i64) {
    // SAFETY: reading an option only reads mimalloc's table of options.
    unsafe {
        (
            mi_option_get(ARENA_EAGER_COMMIT) as i64,
            mi_option_get(PURGE_DELAY) as i64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_set_are_mimalloc_s_eager_commit_and_purge_delay() {
        // mimalloc's defaults (2: eager on overcommitting systems; 1,000 ms) identify the two
        // options by their numbers, unless the environment set them.
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none()
            && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            assert_eq!(options(), (2, 1000));
        }
        return_freed_memory_at_once();
        assert_eq!(options(), (0, 0));
        keep_freed_memory();
        assert_eq!(options(), (0, -1));
    }
}
