//! `ffrtmp-node demo`: the demo of `ffrtmp demo` ([`ffrtmp_cli::demo`]),
//! its standalone node started in this process with this command's node
//! flags instead of as a child process.

use std::path::{Path, PathBuf};

use ffrtmp_actors::standalone::{self, Standalone, StandaloneConfig};
use ffrtmp_cli::demo::{DemoNode, DemoSetup, DEMO_CGROUP_PARENT};

/// A standalone node in this process, as the demo drives it.
struct InProcess {
    node: Standalone,
    media: PathBuf,
}

impl DemoNode for InProcess {
    fn base_url(&self) -> String {
        format!("http://{}", self.node.http)
    }

    fn media_root(&self) -> PathBuf {
        self.media.clone()
    }

    async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

/// Run the demo: `config` builds the node's configuration for a data dir
/// (the demo then listens on a free loopback port, under its own cgroup
/// parent). Jobs encode `duration` seconds of video each.
pub async fn run(
    duration: f64,
    keep: bool,
    config: impl FnOnce(&Path) -> anyhow::Result<StandaloneConfig>,
) -> anyhow::Result<()> {
    ffrtmp_cli::demo::run(duration, keep, |setup: DemoSetup| async move {
        let mut cfg = config(&setup.data_dir)?;
        if let Some(bin) = setup.vmaf_bin {
            cfg.vmaf_bin = Some(bin);
        }
        cfg.http = "127.0.0.1:0".parse()?;
        cfg.cgroup_parent = DEMO_CGROUP_PARENT.to_string();
        let media = cfg.media_roots.first().map_or(setup.media, Clone::clone);
        let node = standalone::start(cfg).await?;
        Ok(InProcess { node, media })
    })
    .await
}
