//! Exit codes of the command contract, and the typed errors that select them.

use std::fmt;

/// The exit codes promised in the command contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    Success = 0,
    /// The operation failed (an upgrade that was rolled back counts as failed).
    Failed = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// Another upgrade holds the lock.
    Locked = 3,
    /// `check-version --exit-code` found an allowed update.
    UpdateAvailable = 10,
}

impl Exit {
    /// Every exit code, in order.
    pub(crate) const ALL: [Exit; 5] = [Exit::Success, Exit::Failed, Exit::Usage, Exit::Locked, Exit::UpdateAvailable];

    /// What the code means, for people (the man pages' EXIT STATUS).
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "Success.",
            Exit::Failed => "The operation failed; an upgrade that was rolled back counts as failed.",
            Exit::Usage => "Bad usage or configuration; the message names the flag, key or file and what to change.",
            Exit::Locked => {
                "Another upgrade holds the lock of this state directory; the message names its pid, upgrade id and start."
            }
            Exit::UpdateAvailable => "check-version --exit-code found an update the policy allows.",
        }
    }
}

/// Bad usage or configuration: the user must change a flag, a variable or a file.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a [`UsageError`] through `anyhow`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Whether the error is bad usage or configuration (exit 2), anywhere in its chain:
/// such an error is the operator's to fix and ends a command rather than an attempt.
pub(crate) fn is_usage(err: &anyhow::Error) -> bool {
    classify(err) == Exit::Usage
}

/// Maps an error to its exit code by the typed errors anywhere in its chain.
pub(crate) fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return Exit::Usage;
        }
        if cause.is::<crate::store::lock::LockBusy>() {
            return Exit::Locked;
        }
    }
    Exit::Failed
}
