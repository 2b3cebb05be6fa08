//! Waitlist batches (docs/waitlist.md): a lottery batch whose whole list is ranked at the
//! opening (the draw, algorithm 2 of docs/lottery-audit.md), the stock going to the first in
//! line; every voucher of it that later expires or is forfeited goes to the next in line (the
//! claim writer's sweep, `app::claims`), who is told by SMS. A waiting person's phone is kept
//! sealed (ChaCha20-Poly1305, a key derived from the citizen secret) only while they wait.

use std::sync::Arc;

use ring::aead;

use crate::app::citizens::Citizens;
use crate::app::claims::ClaimWriter;
use crate::app::error::AppError;
use crate::app::providers::{ProviderError, SmsSender};
use crate::domain::citizen::Phone;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, CitizenId, VoucherId};
use crate::domain::season::{Batch, Lottery, VoucherStatus};
use crate::domain::time::Timestamp;
use crate::storage::Storage;

/// What the phone-sealing key is derived with from the citizen secret.
const KEY_LABEL: &[u8] = b"wenhui waitlist phone seal v1";

/// What the SMS gateway is told a notice is for.
pub const NOTICE_PURPOSE: &str = "waitlist_voucher";

/// The key that seals a waiting person's phone. Its `Debug` shows nothing of it.
pub struct PhoneSeal {
    key: aead::LessSafeKey,
}

impl std::fmt::Debug for PhoneSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhoneSeal(..)")
    }
}

impl PhoneSeal {
    /// The key derived from the citizen HMAC secret (`keys/citizen-hmac.key`), as the one-time
    /// codes' key is: HMAC-SHA256(secret, "wenhui waitlist phone seal v1"). Every node already
    /// holds that secret, held to one by its fingerprint (`app::secrets`), so every node opens
    /// what another sealed, and no new file is to be made, copied or backed up.
    pub fn derive(citizen_secret: &[u8]) -> anyhow::Result<PhoneSeal> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, citizen_secret);
        PhoneSeal::from_bytes(ring::hmac::sign(&key, KEY_LABEL).as_ref())
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<PhoneSeal> {
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, bytes)
            .map_err(|_| anyhow::anyhow!("a phone-sealing key is 32 bytes"))?;
        Ok(PhoneSeal { key: aead::LessSafeKey::new(unbound) })
    }

    /// `phone` sealed for this batch and citizen: a random 12-byte nonce, then the ciphertext
    /// and its tag; the batch and citizen ids are bound in as associated data.
    pub fn seal(&self, batch_id: BatchId, citizen_id: CitizenId, phone: &Phone) -> Result<Vec<u8>, AppError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| AppError::internal("the system's random generator failed"))?;
        let mut sealed = phone.as_str().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(associated(batch_id, citizen_id)),
                &mut sealed,
            )
            .map_err(|_| AppError::internal("sealing a phone failed"))?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Ok(out)
    }

    /// The phone sealed by [`PhoneSeal::seal`] for this batch and citizen; `None` if it does not
    /// open (another key, another person's row).
    pub fn open(&self, batch_id: BatchId, citizen_id: CitizenId, sealed: &[u8]) -> Option<Phone> {
        if sealed.len() < aead::NONCE_LEN {
            return None;
        }
        let (nonce, cipher) = sealed.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = cipher.to_vec();
        let aad = aead::Aad::from(associated(batch_id, citizen_id));
        let plain = self.key.open_in_place(nonce, aad, &mut buffer).ok()?;
        Phone::parse(std::str::from_utf8(plain).ok()?).ok()
    }
}

fn associated(batch_id: BatchId, citizen_id: CitizenId) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(batch_id.as_uuid().as_bytes());
    aad[16..].copy_from_slice(citizen_id.as_uuid().as_bytes());
    aad
}

