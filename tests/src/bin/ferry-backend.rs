//! `ferry-backend`: a tiny TCP backend for demos and tests. On every
//! connection it writes its name and a newline, then echoes what it reads.
//!
//! Usage: `ferry-backend --name NAME --listen IP:PORT`. Exits on SIGTERM or
//! Ctrl-C; exit status 2 on bad arguments.

use std::net::SocketAddr;
use std::process::ExitCode;

use ferry_tests::backend::Greeter;

const USAGE: &str = "usage: ferry-backend --name NAME --listen IP:PORT";

fn parse() -> Result<(String, SocketAddr), String> {
    let mut args = std::env::args().skip(1);
    let (mut name, mut listen) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--name" => name = Some(value),
            "--listen" => {
                listen =
                    Some(value.parse().map_err(|_| format!("--listen: invalid socket address {value:?}"))?)
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok((name.ok_or("--name is required")?, listen.ok_or("--listen is required")?))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (name, listen) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry-backend: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let greeter = match Greeter::start_on(&name, listen).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ferry-backend: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("ferry-backend {name} listening on {}", greeter.addr);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferry-backend: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
