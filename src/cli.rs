//! The command line (CONTRACT §1): `run` (default), `check`, `demo`,
//! `token inspect`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::gateway::Gateway;
use crate::server::Running;
use crate::server::shutdown::{Signal, Signals};
use crate::telemetry::logging::{self, LogFormat};
use crate::telemetry::metrics::ResultLabel;

/// authgate: a TLS-terminating reverse proxy that authenticates every request.
#[derive(Debug, Parser)]
#[command(name = "authgate", version, about)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "AUTHGATE_CONFIG",
        default_value = "gateway.yaml"
    )]
    pub config: PathBuf,
    /// Log format: json lines (default) or pretty.
    #[arg(long, global = true, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Log filter, RUST_LOG syntax (e.g. `info`, `authgate=debug`).
    #[arg(long, global = true, env = "AUTHGATE_LOG", default_value = "info")]
    pub log_level: String,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run,
    /// Validate the config file; exit 0 when valid, 2 listing every problem.
    Check {
        /// Treat security lint warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Start a demo issuer, an echo upstream and a gateway on loopback.
    Demo(DemoArgs),
    /// Token helpers.
    Token {
        /// Token action.
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// API key helpers.
    Key {
        /// Key action.
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// DPoP client helpers: a key, its thumbprint, proofs (RFC 9449).
    Dpop {
        /// DPoP action.
        #[command(subcommand)]
        action: DpopCommand,
    },
}

/// `authgate key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a new random API key (256 bits) once, and its file entry (digest only).
    New {
        /// The key's subject (`sub`).
        #[arg(long)]
        subject: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scopes: String,
    },
}

/// `authgate dpop …`
#[derive(Debug, Subcommand)]
pub enum DpopCommand {
    /// Write a new P-256 key (PKCS#8 PEM, mode 0600) and print its thumbprint (jkt).
    Key {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key's RFC 7638 thumbprint: the cnf.jkt of tokens bound to it.
    Jkt {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Print a DPoP proof for one request.
    Proof {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request URL (query and fragment are left out of htu).
        #[arg(long)]
        url: String,
        /// The access token the proof goes with (sets ath).
        #[arg(long)]
        token: Option<String>,
        /// A server nonce (from a DPoP-Nonce header).
        #[arg(long)]
        nonce: Option<String>,
    },
}

/// `authgate demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use ephemeral ports instead of 8080/9901/8180/8181.
    #[arg(long)]
    pub ephemeral_ports: bool,
}

/// `authgate token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token's header and claims from stdin, NOT VERIFIED, never its signature.
    Inspect,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { strict } => check(&cli.config, strict),
        Command::Token {
            action: TokenCommand::Inspect,
        } => inspect(),
        Command::Run => {
            logging::init(cli.log_format, &cli.log_level);
            runtime().block_on(run_gateway(&cli.config))
        }
        Command::Dpop { action } => dpop(action),
        Command::Key {
            action: KeyCommand::New { subject, scopes },
        } => new_key(&subject, &scopes),
        Command::Demo(args) => {
            logging::init(cli.log_format, &cli.log_level);
            runtime().block_on(crate::demo::run(args.ephemeral_ports))
        }
    }
}

/// The main runtime: the admin listener, key fetches, revocation sync,
/// signals and reloads. The proxy itself runs on worker threads of its own
/// (`server::workers`), so one thread is plenty here.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authgate: cannot start the async runtime: {e}");
            std::process::exit(1)
        }
    }
}

fn check(path: &Path, strict: bool) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let level = if strict { "error" } else { "warning" };
                eprintln!("{level}: {w}");
            }
            if strict && !loaded.warnings.is_empty() {
                return ExitCode::from(2);
            }
            println!(
                "{}: valid ({} issuers, {} routes)",
                path.display(),
                loaded.config.issuers.len(),
                loaded.config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
    }
}

async fn run_gateway(path: &Path) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "invalid configuration");
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(lint = %w, "configuration lint");
    }
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let running = match Running::start(loaded.config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("authgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut watch = FileWatch::new(watched_files(&running.gateway, path)).await;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Terminate => break,
                Signal::Reload => {
                    reload(&running.gateway, path).await;
                    watch = FileWatch::new(watched_files(&running.gateway, path)).await;
                }
            },
            _ = tick.tick() => {
                if watch.changed().await {
                    tracing::info!("config or certificate file changed");
                    reload(&running.gateway, path).await;
                    watch = FileWatch::new(watched_files(&running.gateway, path)).await;
                }
            }
        }
    }
    tracing::info!("terminating");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How often watched files are checked.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The config file and the TLS files it names.
