//! `loadgen`: parse the flags, run, print the headline; bad flags exit 2 naming the flag.

use std::process::ExitCode;

use clap::CommandFactory;
use loadgen::args::{Args, Plan};

#[tokio::main]
async fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let plan = match Plan::try_from(args) {
        Ok(plan) => plan,
        Err(e) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit(),
    };
    let out = plan.out.clone();
    match loadgen::run::run(plan).await {
        Ok(summary) => {
            println!("{}", summary.headline(&out));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
