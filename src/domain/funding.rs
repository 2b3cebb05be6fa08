//! Co-funding of vouchers, and what a voucher is worth.
//!
//! A voucher batch may be paid for jointly by a province and some of its cities (each a
//! [`RegionCode`]), in whole-percent shares that add up to exactly 100.
//!
//! # Splitting an amount between funders
//!
//! [`FundingShares::split`] uses the largest remainder (Hamilton) method, so the parts always add
//! up to the whole amount and each part is within one fen of its exact proportional value:
//!
//! 1. each funder first gets `floor(amount_fen * share / 100)`;
//! 2. the fen left over (always fewer than the number of funders) go one each to the funders with
//!    the largest remainders `amount_fen * share mod 100`; equal remainders are served in the
//!    order the funders were listed.
//!
//! The result is in the order the funders were listed. Examples:
//!
//! ```text
//! 0.05 yuan, 50/50:     2.5 + 2.5 fen  -> 2 + 2, remainders 50/50, the leftover fen goes to the
//!                                          first listed         -> 0.03 / 0.02
//! 10.00 yuan, 33/33/34: 330 + 330 + 340 fen exactly             -> 3.30 / 3.30 / 3.40
//! 0.10 yuan, 33/33/34:  3.3 + 3.3 + 3.4 -> 3 + 3 + 3, remainders 30/30/40, one fen left
//!                                          over goes to the 34% funder -> 0.03 / 0.03 / 0.04
//! 0.02 yuan, 33/33/34:  remainders 66/66/68, two fen left over go to the 34% funder, then the
//!                                          first listed         -> 0.01 / 0.00 / 0.01
//! ```
//!
//! # Voucher terms
//!
//! [`VoucherTerms`] are the two kinds of voucher value: a threshold voucher (满减, "spend at least
//! X, get Y off") and a percent voucher (percent off, at most a cap, rounded down to a multiple of
//! a step). Discounts are always rounded down to the fen and never exceed the order amount.

use std::cmp::Reverse;

use crate::domain::error_code::ErrorCode;

use super::money::Fen;
use super::region::RegionCode;

/// The most funders that may share one voucher batch.
pub const MAX_FUNDERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FundingError {
    #[error("a voucher batch needs at least one funder")]
    Empty,
    #[error("at most 8 funders may share a voucher batch; {0} were given")]
    TooMany(usize),
    #[error("funder {0} is listed more than once")]
    DuplicateFunder(RegionCode),
    #[error("funder {funder} has a share of {share}%; each share must be between 1% and 100%")]
    ShareOutOfRange { funder: RegionCode, share: u32 },
    #[error("funding shares must add up to exactly 100%; these add up to {0}%")]
    SharesSum(u64),
    #[error("invalid voucher terms: {0}")]
    TermsInvalid(String),
}

impl FundingError {
    /// The machine-readable error code for API responses.
    pub fn code(&self) -> ErrorCode {
        match self {
            FundingError::Empty => ErrorCode::FundingEmpty,
            FundingError::TooMany(_) => ErrorCode::FundingTooMany,
            FundingError::DuplicateFunder(_) => ErrorCode::FundingDuplicateFunder,
            FundingError::ShareOutOfRange { .. } | FundingError::SharesSum(_) => ErrorCode::FundingSharesSum,
            FundingError::TermsInvalid(_) => ErrorCode::TermsInvalid,
        }
    }
}

/// Who pays for a voucher batch, and in what whole-percent shares. Always valid: 1 to 8 distinct
/// funders, each share 1..=100, shares adding up to exactly 100. That the funders are the batch's
/// province and/or its cities is the caller's rule to check (it needs the batch's issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingShares(Vec<(RegionCode, u32)>);