fn watched_files(gateway: &Gateway, config: &Path) -> Vec<PathBuf> {
    let mut files = vec![config.to_owned()];
    if let Some(tls) = &gateway.runtime().config.server.tls {
        files.push(tls.cert_file.clone());
        files.push(tls.key_file.clone());
        files.extend(tls.client_ca_file.clone());
    }
    // API key files reload like the config (CONTRACT §8.5).
    for issuer in &gateway.runtime().config.issuers {
        if let crate::config::KeySource::ApiKeys(path) = &issuer.keys {
            files.push(path.clone());
        }
    }
    files
}

/// Polls files for changes (size and modification time), debounced: a
/// change is reported once it has stayed the same for one more poll, so a
/// half-written file is not loaded.
struct FileWatch {
    files: Vec<PathBuf>,
    current: Vec<Option<(std::time::SystemTime, u64)>>,
    pending: Option<Vec<Option<(std::time::SystemTime, u64)>>>,
}

impl FileWatch {
    async fn new(files: Vec<PathBuf>) -> Self {
        let current = Self::stamp(&files).await;
        Self {
            files,
            current,
            pending: None,
        }
    }

    async fn stamp(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let meta = tokio::fs::metadata(f).await.ok();
            out.push(meta.and_then(|m| Some((m.modified().ok()?, m.len()))));
        }
        out
    }

    async fn changed(&mut self) -> bool {
        let now = Self::stamp(&self.files).await;
        if now == self.current {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.current = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

/// Reloads `path` into `gateway`; a bad file leaves the running config serving.
pub async fn reload(gateway: &Arc<Gateway>, path: &Path) {
    let owned = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || config::load(&owned)).await;
    let result = match loaded {
        Ok(Ok(loaded)) => {
            let old = gateway.runtime();
            if old.config.server.listen != loaded.config.server.listen
                || old.config.admin.listen != loaded.config.admin.listen
            {
                tracing::warn!("listen addresses change only on restart");
            }
            if old.config.server.workers != loaded.config.server.workers {
                tracing::warn!("server.workers changes only on restart");
            }
            if old.config.server.max_connections != loaded.config.server.max_connections {
                tracing::warn!("server.max_connections changes only on restart");
            }
            // Whatever goes wrong in building the next runtime, a panic
            // included, the running one keeps serving.
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                gateway.reload(loaded.config)
            }));
            match built {
                Ok(result) => result.map_err(|p| vec![p]),
                Err(_) => Err(vec![config::ConfigProblem::new(
                    "(config)",
                    "building the new configuration failed unexpectedly (a panic)",
                    "a configuration authgate check accepts; please report this",
                )]),
            }
        }
        Ok(Err(problems)) => Err(problems),
        Err(_) => Err(vec![config::ConfigProblem::new(
            "(config)",
            "reading the configuration failed unexpectedly (a panic)",
            "a configuration authgate check accepts; please report this",
        )]),
    };
    let label = match result {
        Ok(()) => {
            tracing::info!(config = %path.display(), "configuration reloaded");
            "success"
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "reload refused; the running configuration stays");
            }
            "error"
        }
    };
    gateway
        .metrics
        .config_reloads
        .get_or_create(&ResultLabel { result: label })
        .inc();
}

fn inspect() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut input)
        .is_err()
    {
        eprintln!("authgate: stdin is not text");
        return ExitCode::from(2);
    }
    match crate::auth::token::inspect(&input) {
        Ok(json) => {
            eprintln!(
                "NOT VERIFIED: decoded without checking the signature, issuer, audience or expiry"
            );
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("authgate: {why}");
            ExitCode::from(2)
        }
    }
}

fn dpop(action: DpopCommand) -> ExitCode {
    let printed = match action {
        DpopCommand::Key { out } => crate::dpop_tool::new_key(&out),
        DpopCommand::Jkt { key } => crate::dpop_tool::thumbprint(&key),
        DpopCommand::Proof {
            key,
            method,
            url,
            token,
            nonce,
        } => crate::dpop_tool::proof(&key, &method, &url, token.as_deref(), nonce.as_deref()),
    };
    match printed {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate dpop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn new_key(subject: &str, scopes: &str) -> ExitCode {
    let scopes: Vec<String> = scopes.split_whitespace().map(str::to_owned).collect();
    match crate::auth::api_keys::new_key(subject, &scopes) {
        Ok((key, entry)) => {
            println!("{key}");
            println!();
            println!("# the entry for the api_keys file (the key itself is not stored):");
            print!("{entry}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate key: {e}");
            ExitCode::FAILURE
        }
    }
}
