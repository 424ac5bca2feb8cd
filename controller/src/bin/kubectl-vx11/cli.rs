//! The command line: global connection flags and one subcommand per job.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  kubectl vx11 status                        # every token set of the namespace
  kubectl vx11 status vx11                   # conditions, tokens and consumer pods of one set
  kubectl vx11 rotate vx11 --wait            # rotate every generated token, wait until published
  kubectl vx11 rotate vx11 --token operator  # rotate one token
  kubectl vx11 token vx11 operator | some-client --token-stdin
  kubectl vx11 wait vx11 --for propagated

Connection: KUBECONFIG (or ~/.kube/config) and its current context, or in-cluster
configuration; --kubeconfig, --context and -n override them. No command ever prints a
staged value, and only `token` prints a published one.";

/// Inspect and operate vx11 token sets (Vx11TokenSet, `vts`): status, rotation on request,
/// the published value of a token, waiting for a condition.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-vx11",
    bin_name = "kubectl vx11",
    version,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,

    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace to talk to.
#[derive(Debug, Args, Clone, Default)]
pub struct Connection {
    /// Path to the kubeconfig file to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH", help_heading = "Connection")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME", help_heading = "Connection")]
    pub context: Option<String>,

    /// Namespace of the token sets (default: the context's namespace, else `default`).
    #[arg(
        short = 'n',
        long,
        global = true,
        value_name = "NAMESPACE",
        help_heading = "Connection"
    )]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show token sets: a table of every set in the namespace, or one set's conditions,
    /// tokens (fingerprints, never values) and consumer pods.
    #[command(after_help = "\
Examples:
  kubectl vx11 status               # NAME READY PROPAGATED SYNCED GENERATION TOKENS NEXT-ROTATION
  kubectl vx11 status vx11          # conditions, tokens, and which consumer pods are stale
  kubectl vx11 status vx11 -o json  # the set's .status as JSON")]
    Status(StatusArgs),

    /// Request a rotation of every generated token of a set (annotation `vx11.dev/rotate`),
    /// or of one token with --token (annotation `rotate.vx11.dev/<token>`).
    #[command(after_help = "\
The new value is staged first (the services accept it, clients do not have it yet) and
published to the client Secret once every consumer pod serves it; the replaced value then
stays valid for the grace period. With --wait the command returns once the new value is
published and prints its fingerprint; on timeout it names the stale consumer pods.

Examples:
  kubectl vx11 rotate vx11
  kubectl vx11 rotate vx11 --token operator --wait --timeout 2m")]
    Rotate(RotateArgs),

    /// Print the published value of a generated token (from the set's client Secret) to
    /// stdout, newline-terminated. Never prints a staged value.
    #[command(after_help = "\
The value is a secret: pipe it into the program that needs it rather than showing it on a
terminal (a warning is printed to stderr when stdout is a terminal).

Examples:
  TOKEN=$(kubectl vx11 token vx11 operator)
  curl -H \"X-VX11-Token: $(kubectl vx11 token vx11 operator)\" localhost:8000/operator/api/health")]
    Token(TokenArgs),

    /// Wait until a condition of a set is True for its current spec (metadata.generation).
    #[command(after_help = "\
Exit status 0 once the condition is True; non-zero with the condition's reason and message
on timeout.

Examples:
  kubectl vx11 wait vx11                       # Propagated: every consumer serves the current tokens
  kubectl vx11 wait vx11 --for ready --timeout 30s")]
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The Vx11TokenSet to show; without it, every set in the namespace.
    #[arg(value_name = "SET")]
    pub set: Option<String>,

    /// Output format: `table` for people, `json` for the status object(s) as JSON.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The status as JSON (an array of {name, namespace, status} without SET).
    Json,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The Vx11TokenSet whose tokens to rotate.
    #[arg(value_name = "SET")]
    pub set: String,

    /// Rotate only this generated token (a name in spec.tokens). Tokens from a secretRef
    /// cannot be rotated by request: change the referenced Secret instead.
    #[arg(long, value_name = "NAME")]
    pub token: Option<String>,

    /// Return only once the controller has acted on the request and the new value is
    /// published to the client Secret (no token left `staged`).
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, e.g. `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The Vx11TokenSet the token belongs to.
    #[arg(value_name = "SET")]
    pub set: String,

    /// The token's name in spec.tokens (a generated token).
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The Vx11TokenSet to wait for.
    #[arg(value_name = "SET")]
    pub set: String,

    /// The condition to wait for: `propagated` (every consumer pod serves the current
    /// tokens and no value waits to be published) or `ready` (every token is served).
    #[arg(long = "for", value_enum, value_name = "CONDITION", default_value_t = WaitFor::Propagated)]
    pub condition: WaitFor,

    /// How long to wait, e.g. `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// Condition `Propagated`.
    Propagated,
    /// Condition `Ready`.
    Ready,
}

impl WaitFor {
    /// The condition's `type` in the status.
    pub fn condition_type(self) -> &'static str {
        match self {
            WaitFor::Propagated => "Propagated",
            WaitFor::Ready => "Ready",
        }
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    vx11_controller::duration::parse(text)
        .map_err(|error| format!("{error} (write it like `30s`, `5m` or `1h30m`)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_help() {
        let mut command = Cli::command();
        command.build(); // propagates the global flags into the subcommands
        for sub in ["status", "rotate", "token", "wait"] {
            let sub = command.find_subcommand_mut(sub).unwrap();
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Examples:"), "{help}");
            assert!(help.contains("--namespace"), "{help}");
            assert!(help.contains("Usage: kubectl vx11 "), "{help}");
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "kubectl-vx11",
            "--context",
            "dev",
            "rotate",
            "vx11",
            "-n",
            "vx11",
            "--token",
            "operator",
            "--wait",
            "--timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(cli.connection.context.as_deref(), Some("dev"));
        assert_eq!(cli.connection.namespace.as_deref(), Some("vx11"));
        let Command::Rotate(args) = cli.command else {
            panic!("not rotate")
        };
        assert_eq!(args.token.as_deref(), Some("operator"));
        assert!(args.wait);
        assert_eq!(args.timeout, Duration::from_secs(90));

        let cli = Cli::try_parse_from(["kubectl-vx11", "wait", "vx11"]).unwrap();
        let Command::Wait(args) = cli.command else {
            panic!("not wait")
        };
        assert_eq!(args.condition, WaitFor::Propagated);
        assert_eq!(args.timeout, Duration::from_secs(300));

        let cli = Cli::try_parse_from(["kubectl-vx11", "status", "-o", "json"]).unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert_eq!(args.output, Output::Json);
        assert!(args.set.is_none());
    }

    #[test]
    fn a_bad_timeout_is_a_usage_error() {
        let error =
            Cli::try_parse_from(["kubectl-vx11", "wait", "vx11", "--timeout", "soon"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("5m"), "{error}");
    }
}
