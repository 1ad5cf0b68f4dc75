//! The `repconv` command line. With no arguments it runs the main job; see
//! `repconv --help` for the subcommands.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
