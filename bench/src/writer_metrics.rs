//! What the claim writer did during a rush, read from each node's `/metrics` after it: how many
//! groups it committed, how large they were and how long their commits took. A slow rush shows
//! there whether its groups were smaller (claims reaching the writer more slowly) or slower to
//! commit (the database's side).

use std::time::Duration;

use wenhui::telemetry::{CLAIM_WRITER, WRITER_COMMIT_SECONDS, WRITER_GROUP_SIZE};

/// The claim writer's groups on one node, since it started.
#[derive(Debug, PartialEq)]
pub struct WriterFigures {
    pub groups: u64,
    pub mean_group_size: f64,
    pub mean_commit_ms: f64,
}

/// The figures of the writer labelled `writer` in a Prometheus exposition, if it committed any
/// group.
pub fn parse(exposition: &str, writer: &str) -> Option<WriterFigures> {
    let sample = |histogram: &str, part: &str| -> Option<f64> {
        let series = format!("{histogram}_{part}{{writer=\"{writer}\"}} ");
        exposition.lines().find_map(|line| line.strip_prefix(&series)).and_then(|v| v.trim().parse().ok())
    };
    let groups = sample(WRITER_GROUP_SIZE, "count")?;
    if groups < 1.0 {
        return None;
    }
    let claims = sample(WRITER_GROUP_SIZE, "sum")?;
    let commit_s = sample(WRITER_COMMIT_SECONDS, "sum")?;
    let commits = sample(WRITER_COMMIT_SECONDS, "count")?.max(1.0);
    Some(WriterFigures {
        groups: groups as u64,
        mean_group_size: claims / groups,
        mean_commit_ms: commit_s * 1_000.0 / commits,
    })
}

/// Reads `/metrics` of every node and prints its claim writer's figures under `label`; a node
/// that cannot be read is said so, and the rush's figures stand without it.
pub async fn print_claim_writers(base_urls: &[String], label: &str) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(client) => client,
        Err(error) => return println!("{label} claim writer: no client ({error})"),
    };
    for (n, base) in base_urls.iter().enumerate() {
        let read =
            async { client.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await };
        let node = if base_urls.len() > 1 { format!(" on node {}", n + 1) } else { String::new() };
        match read.await.map(|text| parse(&text, CLAIM_WRITER)) {
            Ok(Some(f)) => println!(
                "{label} claim writer{node}: {} groups, mean {:.1} claims a group, mean commit {:.2} ms",
                f.groups, f.mean_group_size, f.mean_commit_ms
            ),
            Ok(None) => println!("{label} claim writer{node}: no group committed"),
            Err(error) => println!("{label} claim writer{node}: /metrics not read ({error})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{WriterFigures, parse};

    #[test]
    fn reads_the_claim_writers_histograms_not_the_redemption_writers() {
        let text = "\
# HELP wenhui_writer_group_size Requests committed in one transaction by a writer.
wenhui_writer_group_size_bucket{writer=\"claims\",le=\"+Inf\"} 200
wenhui_writer_group_size_sum{writer=\"claims\"} 20000
wenhui_writer_group_size_count{writer=\"claims\"} 200
wenhui_writer_group_size_sum{writer=\"redemptions\"} 7
wenhui_writer_group_size_count{writer=\"redemptions\"} 7
wenhui_writer_commit_seconds_sum{writer=\"claims\"} 0.9
wenhui_writer_commit_seconds_count{writer=\"claims\"} 200
";
        let figures = parse(text, "claims").expect("figures");
        assert_eq!((figures.groups, figures.mean_group_size), (200, 100.0));
        assert!((figures.mean_commit_ms - 4.5).abs() < 1e-9, "{figures:?}");
        let none = text.replace("_count{writer=\"claims\"} 200", "_count{writer=\"claims\"} 0");
        assert_eq!(parse(&none, "claims"), None::<WriterFigures>);
        assert_eq!(parse("", "claims"), None);
    }
}
