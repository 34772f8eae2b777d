//! The `imgbuild` command: parse, dispatch, print the error chain, exit.

use std::process::ExitCode;

use clap::Parser;
use imgbuild::cli::Cli;
use imgbuild::diag::BadInput;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.init_logging();
    match imgbuild::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Through the secret scrubber: no resolved secret reaches stderr.
            if let Some(bad) = err.downcast_ref::<BadInput>() {
                eprintln!("error: {}", imgbuild::redact::scrub(&bad.to_string()));
                return ExitCode::from(2);
            }
            eprintln!("error: {}", imgbuild::redact::scrub(&format!("{err:#}")));
            ExitCode::from(1)
        }
    }
}
