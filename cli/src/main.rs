//! `cnm`: Docker-style networking from the command line, on the cnm crates.
//! Every command is one process with its own controller over the state
//! directories; an error prints one line, `cnm: error: …`, and exits 1; a
//! usage error prints the command's usage and exits 2.

mod args;
mod commands;
mod demo;
mod stack;

use clap::Parser;

use crate::args::{Cli, Cmd};

/// A usage error: one line naming what was wrong, then the usage of the
/// command it was for; exit status 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The deepest subcommand named on the command line.
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut path = vec!["cnm".to_string()];
    for arg in std::env::args().skip(1) {
        let next =
            cmd.get_subcommands().find(|c| c.get_name() == arg || c.get_all_aliases().any(|a| a == arg)).cloned();
        if let Some(sub) = next {
            path.push(sub.get_name().to_string());
            cmd = sub;
        }
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let usage = cmd.bin_name(path.join(" ")).render_usage().to_string();
    eprintln!(
        "cnm: error: {}\n\n{usage}\n\nFor more information, try '{} --help'.",
        first.trim_start_matches("error: "),
        path.join(" ")
    );
    std::process::exit(2);
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    // Warnings (a skipped stray state file) always reach stderr.
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).init();
    let result = match &cli.cmd {
        Cmd::Demo => demo::run(&cli).map(|ok| if ok { 0 } else { 1 }),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "cnm", &mut std::io::stdout());
            Ok(0)
        }
        _ => commands::run(&cli),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cnm: error: {e}");
            std::process::exit(1);
        }
    }
}
