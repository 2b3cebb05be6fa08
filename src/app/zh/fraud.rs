//! A cash-out signal's reason in words a finance officer reads, from its figures.

use std::collections::BTreeMap;

use crate::domain::fraud::Signal;

/// `share_permille` as a percentage with one decimal: 666 → `66.6%`.
fn percent(permille: i64) -> String {
    format!("{}.{}%", permille / 10, permille.rem_euclid(10))
}

/// The explanation of `signal`, with the figures `domain::fraud::assess` gave it.
pub fn explanation(signal: Signal, figures: &BTreeMap<&'static str, i64>) -> String {
    let f = |name: &str| figures.get(name).copied().unwrap_or(0);
    match signal {
        Signal::AtThreshold => format!(
            "满减券订单中有 {} 笔（共 {} 笔，占 {}）金额恰好等于用券门槛，{}约为 {}：疑似按门槛开具虚假订单、返还现金（套现）。",
            f("at_threshold"),
            f("with_threshold"),
            percent(f("share_permille")),
            match f("baseline_from") {
                1 => "同类商户",
                2 => "本季其他商户",
                _ => "一般水平",
            },
            percent(f("baseline_permille")),
        ),
        Signal::HourlyRate => {
            let category = match f("category_median_per_hour_permille") {
                m if m < 0 => String::new(),
                m => format!("，同类商户每小时约 {} 笔", m / 1000),
            };
            format!(
                "最忙的一小时核销 {} 笔，本店平时每小时约 {} 笔{category}：短时间内集中批量核销。",
                f("peak_hour"),
                f("median_hour"),
            )
        }
        Signal::RepeatCitizens => format!(
            "{} 笔核销（共 {} 笔，占 {}）来自在本店核销 3 次及以上的市民，全部核销只涉及 {} 位市民：疑似同一批人反复用券套现。",
            f("repeat_redemptions"),
            f("redemptions"),
            percent(f("share_permille")),
            f("distinct_citizens"),
        ),
        Signal::DistinctBurst => format!(
            "{} 分钟内有 {} 位不同市民在本店核销，按本店客流约应不超过 {} 位：疑似“手机农场”批量账号集中核销。",
            f("window_minutes"),
            f("max_distinct_citizens"),
            f("expected"),
        ),
        Signal::Reversals => format!(
            "{} 笔核销（共 {} 笔，占 {}）在 72 小时内被撤销退款：疑似虚构交易后再退款。",
            f("reversed"),
            f("redemptions"),
            percent(f("share_permille")),
        ),
        Signal::OddHours => format!(
            "{} 笔核销（共 {} 笔，占 {}）发生在营业时间之外（北京时间 8:00–22:00 以外、同类商户也少有交易的时段）：疑似闭店时段虚构交易。",
            f("outside_usual_hours"),
            f("redemptions"),
            percent(f("share_permille")),
        ),
        Signal::FarAndFast => format!(
            "{} 笔券（共 {} 笔）在领取后 {} 分钟内即在本店核销，而持券市民的户籍在外市或外省（加权占 {}）：疑似收集外地账号由商户集中套现。",
            f("far_and_fast"),
            f("redemptions"),
            f("minutes"),
            percent(f("share_permille")),
        ),
    }
}

/// The signal's short name, for a table heading.
pub fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::AtThreshold => "门槛整额",
        Signal::HourlyRate => "核销过密",
        Signal::RepeatCitizens => "同人反复",
        Signal::DistinctBurst => "短时多人",
        Signal::Reversals => "核销后撤销",
        Signal::OddHours => "非营业时段",
        Signal::FarAndFast => "外地即领即用",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_is_explained_with_its_figures() {
        let figures: BTreeMap<&'static str, i64> = [
            ("at_threshold", 27),
            ("with_threshold", 30),
            ("share_permille", 900),
            ("baseline_permille", 150),
        ]
        .into_iter()
        .collect();
        let text = explanation(Signal::AtThreshold, &figures);
        assert!(text.contains("27 笔") && text.contains("90.0%") && text.contains("15.0%"), "{text}");
        for signal in Signal::ALL {
            assert!(!explanation(signal, &BTreeMap::new()).is_empty());
            assert!(!signal_name(signal).is_empty());
        }
    }
}