/// A voucher the sweep moved on to the next in line, to tell them about.
#[derive(Clone, PartialEq, Eq)]
pub struct WaitlistNotice {
    pub batch_id: BatchId,
    pub batch_name: String,
    pub citizen_id: CitizenId,
    pub voucher_id: VoucherId,
    pub expires_at: Timestamp,
    /// Read before the move erased it; `None` if they joined without one.
    pub sealed_phone: Option<Vec<u8>>,
}

impl std::fmt::Debug for WaitlistNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitlistNotice")
            .field("batch_id", &self.batch_id)
            .field("citizen_id", &self.citizen_id)
            .field("voucher_id", &self.voucher_id)
            .finish_non_exhaustive()
    }
}

/// Texts the people a voucher moved on to, after the move committed.
#[derive(Debug)]
pub struct Notifier {
    sms: Arc<dyn SmsSender>,
    seal: Arc<PhoneSeal>,
}

impl Notifier {
    pub fn new(sms: Arc<dyn SmsSender>, seal: Arc<PhoneSeal>) -> Notifier {
        Notifier { sms, seal }
    }

    /// Sends each notice; one the gateway could not take (unavailable, after the provider's own
    /// quick retries) is tried again later, at [`LATER_TRIES_S`], in the background (the voucher
    /// is in the citizen's list whatever the SMS does; a refused number is not tried again). How
    /// many were sent at the first try.
    pub async fn send(&self, notices: &[WaitlistNotice]) -> usize {
        let mut sent = 0;
        for notice in notices {
            let phone = notice
                .sealed_phone
                .as_deref()
                .and_then(|s| self.seal.open(notice.batch_id, notice.citizen_id, s));
            let Some(phone) = phone else {
                tracing::warn!(batch = %notice.batch_id, voucher = %notice.voucher_id, "no phone to tell of a waitlist voucher");
                metrics::counter!(crate::telemetry::WAITLIST_NOTICES, "outcome" => "no_phone").increment(1);
                continue;
            };
            let text = notice_text(notice);
            match self.sms.send_notice(&phone, NOTICE_PURPOSE, &text).await {
                Ok(()) => {
                    sent += 1;
                    count_notice("sent");
                }
                Err(ProviderError::Unavailable(error)) => {
                    tracing::warn!(%error, voucher = %notice.voucher_id, "a waitlist notice was not sent; trying again later");
                    tokio::spawn(try_later(self.sms.clone(), phone, text, notice.voucher_id));
                }
                Err(error) => {
                    tracing::warn!(%error, voucher = %notice.voucher_id, "a waitlist notice was refused");
                    count_notice("failed");
                }
            }
        }
        sent
    }
}

/// When a notice the gateway could not take is tried again: seconds after the failure before,
/// then `failed` (the phone, opened for it, is held in memory only until then).
pub const LATER_TRIES_S: [u64; 3] = [30, 120, 600];

async fn try_later(sms: Arc<dyn SmsSender>, phone: Phone, text: String, voucher: VoucherId) {
    for (attempt, pause_s) in LATER_TRIES_S.into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_secs(pause_s)).await;
        match sms.send_notice(&phone, NOTICE_PURPOSE, &text).await {
            Ok(()) => return count_notice("sent_later"),
            Err(ProviderError::Unavailable(error)) => {
                tracing::warn!(%error, %voucher, attempt = attempt + 2, "a waitlist notice was not sent again");
            }
            Err(error) => {
                tracing::warn!(%error, %voucher, "a waitlist notice was refused");
                return count_notice("failed");
            }
        }
    }
    count_notice("failed");
}

fn count_notice(outcome: &'static str) {
    metrics::counter!(crate::telemetry::WAITLIST_NOTICES, "outcome" => outcome).increment(1);
}

/// The notice's words (zh-CN): the batch and until when the voucher is valid.
pub fn notice_text(notice: &WaitlistNotice) -> String {
    format!(
        "【文惠】排队轮到你了：「{}」的一张券已发到你的账户，请在 {}（北京时间）前使用。",
        notice.batch_name,
        crate::app::zh::cst_minute(notice.expires_at)
    )
}

