//! The `nurture` binary: everything lives in the library; see `cli`.

// mimalloc rather than glibc's malloc: the planner, the scan and the delivery
// path allocate and free small values per contact (decoded attributes,
// rendered text, JSON lines, requests) on several threads; glibc's allocator
// was a quarter of a dry-run's samples and a sixth of the end-to-end profile
// (BENCHMARKS.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// On Linux mimalloc commits each arena it reserves at once, and what a
/// thread's segments then touch stays resident: an idle daemon on the quick
/// start held 55-60 MB instead of about 30. Committed on demand, the same
/// runs take the same time (delivery alone, a million-contact dry-run;
/// BENCHMARKS.md, "Idle memory and the allocator").
#[cfg(target_os = "linux")]
mod commit_on_demand {
    /// mimalloc's `mi_option_arena_eager_commit` (mimalloc.h, `mi_option_e`).
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    extern "C" fn set() {
        // SAFETY: sets a process-wide option; no thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }

    /// The option must be set before the first arena is reserved, which the
    /// first allocation does, before `main`: so `set` runs as an ELF
    /// constructor (`.init_array`), ahead of the Rust runtime's start.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static SET: extern "C" fn() = set;
}

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
