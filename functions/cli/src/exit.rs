//! Documented exit codes of `m365-provisioner`.

use std::process::ExitCode;

/// What a run ended with. The numbers are stable: scripts and schedulers branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything asked for was done.
    Success = 0,
    /// An unexpected failure (I/O, runtime) that none of the codes below describes.
    Failure = 1,
    /// The configuration or the command line is wrong; nothing was changed.
    Config = 2,
    /// The run finished, but some objects failed; each is recorded with its reason.
    PartialFailure = 3,
    /// The deletion circuit breaker stopped the run before its first destructive operation.
    BreakerTripped = 4,
    /// The tenant could not be reached or refused the credentials.
    Connection = 5,
    /// Another run holds the connection's lease; nothing was done. The message names it and
    /// when its lease ends; try again then, or `unlock` if that run is gone for good.
    Busy = 6,
    /// The plan was not carried out: a saved plan no longer matched what a sync would do, or
    /// the operator answered no. Nothing was written.
    Declined = 7,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}