impl FundingShares {
    pub fn new(shares: Vec<(RegionCode, u32)>) -> Result<FundingShares, FundingError> {
        if shares.is_empty() {
            return Err(FundingError::Empty);
        }
        if shares.len() > MAX_FUNDERS {
            return Err(FundingError::TooMany(shares.len()));
        }
        for (index, &(funder, share)) in shares.iter().enumerate() {
            if shares[..index].iter().any(|(earlier, _)| *earlier == funder) {
                return Err(FundingError::DuplicateFunder(funder));
            }
            if !(1..=100).contains(&share) {
                return Err(FundingError::ShareOutOfRange { funder, share });
            }
        }
        let sum: u64 = shares.iter().map(|(_, share)| u64::from(*share)).sum();
        if sum != 100 {
            return Err(FundingError::SharesSum(sum));
        }
        Ok(FundingShares(shares))
    }

    /// One funder paying everything.
    pub fn single(funder: RegionCode) -> FundingShares {
        FundingShares(vec![(funder, 100)])
    }

    /// The funders, in the order they were listed.
    pub fn funders(&self) -> impl Iterator<Item = RegionCode> + '_ {
        self.0.iter().map(|(funder, _)| *funder)
    }

    /// The funders and their percent shares, in the order they were listed.
    pub fn iter(&self) -> impl Iterator<Item = (RegionCode, u32)> + '_ {
        self.0.iter().copied()
    }

    /// Splits `amount` between the funders by the largest remainder method (see the module
    /// documentation). The parts add up to exactly `amount`; the result is in listed order.
    pub fn split(&self, amount: Fen) -> Vec<(RegionCode, Fen)> {
        let total = i128::from(amount.as_fen());
        let mut parts: Vec<(RegionCode, i128)> = Vec::with_capacity(self.0.len());
        let mut remainders: Vec<(usize, i128)> = Vec::with_capacity(self.0.len());
        for (index, &(funder, share)) in self.0.iter().enumerate() {
            let scaled = total * i128::from(share);
            parts.push((funder, scaled / 100));
            remainders.push((index, scaled % 100));
        }
        let allotted: i128 = parts.iter().map(|(_, part)| *part).sum();
        let mut leftover = total - allotted;
        // A stable sort: equal remainders keep the listed order.
        remainders.sort_by_key(|&(_, remainder)| Reverse(remainder));
        for (index, _) in remainders {
            if leftover <= 0 {
                break;
            }
            if let Some((_, part)) = parts.get_mut(index) {
                *part += 1;
                leftover -= 1;
            }
        }
        parts.into_iter().map(|(funder, part)| (funder, fen_within(part, amount))).collect()
    }
}

impl FundingShares {
    /// Splits `amount` like [`FundingShares::split`], but never gives a funder more than its part
    /// of `whole` (what the voucher reserved from it): a redemption's discount is split so that
    /// each funder pays at most what it put in. Largest remainder can, with three or more funders,
    /// give one funder a fen more of a smaller amount than of a larger one (the Alabama paradox);
    /// such an excess moves to the next funder, in listed order, that has room. Requires
    /// `amount <= whole`; parts always sum to `amount`.
    pub fn split_within(&self, amount: Fen, whole: Fen) -> Vec<(RegionCode, Fen)> {
        let caps = self.split(whole);
        let mut parts = self.split(amount);
        let mut excess = 0i64;
        for ((_, part), (_, cap)) in parts.iter_mut().zip(&caps) {
            if part.as_fen() > cap.as_fen() {
                excess += part.as_fen() - cap.as_fen();
                *part = *cap;
            }
        }
        for ((_, part), (_, cap)) in parts.iter_mut().zip(&caps) {
            let room = cap.as_fen() - part.as_fen();
            let moved = room.min(excess);
            if moved > 0 {
                *part = Fen::from_fen_unchecked(part.as_fen() + moved);
                excess -= moved;
            }
        }
        parts
    }
}

/// A computed amount that the arithmetic guarantees lies in `0..=bound`, as `Fen`. Clamped to that
/// range so that no input can make it panic.
fn fen_within(value: i128, bound: Fen) -> Fen {
    let clamped = value.clamp(0, i128::from(bound.as_fen()));
    Fen::from_fen_unchecked(i64::try_from(clamped).unwrap_or(0))
}

