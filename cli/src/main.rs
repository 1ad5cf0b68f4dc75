//! The `repconv` command line. With no arguments it runs the main job; see
//! `repconv --help` for the subcommands.

use clap::Parser;
use repconv_cli as cli;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        // A closed stdout pipe (`repconv layers | head`) is not an error.
        let broken_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if !broken_pipe {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
