//! `wenhui-till`: a command-line till on the merchant SDK.
//!
//! Every command prints one JSON document on stdout. Exit 0: success. Exit 1: refused (by the
//! service, or a QR token that does not verify), `{"error": {"code", "message", "status"}}`.
//! Exit 2: usage, configuration, local I/O or transport error, the same shape with `status`
//! null and `code` one of `usage_error`, `config_error`, `io_error`, `transport_error`,
//! `bad_response`; also 502/503/504 still answered after the last retry (with their status).
//! A write that may or may not have happened (those last two cases) also names its
//! `idempotency_key`: run the same command again with `--idempotency-key` to learn the outcome.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "the till answers on stdout and stderr")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui_merchant_sdk::client::now_s;
use wenhui_merchant_sdk::journal::unanswered;
use wenhui_merchant_sdk::token::TokenKind;
use wenhui_merchant_sdk::ui::UiOptions;
use wenhui_merchant_sdk::{
    CardPaymentRequest, ClientError, ClientOptions, Journal, RedeemRequest, TillClient, TillKey,
    register_terminal,
};

/// The environment variable `register` reads the staff key from.
const STAFF_KEY_ENV: &str = "WENHUI_STAFF_KEY";

#[derive(Parser, Debug)]
#[command(
    name = "wenhui-till",
    version,
    about = "A Wenhui till: register, verify QR codes, redeem vouchers, pay with benefit cards, reverse"
)]
struct Cli {
    /// The till's configuration file (written by `register`).
    #[arg(long, global = true, default_value = "till.json")]
    config: PathBuf,
    /// Timeout of one attempt, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
    /// Attempts in all for one call (retries only after transport errors and 502/503/504).
    #[arg(long, global = true, default_value_t = 4)]
    max_attempts: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the till's Ed25519 key (refuses to overwrite one) and print its public half.
    Keygen {
        #[arg(long, default_value = "till.key")]
        key_file: PathBuf,
    },
    /// Register this till's key with a merchant and write the configuration file. The staff key
    /// (of the merchant's city or province) is read from WENHUI_STAFF_KEY, never from the command
    /// line, where `ps` would show it.
    Register {
        #[arg(long)]
        server: String,
        #[arg(long)]
        merchant: Uuid,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value = "till.key")]
        key_file: PathBuf,
    },
    /// Verify a QR token offline with the cached keys.
    Verify {
        #[arg(long)]
        qr: String,
    },
    /// What redeeming a voucher on an order would take off, and the voucher's terms, without
    /// redeeming it (the voucher stays unused, the QR code stays good for the redemption).
    Quote {
        #[arg(long)]
        qr: String,
        /// The order's total in yuan, e.g. 100.00.
        #[arg(long)]
        amount: String,
        /// The order's reference: the one a card payment on the same order used, if any (its
        /// member discount then applies first).
        #[arg(long, default_value = "quote")]
        order_ref: String,
    },
    /// Redeem a voucher against an order.
    Redeem {
        #[arg(long)]
        qr: String,
        /// The order's total in yuan, e.g. 100.00.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        order_ref: String,
        /// Repeat a write whose outcome is unknown (from a previous error or the journal).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Pay with a benefit card (a card QR code): the member discount and points. With a voucher
    /// on the same order, run this first, then `redeem` with the same --amount and --order-ref.
    CardPay {
        #[arg(long)]
        qr: String,
        /// The order's total in yuan, e.g. 100.00.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        order_ref: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Reverse a card payment (takes back its points).
    ReverseCard {
        #[arg(long)]
        payment: Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Reverse a redemption.
    Reverse {
        #[arg(long)]
        redemption: Uuid,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a redemption as the service sees it.
    Get {
        #[arg(long)]
        redemption: Uuid,
    },
    /// Serve the till page (收银台) on this machine: scan, order amount, confirm, today's journal
    /// and reversals, in a browser at the printed address. The page calls this process only;
    /// the terminal's key stays here. Prints `{"listening": URL}` once ready; runs until Ctrl-C.
    Ui {
        /// A loopback address (127.0.0.1 or [::1]) and port; any other address is refused.
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: std::net::SocketAddr,
        /// Seconds between resends of the writes whose outcome is unknown (no network).
        #[arg(long, default_value_t = 5)]
        retry_every_s: u64,
    },
    /// Print the journal's lines (a JSON array).
    Journal {
        /// Only the intents with no final answer (to retry with their idempotency keys).
        #[arg(long)]
        unanswered: bool,
    },
}

/// `till.json`. Relative paths are relative to the directory of the configuration file.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    server: String,
    terminal_id: Uuid,
    key_file: PathBuf,
    journal: PathBuf,
    keys_cache: PathBuf,
}

/// A failed command: the error, and the idempotency key of a write whose outcome is unknown.
struct Failure {
    error: ClientError,
    idempotency_key: Option<String>,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure { error, idempotency_key: None }
    }
}

fn config_error(message: impl Into<String>) -> Failure {
    ClientError::Config(message.into()).into()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help, --version
            print!("{error}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprint!("{error}");
            let rendered = error.to_string();
            let before_usage = rendered.split("\nUsage:").next().unwrap_or_default();
            let message = before_usage.split_whitespace().collect::<Vec<_>>().join(" ");
            let message = message.trim_start_matches("error: ").to_owned();
            println!("{}", json!({"error": {"code": "usage_error", "message": message, "status": null}}));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return report(Failure::from(ClientError::Io(format!("starting the runtime: {error}"))));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(failure) => report(failure),
    }
}

/// Whether a write that failed this way may still have happened: no answer, an answer that could
/// not be read, or a server error or gateway/unavailable answer after the last retry.
fn outcome_unknown(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::BadResponse(_) => true,
        ClientError::Refused { status, .. } => wenhui_merchant_sdk::client::outcome_unknown(*status, true),
        _ => false,
    }
}