/// 409 `not_a_waitlist`.
pub fn not_a_waitlist() -> AppError {
    AppError::conflict(ErrorCode::NotAWaitlist, "this batch has no waitlist")
}

fn waitlist_of(batch: &Batch) -> Result<&Lottery, AppError> {
    batch.lottery.as_ref().filter(|l| l.waitlist).ok_or_else(not_a_waitlist)
}

/// Joins the citizen to a waitlist batch during its window, once (joining again answers the
/// first time; nothing about a join but the citizen id decides the place). `phone` must be the
/// one they registered with (422 `phone_mismatch`): it is kept sealed until they are reached.
pub async fn join(
    store: &dyn Storage,
    citizens: &Citizens,
    seal: &PhoneSeal,
    batch_id: BatchId,
    citizen_id: CitizenId,
    phone: &Phone,
    now: Timestamp,
) -> Result<Timestamp, AppError> {
    let batch =
        crate::app::claims::batch_taking_entries(store, batch_id, now, |batch| waitlist_of(batch).map(drop))
            .await?;
    let registered = store.citizen_phone_hash(citizen_id).await?;
    if registered.as_deref() != Some(&citizens.phone_hash(phone)[..]) {
        return Err(AppError::invalid(ErrorCode::PhoneMismatch, "give the phone you registered with"));
    }
    let sealed = seal.seal(batch.id, citizen_id, phone)?;
    Ok(store.enter_waitlist(batch.id, citizen_id, now, &sealed).await?)
}

/// Where a citizen stands on a waitlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitlistStatus {
    NotJoined,
    /// On the list, not reached yet (before the opening: no place yet).
    Waiting,
    /// Reached: a voucher of the batch is theirs (active or used).
    Issued,
    /// Reached and done: their voucher expired or was forfeited (it went on to the next), or
    /// a per-person cap kept them from getting one.
    Passed,
}

impl WaitlistStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitlistStatus::NotJoined => "not_joined",
            WaitlistStatus::Waiting => "waiting",
            WaitlistStatus::Issued => "issued",
            WaitlistStatus::Passed => "passed",
        }
    }
}

/// A citizen's place on a waitlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistView {
    pub batch_id: BatchId,
    pub batch_name: String,
    pub status: WaitlistStatus,
    pub joined_at: Option<Timestamp>,
    /// From the opening on: 1 is the first in line.
    pub place: Option<i64>,
    /// While waiting after the opening: people still before them in line.
    pub ahead: Option<i64>,
    pub opened_at: Option<Timestamp>,
    pub voucher_id: Option<VoucherId>,
    /// Why they were passed: voucher_expired, voucher_forfeited, limit_reached.
    pub passed_reason: Option<String>,
}

pub async fn standing(
    store: &dyn Storage,
    citizen_id: CitizenId,
    batch_id: BatchId,
) -> Result<WaitlistView, AppError> {
    let batch = store
        .batch(batch_id)
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::BatchNotFound, "no such batch"))?;
    let waitlist = waitlist_of(&batch)?;
    let mut view = WaitlistView {
        batch_id: batch.id,
        batch_name: batch.name.clone(),
        status: WaitlistStatus::NotJoined,
        joined_at: None,
        place: None,
        ahead: None,
        opened_at: waitlist.drawn_at,
        voucher_id: None,
        passed_reason: None,
    };
    let Some(standing) = store.waitlist_standing(batch.id, citizen_id).await? else { return Ok(view) };
    view.joined_at = Some(standing.entered_at);
    view.place = standing.place.filter(|_| waitlist.next_place.is_some());
    let voucher = standing.voucher.as_ref().map(|(id, status)| (*id, status.as_str()));
    view.status = match (voucher, standing.passed_reason.clone(), view.place, waitlist.next_place) {
        (Some((id, status)), _, _, _) => {
            view.voucher_id = Some(id);
            if status == VoucherStatus::Expired.as_str() || status == VoucherStatus::Forfeited.as_str() {
                view.passed_reason = Some(format!("voucher_{status}"));
                WaitlistStatus::Passed
            } else {
                WaitlistStatus::Issued
            }
        }
        (None, Some(reason), _, _) => {
            view.passed_reason = Some(reason);
            WaitlistStatus::Passed
        }
        (None, None, Some(place), Some(next)) if place >= next => {
            view.ahead = Some(place - next);
            WaitlistStatus::Waiting
        }
        (None, None, None, _) => WaitlistStatus::Waiting,
        (None, None, _, _) => WaitlistStatus::Passed,
    };
    Ok(view)
}

