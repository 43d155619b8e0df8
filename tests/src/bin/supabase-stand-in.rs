//! Serves the local Supabase Management API stand-in until Ctrl-C.
//!
//! ```text
//! SUPABASE_ACCESS_TOKEN=test-token supabase-stand-in [--port 8787] [--host 127.0.0.1] [--seed FILE] [--latency-ms 0]
//! ```
//!
//! Prints `supabase-stand-in listening on http://HOST:PORT` once, then one
//! JSON line per request received. `--port 0` takes an OS-assigned port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jit_guard_tests::stand_in::{Options, StandIn, load_seed};

const TOKEN_VARIABLE: &str = "SUPABASE_ACCESS_TOKEN";
const DEFAULT_PORT: u16 = 8787;

const USAGE: &str = "\
usage: supabase-stand-in [--port PORT] [--host ADDRESS] [--seed FILE] [--latency-ms N]

Serves the Supabase Management API stand-in on loopback until Ctrl-C.

  --port PORT      TCP port to listen on (default 8787; 0 takes a free port)
  --host ADDRESS   loopback address to listen on (default 127.0.0.1; ::1 and localhost also work)
  --seed FILE      seed JSON (default tests/fixtures/seed.json of this crate)
  --latency-ms N   wait N milliseconds before every answer (default 0)

The access token that clients must send as 'Authorization: Bearer <token>'
is read from the environment variable SUPABASE_ACCESS_TOKEN.";

struct Arguments {
    address: SocketAddr,
    seed: PathBuf,
    /// Added before every response.
    latency: Duration,
}

fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let mut port = DEFAULT_PORT;
    let mut host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut seed = StandIn::seed_path();
    let mut latency = Duration::ZERO;

    while let Some(flag) = arguments.next() {
        let Some(value) = arguments.next() else {
            return Err(format!("{flag} needs a value\n\n{USAGE}"));
        };
        match flag.as_str() {
            "--port" => {
                port = value.parse().map_err(|_| {
                    format!("invalid --port {value:?}: give a TCP port from 0 to 65535")
                })?;
            }
            "--host" => host = parse_loopback(&value)?,
            "--seed" => seed = PathBuf::from(value),
            "--latency-ms" => {
                let milliseconds: u64 = value.parse().map_err(|_| {
                    format!("invalid --latency-ms {value:?}: give a whole number of milliseconds, 0 for none")
                })?;
                latency = Duration::from_millis(milliseconds);
            }
            _ => return Err(format!("unknown option {flag:?}\n\n{USAGE}")),
        }
    }

    Ok(Arguments {
        address: SocketAddr::new(host, port),
        seed,
        latency,
    })
}

/// Accepts only loopback addresses, so the stand-in is never reachable from
/// another machine.
fn parse_loopback(value: &str) -> Result<IpAddr, String> {
    let address = if value.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        value.parse::<IpAddr>().map_err(|_| {
            format!("invalid --host {value:?}: give a loopback IP address such as 127.0.0.1 or ::1")
        })?
    };
    if !address.is_loopback() {
        return Err(format!(
            "--host {value} is not a loopback address: the stand-in serves on 127.0.0.1 or ::1 only"
        ));
    }
    Ok(address)
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|argument| argument == "--help" || argument == "-h")
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let arguments = match parse_arguments(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let token = match std::env::var(TOKEN_VARIABLE) {
        Ok(token) if !token.is_empty() => token,
        _ => {
            eprintln!(
                "{TOKEN_VARIABLE} is not set: set it to the access token clients must send as 'Authorization: Bearer <token>'"
            );
            return ExitCode::from(2);
        }
    };

    let options = Options {
        address: arguments.address,
        print_requests: true,
    };
    let started = match load_seed(&arguments.seed) {
        Ok(seed) => StandIn::start_with_options(&token, seed, options).await,
        Err(error) => Err(error),
    };
    let stand_in = match started {
        Ok(stand_in) => stand_in,
        Err(error) => {
            eprintln!("supabase-stand-in: {error}");
            return ExitCode::FAILURE;
        }
    };
    stand_in.set_latency(arguments.latency);
    println!("supabase-stand-in listening on {}", stand_in.url());

    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("supabase-stand-in: could not wait for Ctrl-C ({error}); stopping");
        return ExitCode::FAILURE;
    }
    drop(stand_in);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Result<Arguments, String> {
        parse_arguments(arguments.iter().map(|argument| (*argument).to_owned()))
    }

    #[test]
    fn latency_defaults_to_zero() {
        let arguments = parse(&[]).expect("no options parse");

        assert_eq!(arguments.latency, Duration::ZERO);
    }

    #[test]
    fn latency_ms_is_parsed() {
        let arguments = parse(&["--port", "0", "--latency-ms", "250"]).expect("options parse");

        assert_eq!(arguments.latency, Duration::from_millis(250));
        assert_eq!(arguments.address.port(), 0);
    }

    #[test]
    fn latency_ms_rejects_non_numbers() {
        for value in ["-5", "1.5", "fast"] {
            let error = match parse(&["--latency-ms", value]) {
                Ok(_) => panic!("--latency-ms {value} was accepted"),
                Err(error) => error,
            };
            assert!(error.contains("--latency-ms"), "{error}");
        }
    }
}