fn report(failure: Failure) -> ExitCode {
    let error = &failure.error;
    let message = match error {
        ClientError::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let mut body = json!({"code": error.code(), "message": message, "status": error.status()});
    if let Some(key) = failure.idempotency_key.filter(|_| outcome_unknown(error)) {
        body["idempotency_key"] = json!(key);
    }
    let refused =
        matches!(error, ClientError::Refused { .. } | ClientError::Token(_)) && !outcome_unknown(error);
    let mut output = json!({"error": body});
    if matches!(error, ClientError::Token(_)) {
        output["valid"] = json!(false);
    }
    println!("{output}");
    ExitCode::from(if refused { 1 } else { 2 })
}

fn options(cli: &Cli) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        max_attempts: cli.max_attempts.max(1),
        ..ClientOptions::default()
    }
}

async fn run(cli: Cli) -> Result<Value, Failure> {
    let options = options(&cli);
    match cli.command {
        Command::Keygen { key_file } => keygen(&key_file),
        Command::Register { server, merchant, label, key_file } => {
            let staff_key = std::env::var(STAFF_KEY_ENV).map_err(|_| {
                config_error(format!("set {STAFF_KEY_ENV} to a staff key of the merchant's city or province"))
            })?;
            let registration = Registration { server, staff_key, merchant, label, key_file };
            register(&cli.config, registration, options).await
        }
        Command::Journal { unanswered } => print_journal(&cli.config, unanswered),
        Command::Ui { listen, retry_every_s } => {
            serve_page(&cli.config, options, listen, retry_every_s).await
        }
        command => {
            let client = open_client(&cli.config, options)?;
            let result = till_command(&client, command).await;
            if let Some(failure) = client.journal().last_failure() {
                eprintln!("warning: the journal could not record an answer: {failure}");
            }
            result
        }
    }
}

