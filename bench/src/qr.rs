//! `wenhui-bench qr`: drawing a voucher token as an SVG QR code, the service's encoder
//! (`qr_image`: `qrcode` with our mask choice and SVG writer) against the `qrcode` crate's own
//! `with_error_correction_level` and SVG renderer as the baseline, alternating, on the same fresh
//! tokens, in one thread.

use std::time::Instant;

use anyhow::Context;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use uuid::Uuid;
use wenhui_merchant_sdk::token::{TokenKind, TokenPayload, key_id_for};

use wenhui::app::qr::image::QrSymbol;

#[derive(clap::Args, Debug)]
pub struct QrBench {
    /// Tokens drawn per run, by each encoder.
    #[arg(long, default_value_t = 1_000)]
    tokens: usize,
    /// Runs (each encoder once per run, alternating) to take the median of.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

pub fn run(args: &QrBench) -> anyhow::Result<()> {
    let tokens = fresh_tokens(args.tokens.max(1))?;
    let (mut baseline_us, mut ours_us) = (Vec::new(), Vec::new());
    let (mut baseline_bytes, mut ours_bytes) = (0, 0);
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        for token in &tokens {
            let code = qrcode::QrCode::with_error_correction_level(token.as_bytes(), qrcode::EcLevel::M)?;
            let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).build();
            baseline_bytes = std::hint::black_box(svg).len();
        }
        baseline_us.push(started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64);
        let started = Instant::now();
        for token in &tokens {
            ours_bytes = std::hint::black_box(QrSymbol::encode(token.as_bytes())?.svg()).len();
        }
        ours_us.push(started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64);
    }
    let (baseline, ours) = (super::median(&mut baseline_us), super::median(&mut ours_us));
    println!(
        "QR drawing, {} tokens of {} characters, median of {} runs:",
        tokens.len(),
        tokens[0].len(),
        args.runs
    );
    println!(
        "  qrcode's own mask choice and SVG renderer (baseline): {baseline:.0} µs per code, {baseline_bytes} bytes"
    );
    println!(
        "  wenhui qr_image:                                      {ours:.0} µs per code, {ours_bytes} bytes"
    );
    println!(
        "  baseline ÷ ours: {:.2} (CPU per code), {:.2} (SVG size)",
        baseline / ours,
        baseline_bytes as f64 / ours_bytes as f64
    );
    Ok(())
}

/// Voucher tokens as the service issues them: random subjects and nonces, 90 s lifetime.
fn fresh_tokens(count: usize) -> anyhow::Result<Vec<String>> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).ok().context("key generation")?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).ok().context("key")?;
    let now_s = wenhui::domain::time::Timestamp::now().unix_us().div_euclid(1_000_000);
    (0..count)
        .map(|_| {
            let mut nonce = [0u8; 16];
            rng.fill(&mut nonce).ok().context("random nonce")?;
            let payload = TokenPayload {
                kind: TokenKind::Voucher,
                key_id: key_id_for(key.public_key().as_ref()),
                subject: Uuid::now_v7(),
                nonce,
                issued_at_s: now_s,
                expires_at_s: now_s + wenhui::app::qr::TOKEN_LIFETIME_S,
            };
            Ok(payload.encode(key.sign(&payload.signing_input()).as_ref()))
        })
        .collect()
}
