//! What every library example does around its work: a scratch directory on
//! tmpfs for the controller's state and named namespaces, removed afterwards
//! (with the mount the controller makes there), and a one-line report.

use std::path::Path;
use std::process::ExitCode;

/// An example's result.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Runs `f` with a fresh scratch directory named after `example`, then
/// removes it, whatever `f` returned.
pub fn with_scratch(example: &str, f: impl FnOnce(&Path) -> Result<String>) -> Result<String> {
    let dir = Path::new("/dev/shm").join(format!("cnm-example-{example}-{}", std::process::id()));
    let r = f(&dir);
    let _ = cnm_netns::NetNs::release_dir(dir.join("run/netns"));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Prints what an example did, or why it failed (with `hint`), and gives
/// the process's exit status.
pub fn report(example: &str, hint: &str, r: Result<String>) -> ExitCode {
    match r {
        Ok(what) => {
            println!("ok: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{example} failed: {e} ({hint})");
            ExitCode::FAILURE
        }
    }
}