/// Opens a waitlist (the draw of a waitlist batch, after the checks `seasons::check_drawable`
/// made): every entry ranked in the committed-seed order, the line written, the stock issued
/// to the first through the claim writer (as a lottery's winners), then the line's cursor set
/// after the last person reached. Sent again after a failure part way, it finishes the job
/// (the same order: the line is written once, a person holding a voucher is skipped). How many
/// joined.
pub async fn open(
    store: &dyn Storage,
    writer: &ClaimWriter,
    batch: &Batch,
    lottery: &Lottery,
    seed: &str,
) -> Result<u64, AppError> {
    let ranking = crate::app::seasons::rank_entries(store, batch.id, seed, &lottery.salt, usize::MAX).await?;
    let entries = ranking.entries();
    let order = ranking.finish();
    store.place_waitlist(batch.id, &order).await?;
    writer.issue_drawn(batch.id, order).await.map_err(|error| {
        tracing::error!(%error, batch = %batch.id, "issuing a waitlist's opening failed part way");
        AppError::refused(
            crate::app::error::Kind::Unavailable,
            ErrorCode::DrawUnfinished,
            "the opening stopped part way; send it again to finish it",
        )
    })?;
    let now = store.batch(batch.id).await?.ok_or_else(|| AppError::internal("the batch went away"))?;
    store.start_waitlist(batch.id, now.stock - now.outstanding() <= 0).await?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::providers::DevSms;
    use crate::domain::one_time_code::{CodePurpose, OneTimeCode};

    /// A gateway that is unavailable for its first `down_for` notices, then takes them.
    #[derive(Debug, Default)]
    struct FlakyGateway {
        down_for: usize,
        tries: std::sync::Mutex<Vec<(String, String)>>,
        refuse: bool,
    }

    #[async_trait::async_trait]
    impl SmsSender for FlakyGateway {
        async fn send_code(
            &self,
            _: &Phone,
            _: CodePurpose,
            _: &OneTimeCode,
            _: i64,
        ) -> Result<(), ProviderError> {
            unreachable!("no code is sent here")
        }

        async fn send_notice(&self, phone: &Phone, _: &'static str, text: &str) -> Result<(), ProviderError> {
            let mut tries = self.tries.lock().expect("tries");
            tries.push((phone.as_str().to_owned(), text.to_owned()));
            if self.refuse {
                return Err(ProviderError::Refused("no such number".into()));
            }
            if tries.len() <= self.down_for {
                return Err(ProviderError::Unavailable("gateway down".into()));
            }
            Ok(())
        }

        fn is_development(&self) -> bool {
            false
        }

        fn dev_outbox(&self) -> Option<&DevSms> {
            None
        }
    }

    fn notice_for(seal: &PhoneSeal, phone: &Phone) -> WaitlistNotice {
        let (batch_id, citizen_id) = (BatchId::new_v7(), CitizenId::new_v7());
        WaitlistNotice {
            batch_id,
            batch_name: "书店满100减30".into(),
            citizen_id,
            voucher_id: VoucherId::new_v7(),
            expires_at: Timestamp::from_unix_us(1_780_000_000_000_000),
            sealed_phone: Some(seal.seal(batch_id, citizen_id, phone).expect("sealed")),
        }
    }

    /// Sent once the gateway is back: at the second of the later tries (30 s, then 120 s more).
    #[tokio::test(start_paused = true)]
    async fn a_notice_the_gateway_could_not_take_is_sent_later() {
        let seal = Arc::new(PhoneSeal::derive(&[7u8; 32]).expect("key"));
        let phone = Phone::parse("13800138000").expect("phone");
        let gateway = Arc::new(FlakyGateway { down_for: 2, ..FlakyGateway::default() });
        let notifier = Notifier::new(gateway.clone(), seal.clone());
        assert_eq!(notifier.send(&[notice_for(&seal, &phone)]).await, 0, "not sent at the first try");
        let tries = || gateway.tries.lock().expect("tries").len();
        tokio::time::sleep(std::time::Duration::from_secs(29)).await;
        assert_eq!(tries(), 1, "nothing before the first later try");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert_eq!(tries(), 2, "the first later try, still down");
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        assert_eq!(tries(), 3, "the second later try, taken");
        tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
        assert_eq!(tries(), 3, "not sent twice");
        let sent = gateway.tries.lock().expect("tries");
        assert!(
            sent.iter().all(|(to, text)| to == "13800138000" && text.contains("书店满100减30")),
            "{sent:?}"
        );
    }

    /// A refused number is not tried again; a gateway down for good is tried three times more.
    #[tokio::test(start_paused = true)]
    async fn a_refused_notice_is_not_tried_again_and_a_dead_gateway_only_three_times_more() {
        let seal = Arc::new(PhoneSeal::derive(&[7u8; 32]).expect("key"));
        let phone = Phone::parse("13800138000").expect("phone");
        let refusing = Arc::new(FlakyGateway { refuse: true, ..FlakyGateway::default() });
        Notifier::new(refusing.clone(), seal.clone()).send(&[notice_for(&seal, &phone)]).await;
        let dead = Arc::new(FlakyGateway { down_for: usize::MAX, ..FlakyGateway::default() });
        Notifier::new(dead.clone(), seal.clone()).send(&[notice_for(&seal, &phone)]).await;
        tokio::time::sleep(std::time::Duration::from_secs(86_400)).await;
        assert_eq!(refusing.tries.lock().expect("tries").len(), 1);
        assert_eq!(dead.tries.lock().expect("tries").len(), 1 + LATER_TRIES_S.len());
    }

    #[test]
    fn a_sealed_phone_opens_only_for_its_batch_and_citizen_under_the_same_secret() {
        let seal = PhoneSeal::derive(&[7u8; 32]).expect("key");
        let (batch, citizen) = (BatchId::new_v7(), CitizenId::new_v7());
        let phone = Phone::parse("13800138000").expect("phone");
        let sealed = seal.seal(batch, citizen, &phone).expect("sealed");
        assert!(!sealed.windows(11).any(|w| w == b"13800138000"), "not in the clear");
        assert_eq!(seal.open(batch, citizen, &sealed), Some(phone.clone()));
        assert_eq!(
            PhoneSeal::derive(&[7u8; 32]).expect("key").open(batch, citizen, &sealed),
            Some(phone.clone())
        );
        assert_eq!(seal.open(BatchId::new_v7(), citizen, &sealed), None, "another batch's row");
        assert_eq!(seal.open(batch, CitizenId::new_v7(), &sealed), None, "another person's row");
        assert_eq!(PhoneSeal::derive(&[8u8; 32]).expect("key").open(batch, citizen, &sealed), None);
        assert_ne!(seal.seal(batch, citizen, &phone).expect("sealed"), sealed, "a fresh nonce each time");
        assert_eq!(format!("{seal:?}"), "PhoneSeal(..)");
    }
}