async fn till_command(client: &TillClient, command: Command) -> Result<Value, Failure> {
    match command {
        Command::Verify { qr } => {
            let payload = client.verify_offline(&qr, now_s()).await?;
            let kind = match payload.kind {
                TokenKind::Voucher => "voucher",
                TokenKind::Card => "card",
            };
            Ok(
                json!({"valid": true, "kind": kind, "subject": payload.subject, "expires_at_s": payload.expires_at_s}),
            )
        }
        Command::Quote { qr, amount, order_ref } => to_json(&client.quote(&qr, &amount, &order_ref).await?),
        Command::Redeem { qr, amount, order_ref, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
            let request =
                RedeemRequest { qr, order_amount: amount, order_ref, idempotency_key: Some(key.clone()) };
            let redeemed = client.redeem(request).await;
            to_json(&redeemed.map_err(|error| Failure { error, idempotency_key: Some(key) })?)
        }
        Command::Reverse { redemption, reason, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
            let reversed = client.reverse(redemption, &reason, Some(key.clone())).await;
            to_json(&reversed.map_err(|error| Failure { error, idempotency_key: Some(key) })?)
        }
        Command::CardPay { qr, amount, order_ref, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
            let request = CardPaymentRequest {
                qr,
                order_amount: amount,
                order_ref,
                idempotency_key: Some(key.clone()),
            };
            let paid = client.card_pay(request).await;
            to_json(&paid.map_err(|error| Failure { error, idempotency_key: Some(key) })?)
        }
        Command::ReverseCard { payment, reason, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
            let reversed = client.reverse_card_payment(payment, &reason, Some(key.clone())).await;
            to_json(&reversed.map_err(|error| Failure { error, idempotency_key: Some(key) })?)
        }
        Command::Get { redemption } => to_json(&client.get(redemption).await?),
        Command::Keygen { .. } | Command::Register { .. } | Command::Journal { .. } | Command::Ui { .. } => {
            Err(config_error("not a till command"))
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, Failure> {
    serde_json::to_value(value).map_err(|e| Failure::from(ClientError::BadResponse(e.to_string())))
}

fn keygen(key_file: &Path) -> Result<Value, Failure> {
    if key_file.exists() {
        return Err(config_error(format!("{} exists; refusing to overwrite a till key", key_file.display())));
    }
    let key = TillKey::generate()?;
    key.save(key_file)?;
    Ok(json!({"public_key": key.public_key_base64url(), "key_file": key_file}))
}

struct Registration {
    server: String,
    staff_key: String,
    merchant: Uuid,
    label: String,
    key_file: PathBuf,
}

async fn register(config_path: &Path, args: Registration, options: ClientOptions) -> Result<Value, Failure> {
    if config_path.exists() {
        return Err(config_error(format!(
            "{} exists: this till is registered already (remove it to register again)",
            config_path.display()
        )));
    }
    let key = TillKey::load(&args.key_file).map_err(|e| {
        config_error(format!("{e} (run `wenhui-till keygen --key-file {}` first)", args.key_file.display()))
    })?;
    let registration =
        register_terminal(&args.server, &args.staff_key, args.merchant, &key, &args.label, options).await?;
    let config = Config {
        server: args.server.trim().trim_end_matches('/').to_owned(),
        terminal_id: registration.terminal_id,
        key_file: path_for_config(config_path, &args.key_file),
        journal: "till-journal.jsonl".into(),
        keys_cache: "till-keys.json".into(),
    };
    let text = serde_json::to_string_pretty(&config).map_err(|e| config_error(e.to_string()))?;
    write_new(config_path, &text).map_err(|e| {
        let message = format!(
            "registered as terminal {} but could not write {}: {e}",
            registration.terminal_id,
            config_path.display()
        );
        Failure::from(ClientError::Io(message))
    })?;
    Ok(json!({"terminal_id": registration.terminal_id, "config": config_path}))
}

fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// How to name `file` (relative to the working directory) in the configuration at `config`:
/// as it is if the configuration is in the working directory, else as an absolute path.
fn path_for_config(config: &Path, file: &Path) -> PathBuf {
    let config_dir = config.parent().unwrap_or(Path::new(""));
    if file.is_absolute() || config_dir.as_os_str().is_empty() || config_dir == Path::new(".") {
        return file.to_path_buf();
    }
    std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf())
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        config_error(format!("reading {}: {e} (run `wenhui-till register` first)", path.display()))
    })?;
    let mut config: Config =
        serde_json::from_str(&text).map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for file in [&mut config.key_file, &mut config.journal, &mut config.keys_cache] {
        if file.is_relative() {
            *file = dir.join(&*file);
        }
    }
    Ok(config)
}

fn open_client(config_path: &Path, options: ClientOptions) -> Result<TillClient, Failure> {
    let config = load_config(config_path)?;
    let key = TillKey::load(&config.key_file)?;
    let journal = Journal::open(&config.journal).map_err(|e| ClientError::Io(e.to_string()))?;
    let client = TillClient::new(&config.server, config.terminal_id, key, journal, options)?;
    Ok(client.with_key_cache(config.keys_cache))
}

/// `ui`: the till page, until Ctrl-C (or SIGTERM).
async fn serve_page(
    config_path: &Path,
    options: ClientOptions,
    listen: std::net::SocketAddr,
    retry_every_s: u64,
) -> Result<Value, Failure> {
    let config = load_config(config_path)?;
    let client = open_client(config_path, options)?;
    let ui_options = UiOptions {
        listen,
        messages_cache: Some(config.keys_cache.with_file_name("till-messages.json")),
        retry_every: Duration::from_secs(retry_every_s.max(1)),
    };
    let ready = |address: std::net::SocketAddr| {
        use std::io::Write;
        println!("{}", json!({"listening": format!("http://{address}/")}));
        let _ = std::io::stdout().flush();
    };
    wenhui_merchant_sdk::ui::serve(client, ui_options, ready, shutdown_signal()).await?;
    Ok(json!({"stopped": true}))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        () = terminated => {}
    }
}

fn print_journal(config_path: &Path, only_unanswered: bool) -> Result<Value, Failure> {
    let config = load_config(config_path)?;
    let lines = Journal::read(&config.journal).map_err(|e| ClientError::Io(e.to_string()))?;
    let lines: Vec<Value> = if only_unanswered {
        unanswered(&lines).into_iter().map(|line| json!(line)).collect()
    } else {
        lines.iter().map(|line| json!(line)).collect()
    };
    Ok(Value::Array(lines))
}
