//! The `upgraderd` binary: parse the command line, run it, turn the outcome into an exit code.

fn main() -> std::process::ExitCode {
    upgraderd::main_with_args(std::env::args_os())
}
