//! `--nodes N`: N `wenhui serve` processes on one database, as docs/operations.md ("Running many
//! nodes") describes: each with its own port and data directory, all with one keys directory
//! (`--keys-dir`), so that they share the citizen HMAC secret, the QR keys and the checkpoint key.
//! The first node creates the secrets on its first start; the others start once it is ready.

use std::path::Path;

use anyhow::{Context, ensure};
use tempfile::TempDir;

use crate::claims::ServerUnderTest;

/// Running nodes over one database; killed if dropped without [`Fleet::stop`].
pub(crate) struct Fleet {
    nodes: Vec<ServerUnderTest>,
    /// The data directories and the shared keys directory, removed after the nodes (declared
    /// after them, so dropped after them).
    _dirs: Vec<TempDir>,
}

impl Fleet {
    /// Starts `count` nodes of `exe` on `database_url`, one after the other (each ready before
    /// the next starts).
    pub(crate) async fn start(exe: &Path, database_url: &str, count: u16) -> anyhow::Result<Fleet> {
        ensure!(count >= 1, "at least one node");
        let keys = tempfile::tempdir().context("creating the shared keys directory")?;
        let mut fleet = Fleet { nodes: Vec::new(), _dirs: Vec::new() };
        for index in 1..=count {
            let data = tempfile::tempdir().context("creating a node's data directory")?;
            let started =
                ServerUnderTest::start_node(exe, database_url, data.path(), Some(keys.path())).await;
            fleet._dirs.push(data);
            match started {
                Ok(node) => fleet.nodes.push(node),
                Err(error) => {
                    if let Err(stop_error) = fleet.stop().await {
                        tracing::warn!(%stop_error, "stopping the nodes already started");
                    }
                    return Err(error.context(format!("starting node {index} of {count}")));
                }
            }
        }
        fleet._dirs.push(keys);
        tracing::info!(nodes = count, "all nodes are ready");
        Ok(fleet)
    }

    /// Every node's base URL, in start order (node 1 first).
    pub(crate) fn base_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.base_url.clone()).collect()
    }

    /// A province_admin key, minted through the first node's environment.
    pub(crate) async fn mint_staff_key(&self) -> anyhow::Result<String> {
        self.nodes.first().context("no node running")?.mint_staff_key().await
    }

    /// Stops every node; the first error, after trying them all.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in self.nodes {
            if let Err(error) = node.stop().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
