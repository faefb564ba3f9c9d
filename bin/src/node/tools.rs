//! The operator's one-shot subcommands: `ffrtmp-node pki` (certificates)
//! and `ffrtmp-node store` (inspect or repair the store offline).

use std::time::Duration;

use anyhow::Context;

use super::{PkiCommand, StoreCommand};

pub(super) fn run_pki(cmd: PkiCommand) -> anyhow::Result<()> {
    use ffrtmp_transport_quic::pki;
    match cmd {
        PkiCommand::Init { dir, sans } => {
            pki::init(&dir, &sans).with_context(|| format!("pki init in {}", dir.display()))?;
            let ca = pki::CertificateAuthority::load(&dir)?;
            println!(
                "cluster CA and master certificate written to {}",
                dir.display()
            );
            println!("CA fingerprint (sha256): {}", ca.fingerprint());
            Ok(())
        }
        PkiCommand::JoinToken { dir, ttl_hours } => {
            if ttl_hours == 0 || ttl_hours > 24 * 365 {
                anyhow::bail!("--ttl-hours must be between 1 and 8760");
            }
            let token = pki::create_join_token(
                &dir,
                Duration::from_secs(ttl_hours * 3600),
                ffrtmp_actors::now_ms(),
            )
            .with_context(|| format!("creating a join token in {}", dir.display()))?;
            println!("{}", token.to_string_token());
            Ok(())
        }
    }
}

/// `ffrtmp-node store check|salvage` (docs/CLI.md, docs/OPERATIONS.md).
/// Returns the exit status: 0, or 1 when `check` finds damage.
pub(super) fn run_store(cmd: StoreCommand) -> anyhow::Result<i32> {
    use ffrtmp_os::store;
    match cmd {
        StoreCommand::Check { data_dir } => {
            let path = data_dir.join("master.sled");
            let found = match store::check(&path) {
                Ok(found) => found,
                Err(e @ store::StoreError::Damaged { .. }) => {
                    println!("DAMAGED {}: {e}", path.display());
                    return Ok(1);
                }
                Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
            };
            println!("store: {}", path.display());
            println!("readable jobs: {}", found.readable);
            println!("writes counted in the store: {}", found.writes);
            match &found.side {
                Some(s) => println!(
                    "side file: {} writes durable{}",
                    s.writes,
                    s.records
                        .map(|n| format!(", closed cleanly with {n} jobs"))
                        .unwrap_or_default()
                ),
                None => println!("side file: none"),
            }
            if !found.undecodable.is_empty() {
                println!("undecodable records: {}", found.undecodable.join(" "));
            }
            if !found.lost_ids.is_empty() {
                println!(
                    "ids in the indexes without a record: {}",
                    found.lost_ids.join(" ")
                );
            }
            if found.problems.is_empty() {
                println!("OK");
                return Ok(0);
            }
            for p in &found.problems {
                println!("DAMAGED: {p}");
            }
            println!(
                "recover the readable jobs with: ffrtmp-node store salvage --data-dir {}",
                data_dir.display()
            );
            Ok(1)
        }
        StoreCommand::Salvage { data_dir, to } => {
            let (report, aside) = store::salvage_data_dir(&data_dir, to.as_deref())
                .with_context(|| format!("salvaging the job store in {}", data_dir.display()))?;
            let new_dir = to.as_deref().unwrap_or(&data_dir);
            println!(
                "recovered {} jobs into {}",
                report.recovered,
                new_dir.join("master.sled").display()
            );
            println!("the damaged store is kept at {}", aside.display());
            if let Some(why) = &report.stopped {
                println!("reading stopped early: {why}");
            }
            if let Some((first, last)) = report.lost_writes {
                println!(
                    "lost: job writes number {first} to {last} (submissions or state changes \
                     after the damage; jobs they created are not in the store)"
                );
            }
            if !report.undecodable.is_empty() {
                println!("lost (record unreadable): {}", report.undecodable.join(" "));
            }
            if !report.lost_ids.is_empty() {
                println!(
                    "lost (named by an index, no record): {}",
                    report.lost_ids.join(" ")
                );
            }
            if report.lost_writes.is_none()
                && report.undecodable.is_empty()
                && report.lost_ids.is_empty()
                && report.stopped.is_none()
            {
                println!("nothing known to be lost");
            }
            Ok(0)
        }
    }
}