/// What a voucher is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherTerms {
    /// 满减: on an order of at least `min_spend`, `face_value` off (never more than the order).
    Threshold { face_value: Fen, min_spend: Fen },
    /// On an order of at least `min_spend`, `percent`% off, at most `cap`, rounded down to a
    /// multiple of `step`.
    Percent { percent: u32, cap: Fen, step: Fen, min_spend: Fen },
}

/// The order does not reach the voucher's minimum spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the order of {order_amount} yuan is below this voucher's minimum spend of {min_spend} yuan")]
pub struct BelowMinSpend {
    pub min_spend: Fen,
    pub order_amount: Fen,
}

impl BelowMinSpend {
    /// The machine-readable error code for API responses.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BelowMinSpend
    }
}

/// `amount` rounded down to a multiple of `step`; zero when `step` is zero.
fn round_down_to_step(amount: i128, step: Fen) -> i128 {
    let step = i128::from(step.as_fen());
    if step <= 0 { 0 } else { amount - amount.rem_euclid(step) }
}

impl VoucherTerms {
    pub fn validate(&self) -> Result<(), FundingError> {
        let invalid = |message: String| Err(FundingError::TermsInvalid(message));
        match *self {
            VoucherTerms::Threshold { face_value, min_spend } => {
                if face_value.is_zero() {
                    return invalid("a threshold voucher's face value must be more than 0".to_owned());
                }
                if !min_spend.is_zero() && face_value > min_spend {
                    return invalid(format!(
                        "a threshold voucher's face value ({face_value} yuan) must not exceed its minimum \
                         spend ({min_spend} yuan)"
                    ));
                }
            }
            VoucherTerms::Percent { percent, cap, step, min_spend: _ } => {
                if !(1..=100).contains(&percent) {
                    return invalid(format!(
                        "a percent voucher's percent must be between 1 and 100; got {percent}"
                    ));
                }
                if cap.is_zero() {
                    return invalid("a percent voucher's cap must be more than 0".to_owned());
                }
                if step.is_zero() {
                    return invalid("a percent voucher's rounding step must be more than 0".to_owned());
                }
                if step > cap {
                    return invalid(format!(
                        "a percent voucher's rounding step ({step} yuan) must not exceed its cap ({cap} yuan)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The minimum order amount the voucher applies to.
    pub fn min_spend(&self) -> Fen {
        match *self {
            VoucherTerms::Threshold { min_spend, .. } | VoucherTerms::Percent { min_spend, .. } => min_spend,
        }
    }

    /// The most the voucher can take off any order: the face value, or the cap rounded down to a
    /// multiple of the step.
    pub fn max_value(&self) -> Fen {
        match *self {
            VoucherTerms::Threshold { face_value, .. } => face_value,
            VoucherTerms::Percent { cap, step, .. } => {
                fen_within(round_down_to_step(i128::from(cap.as_fen()), step), cap)
            }
        }
    }

    /// What the voucher takes off an order of `order_amount`. Never more than the order amount
    /// nor [`max_value`](Self::max_value); a percent discount is a multiple of the step.
    pub fn discount(&self, order_amount: Fen) -> Result<Fen, BelowMinSpend> {
        self.discount_within(order_amount, None)
    }

    /// [`discount`](Self::discount) under a subsidy ceiling of `ceiling_percent` of the order
    /// (the season's for the merchant's category), which is rounded down to the fen. A percent
    /// voucher applies the ceiling before its cap and step, so its discount stays a multiple of
    /// the step; a threshold voucher takes the lesser of its face value and the ceiling.
    pub fn discount_within(
        &self,
        order_amount: Fen,
        ceiling_percent: Option<u32>,
    ) -> Result<Fen, BelowMinSpend> {
        let min_spend = self.min_spend();
        if order_amount < min_spend {
            return Err(BelowMinSpend { min_spend, order_amount });
        }
        let order = i128::from(order_amount.as_fen());
        let ceiling = ceiling_percent.map_or(order, |percent| order * i128::from(percent.min(100)) / 100);
        let off = match *self {
            VoucherTerms::Threshold { face_value, .. } => i128::from(face_value.as_fen()).min(ceiling),
            VoucherTerms::Percent { percent, cap, step, .. } => {
                let proportional = order * i128::from(percent) / 100;
                let capped = proportional.min(i128::from(cap.as_fen())).min(ceiling);
                round_down_to_step(capped, step)
            }
        };
        Ok(fen_within(off, order_amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::MAX_AMOUNT_FEN;
    use proptest::prelude::*;

    fn region(code: &str) -> RegionCode {
        code.parse().expect("valid region")
    }

    fn fen(value: i64) -> Fen {
        Fen::new(value).expect("valid amount")
    }

    fn amounts(split: &[(RegionCode, Fen)]) -> Vec<i64> {
        split.iter().map(|(_, part)| part.as_fen()).collect()
    }

    #[test]
    fn documented_examples() {
        let (sd, qd, jn) = (region("370000"), region("370200"), region("370100"));
        let halves = FundingShares::new(vec![(sd, 50), (qd, 50)]).expect("valid");
        assert_eq!(halves.split(fen(5)), vec![(sd, fen(3)), (qd, fen(2))]);
        let swapped = FundingShares::new(vec![(qd, 50), (sd, 50)]).expect("valid");
        assert_eq!(swapped.split(fen(5)), vec![(qd, fen(3)), (sd, fen(2))]);

        let thirds = FundingShares::new(vec![(sd, 33), (qd, 33), (jn, 34)]).expect("valid");
        assert_eq!(amounts(&thirds.split(fen(1000))), vec![330, 330, 340]);
        assert_eq!(amounts(&thirds.split(fen(10))), vec![3, 3, 4]);
        assert_eq!(amounts(&thirds.split(fen(2))), vec![1, 0, 1]);
        assert_eq!(amounts(&thirds.split(fen(1))), vec![0, 0, 1]);
        assert_eq!(amounts(&thirds.split(Fen::ZERO)), vec![0, 0, 0]);
        assert_eq!(thirds.funders().collect::<Vec<_>>(), vec![sd, qd, jn]);
        assert_eq!(thirds.iter().collect::<Vec<_>>(), vec![(sd, 33), (qd, 33), (jn, 34)]);

        let single = FundingShares::single(qd);
        assert_eq!(single.split(fen(12345)), vec![(qd, fen(12345))]);
    }

    #[test]
    fn refuses_bad_shares() {
        let (sd, qd, jn) = (region("370000"), region("370200"), region("370100"));
        let code = |shares: Vec<(RegionCode, u32)>| FundingShares::new(shares).map_err(|e| e.code().as_str());
        assert_eq!(code(vec![]), Err("funding_empty"));
        assert_eq!(code(vec![(sd, 50), (qd, 40)]), Err("funding_shares_sum"));
        assert_eq!(code(vec![(sd, 50), (qd, 60)]), Err("funding_shares_sum"));
        assert_eq!(code(vec![(sd, 100), (qd, 0)]), Err("funding_shares_sum"));
        assert_eq!(code(vec![(sd, u32::MAX), (qd, 1)]), Err("funding_shares_sum"));
        assert_eq!(code(vec![(sd, 50), (sd, 50)]), Err("funding_duplicate_funder"));
        assert!(FundingShares::new(vec![(sd, 50), (qd, 25), (jn, 25)]).is_ok());
        let nine: Vec<_> = (1..=9).map(|k| (region(&format!("37{k:02}00")), 1)).collect();
        assert_eq!(code(nine), Err("funding_too_many"));
        assert_eq!(
            FundingShares::new(vec![(sd, 50), (qd, 40)]).map_err(|e| e.to_string()),
            Err("funding shares must add up to exactly 100%; these add up to 90%".to_owned())
        );
    }

    #[test]
    fn threshold_terms() {
        let terms = VoucherTerms::Threshold { face_value: fen(3000), min_spend: fen(10000) };
        assert_eq!(terms.validate(), Ok(()));
        assert_eq!(terms.max_value(), fen(3000));
        assert_eq!(terms.discount(fen(10000)), Ok(fen(3000)));
        assert_eq!(terms.discount(fen(25000)), Ok(fen(3000)));
        assert_eq!(
            terms.discount(fen(9999)),
            Err(BelowMinSpend { min_spend: fen(10000), order_amount: fen(9999) })
        );
        assert_eq!(
            terms.discount(fen(9999)).map_err(|e| e.to_string()),
            Err("the order of 99.99 yuan is below this voucher's minimum spend of 100.00 yuan".to_owned())
        );

        // 满101减100 is real; 满50减60 is not; 无门槛 (no minimum) caps at the order amount.
        assert_eq!(
            VoucherTerms::Threshold { face_value: fen(10000), min_spend: fen(10100) }.validate(),
            Ok(())
        );
        let bad = VoucherTerms::Threshold { face_value: fen(6000), min_spend: fen(5000) };
        assert_eq!(bad.validate().map_err(|e| e.code().as_str()), Err("terms_invalid"));
        let zero = VoucherTerms::Threshold { face_value: Fen::ZERO, min_spend: fen(5000) };
        assert_eq!(zero.validate().map_err(|e| e.code().as_str()), Err("terms_invalid"));
        let no_minimum = VoucherTerms::Threshold { face_value: fen(1000), min_spend: Fen::ZERO };
        assert_eq!(no_minimum.validate(), Ok(()));
        assert_eq!(no_minimum.discount(fen(600)), Ok(fen(600)));
        assert_eq!(no_minimum.discount(Fen::ZERO), Ok(Fen::ZERO));

        // Under a 20% ceiling (Shandong 2020, other than performances) 满100减30 takes 20.00 off
        // an order of 100.00, 30.00 only from 150.00; the ceiling rounds down to the fen.
        assert_eq!(terms.discount_within(fen(10_000), Some(20)), Ok(fen(2000)));
        assert_eq!(terms.discount_within(fen(15_000), Some(20)), Ok(fen(3000)));
        assert_eq!(terms.discount_within(fen(10_001), Some(20)), Ok(fen(2000))); // 20.002 -> 20.00
        assert_eq!(terms.discount_within(fen(30_000), Some(50)), Ok(fen(3000)));
    }

    #[test]
    fn percent_terms() {
        // 20% off, at most 50.00, whole yuan only, orders from 10.00.
        let terms =
            VoucherTerms::Percent { percent: 20, cap: fen(5000), step: fen(100), min_spend: fen(1000) };
        assert_eq!(terms.validate(), Ok(()));
        assert_eq!(terms.max_value(), fen(5000));
        assert_eq!(terms.discount(fen(1000)), Ok(fen(200)));
        assert_eq!(terms.discount(fen(1299)), Ok(fen(200))); // 2.598 -> 2.59 -> 2.00
        assert_eq!(terms.discount(fen(1500)), Ok(fen(300)));
        assert_eq!(terms.discount(fen(100_000)), Ok(fen(5000)));
        assert!(terms.discount(fen(999)).is_err());

        let odd_cap =
            VoucherTerms::Percent { percent: 50, cap: fen(1050), step: fen(100), min_spend: Fen::ZERO };
        assert_eq!(odd_cap.max_value(), fen(1000));
        assert_eq!(odd_cap.discount(fen(100_000)), Ok(fen(1000)));
        assert_eq!(odd_cap.discount(fen(99)), Ok(Fen::ZERO));

        let all = VoucherTerms::Percent { percent: 100, cap: fen(2000), step: fen(1), min_spend: Fen::ZERO };
        assert_eq!(all.validate(), Ok(()));
        assert_eq!(all.discount(fen(1234)), Ok(fen(1234)));

        // Under a 15% ceiling (a cinema's, say): 15.00 of an order of 100.00, a multiple of the step.
        assert_eq!(terms.discount_within(fen(10_000), Some(15)), Ok(fen(1500)));
        assert_eq!(terms.discount_within(fen(1299), Some(15)), Ok(fen(100))); // 1.9485 -> 1.94 -> 1.00
        assert_eq!(terms.discount_within(fen(100_000), Some(100)), Ok(fen(5000)), "100%: no ceiling");

        for bad in [
            VoucherTerms::Percent { percent: 0, cap: fen(5000), step: fen(100), min_spend: Fen::ZERO },
            VoucherTerms::Percent { percent: 101, cap: fen(5000), step: fen(100), min_spend: Fen::ZERO },
            VoucherTerms::Percent { percent: 20, cap: Fen::ZERO, step: fen(100), min_spend: Fen::ZERO },
            VoucherTerms::Percent { percent: 20, cap: fen(5000), step: Fen::ZERO, min_spend: Fen::ZERO },
            VoucherTerms::Percent { percent: 20, cap: fen(50), step: fen(100), min_spend: Fen::ZERO },
        ] {
            assert_eq!(bad.validate().map_err(|e| e.code().as_str()), Err("terms_invalid"), "{bad:?}");
        }
    }

    const PREFIXES: [u32; 34] = [
        11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53,
        54, 61, 62, 63, 64, 65, 71, 81, 82,
    ];

    /// Valid shares: 1 to 8 distinct funders of one province (the province itself and/or cities),
    /// in any order, with a random composition of 100 into positive parts.
    fn valid_shares() -> impl Strategy<Value = FundingShares> {
        (1usize..=MAX_FUNDERS)
            .prop_flat_map(|n| {
                (
                    prop::sample::select(&PREFIXES[..]),
                    prop::sample::subsequence((0u32..100).collect::<Vec<_>>(), n),
                    prop::sample::subsequence((1u32..100).collect::<Vec<_>>(), n - 1),
                )
            })
            .prop_flat_map(|(prefix, cities, cuts)| {
                let funders: Vec<RegionCode> =
                    cities.iter().map(|city| region(&format!("{prefix:02}{city:02}00"))).collect();
                let mut bounds = vec![0];
                bounds.extend(cuts);
                bounds.push(100);
                let shares: Vec<u32> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
                let pairs: Vec<(RegionCode, u32)> = funders.into_iter().zip(shares).collect();
                Just(pairs).prop_shuffle()
            })
            .prop_map(|pairs| FundingShares::new(pairs).expect("generated shares are valid"))
    }

    fn any_terms() -> impl Strategy<Value = VoucherTerms> {
        let amount = || prop_oneof![0..=MAX_AMOUNT_FEN, 0i64..100_000].prop_map(fen);
        prop_oneof![
            (amount(), amount())
                .prop_map(|(face_value, min_spend)| VoucherTerms::Threshold { face_value, min_spend }),
            (any::<u32>(), amount(), amount(), amount()).prop_map(|(percent, cap, step, min_spend)| {
                VoucherTerms::Percent { percent, cap, step, min_spend }
            }),
            (1u32..=100, 1i64..100_000, 1i64..10_000, 0i64..100_000).prop_map(
                |(percent, cap, step, min_spend)| {
                    VoucherTerms::Percent {
                        percent,
                        cap: fen(cap),
                        step: fen(step.min(cap)),
                        min_spend: fen(min_spend),
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn split_within_respects_each_funders_part(
            whole in 0i64..10_000_000,
            fraction in 0u32..=100,
            a in 1u32..=98,
            b in 1u32..=98,
        ) {
            prop_assume!(a + b < 100);
            let region = |code: &str| code.parse::<RegionCode>().expect("valid");
            let shares = FundingShares::new(vec![(region("370000"), a), (region("370200"), b), (region("370100"), 100 - a - b)])
                .expect("valid shares");
            let whole = Fen::from_fen_unchecked(whole);
            let amount = Fen::from_fen_unchecked(whole.as_fen() * i64::from(fraction) / 100);
            let parts = shares.split_within(amount, whole);
            let caps = shares.split(whole);
            prop_assert_eq!(parts.iter().map(|(_, p)| p.as_fen()).sum::<i64>(), amount.as_fen());
            for ((_, part), (_, cap)) in parts.iter().zip(&caps) {
                prop_assert!(part.as_fen() <= cap.as_fen());
            }
        }
    }

    proptest! {
        #[test]
        fn parts_sum_to_the_amount_and_stay_within_a_fen(
            shares in valid_shares(),
            amount in prop_oneof![0..=MAX_AMOUNT_FEN, 0i64..1000],
        ) {
            let split = shares.split(fen(amount));
            prop_assert_eq!(split.len(), shares.iter().count());
            let sum: i128 = split.iter().map(|(_, part)| i128::from(part.as_fen())).sum();
            prop_assert_eq!(sum, i128::from(amount));
            for ((funder, part), (listed, share)) in split.iter().zip(shares.iter()) {
                prop_assert_eq!(*funder, listed);
                let error = i128::from(part.as_fen()) * 100 - i128::from(amount) * i128::from(share);
                prop_assert!(error.abs() < 100, "part {} for share {} of {}", part, share, amount);
            }
        }

        #[test]
        fn splitting_never_panics(shares in valid_shares(), amount in 0..=i64::MAX) {
            let split = shares.split(Fen::from_fen_unchecked(amount));
            let sum: i128 = split.iter().map(|(_, part)| i128::from(part.as_fen())).sum();
            prop_assert_eq!(sum, i128::from(amount));
        }

        #[test]
        fn discounts_stay_within_bounds(
            terms in any_terms(),
            order in prop_oneof![0..=MAX_AMOUNT_FEN, 0i64..200_000],
            ceiling in proptest::option::of(1..=100u32),
        ) {
            let _ = terms.validate();
            let order = fen(order);
            match terms.discount_within(order, ceiling) {
                Err(below) => prop_assert!(order < below.min_spend),
                Ok(off) => {
                    prop_assert!(order >= terms.min_spend());
                    prop_assert!(off <= order);
                    prop_assert!(off <= terms.max_value());
                    // Never above the ceiling's share of the order, nor above the discount without it.
                    let share = i128::from(order.as_fen()) * i128::from(ceiling.unwrap_or(100)) / 100;
                    prop_assert!(i128::from(off.as_fen()) <= share);
                    prop_assert!(terms.discount(order).is_ok_and(|plain| off <= plain));
                    if let VoucherTerms::Percent { step, .. } = terms {
                        if step.is_zero() {
                            prop_assert!(off.is_zero());
                        } else {
                            prop_assert_eq!(off.as_fen() % step.as_fen(), 0);
                        }
                    }
                }
            }
        }

        #[test]
        fn discount_never_panics_on_extreme_amounts(
            percent in any::<u32>(),
            values in prop::array::uniform4(0..=i64::MAX),
        ) {
            let [cap, step, min_spend, order] = values.map(Fen::from_fen_unchecked);
            let percent_terms = VoucherTerms::Percent { percent, cap, step, min_spend };
            let threshold_terms = VoucherTerms::Threshold { face_value: cap, min_spend };
            for terms in [percent_terms, threshold_terms] {
                let _ = terms.validate();
                let _ = terms.max_value();
                if let Ok(off) = terms.discount(order) {
                    prop_assert!(off <= order && off <= terms.max_value());
                }
            }
        }
    }
}
