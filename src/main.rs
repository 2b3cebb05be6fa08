use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    wenhui::cli::main(wenhui::cli::Cli::parse()).await
}
