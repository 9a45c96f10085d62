//! `--tensor-parallel`: the program joins the group MLX's launcher set up,
//! and only rank 0 talks to the user. Every rank runs the same program on
//! the same input (`mlx.launch` hands each the same arguments and standard
//! input) and takes rank 0's tokens, so all make the same decisions. The
//! others' output is discarded (their errors still reach the terminal,
//! named by rank), they write no files ([`is_follower`]) and run no tools:
//! rank 0 runs each call and hands them its result (`tools::Runner`). The
//! server's other ranks follow rank 0's batch instead (docs/DISTRIBUTED.md).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::OnceLock;

use mlx_harmony_core::distributed::{self, Group};

/// A follower's standard error as it was before it went quiet.
static FOLLOWER_ERRORS: OnceLock<(i32, File)> = OnceLock::new();

/// Joins the tensor-parallel group; on ranks other than 0, standard output
/// and error go quiet from here on (see [`report_error`]).
pub fn join() -> anyhow::Result<&'static Group> {
    let group = distributed::join_tensor_parallel(None).map_err(crate::flat)?;
    if group.rank() != 0 && FOLLOWER_ERRORS.get().is_none() {
        quiet(group.rank())?;
    }
    Ok(group)
}

fn quiet(rank: i32) -> anyhow::Result<()> {
    let null = File::options().write(true).open("/dev/null")?;
    // SAFETY: dup and dup2 on descriptors this process owns; the duplicate
    // of standard error is owned by the File made from it.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            anyhow::bail!("--tensor-parallel: cannot keep rank {rank}'s standard error");
        }
        let _ = FOLLOWER_ERRORS.set((rank, File::from_raw_fd(saved)));
        std::io::stdout().flush().ok();
        std::io::stderr().flush().ok();
        if libc::dup2(null.as_raw_fd(), 1) < 0 || libc::dup2(null.as_raw_fd(), 2) < 0 {
            anyhow::bail!("--tensor-parallel: cannot quiet rank {rank}'s output");
        }
    }
    Ok(())
}

/// Whether this process is a tensor-parallel rank other than 0: it writes
/// no files (conversations, line history) and runs no tools; rank 0 does.
pub fn is_follower() -> bool {
    distributed::tensor_parallel().is_some_and(|g| g.rank() != 0)
}

/// Prints a program's error: on a quiet follower to its saved standard
/// error, naming its rank; elsewhere as usual.
pub fn report_error(message: &str) {
    match FOLLOWER_ERRORS.get() {
        Some((rank, file)) => {
            let mut file = file;
            let _ = writeln!(file, "error (tensor-parallel rank {rank}): {message}");
        }
        None => eprintln!("error: {message}"),
    }
}
