//! The operator's host hooks (`UPGRADERD_PRE_UPGRADE_CMD`,
//! `UPGRADERD_POST_UPGRADE_CMD`): a command line the operator wrote, run by
//! `/bin/sh -c` (it is the operator's own shell text, never built from data),
//! with the upgrade passed as environment variables. That text may pass a
//! password, so it is a secret argument: shown masked in the log and errors,
//! which reach history and the status file the app reads.

use std::time::Duration;

use crate::ops::process::Cmd;

/// How long a hook may run before it is stopped.
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The upgrade a hook is told about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HookContext<'a> {
    pub upgrade_id: &'a str,
    pub from_version: Option<&'a str>,
    pub to_version: &'a str,
    /// The status at the time: `pending` before, the terminal state after.
    pub status: &'a str,
}

/// The hook's command: the operator's text under `sh -c`, the upgrade in its environment.
pub(crate) fn hook(command: &str, context: HookContext) -> Cmd {
    Cmd::new("/bin/sh")
        .arg("-c")
        .secret_arg(command)
        .env("UPGRADERD_UPGRADE_ID", context.upgrade_id)
        .env("UPGRADERD_FROM_VERSION", context.from_version.unwrap_or(""))
        .env("UPGRADERD_TO_VERSION", context.to_version)
        .env("UPGRADERD_STATUS", context.status)
        .timeout(HOOK_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::process::Runner;

    #[test]
    fn a_hook_sees_the_upgrade_in_its_environment_and_data_never_reaches_the_shell_text() {
        let context =
            HookContext { upgrade_id: "u1", from_version: Some("1.0.0"), to_version: "$(id)", status: "pending" };
        let cmd = hook("printf '%s %s %s %s' \"$UPGRADERD_UPGRADE_ID\" \"$UPGRADERD_FROM_VERSION\" \"$UPGRADERD_TO_VERSION\" \"$UPGRADERD_STATUS\"", context);
        let out = Runner::new(false).run(&cmd).unwrap();
        assert_eq!(out.stdout_text(), "u1 1.0.0 $(id) pending");
    }

    #[test]
    fn the_command_line_runs_as_written_and_is_shown_masked() {
        let context = HookContext { upgrade_id: "u1", from_version: None, to_version: "2.0.0", status: "pending" };
        let cmd = hook("echo 'no upgrade now' >&2; exit 3; : --password=hunter2", context);
        assert_eq!(cmd.display(), "/bin/sh -c ********");
        let err = Runner::new(false).run(&cmd).unwrap_err().to_string();
        assert!(err.contains("exited with code 3") && err.contains("no upgrade now"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
