use super::*;
use crate::model::{
    AttemptRecord, Codec, DomainEnergy, Energy, MetricScore, PowerSource, QualityResult,
};
use proptest::prelude::*;

fn job(
    id: &str,
    scenario: Option<&str>,
    codec: Codec,
    node: &str,
    joules: f64,
    source: PowerSource,
    fps: f64,
) -> Job {
    let mut spec = crate::test_util::test_spec();
    spec.scenario = scenario.map(String::from);
    spec.encode.codec = codec;
    let mut j = Job::new(id.into(), 1, spec, 0);
    j.state = JobState::Succeeded;
    let result = JobResult {
        frames: 300,
        avg_fps: fps,
        output_duration_s: Some(30.0),
        ..JobResult::default()
    };
    let energy = Energy::new(
        vec![DomainEnergy {
            domain: "package-0".into(),
            source,
            joules,
        }],
        10.0,
        Some(300),
        Some(30.0),
    );
    j.attempts.push(AttemptRecord {
        attempt: 1,
        node: node.into(),
        started_ms: Some(0),
        ended_ms: Some(10_000),
        isolation: None,
        outcome: Some(Outcome::Succeeded {
            result: result.clone(),
        }),
        energy: Some(energy),
    });
    j.result = Some(result);
    j
}

/// A measured x264 job of `joules` per 30 s (2 × that per output minute).
fn x264(id: &str, joules: f64) -> Job {
    job(id, None, Codec::H264, "n1", joules, PowerSource::Rapl, 30.0)
}

fn score(mean: f64) -> MetricScore {
    MetricScore {
        mean,
        frames: 300,
        ..MetricScore::default()
    }
}

/// Sets the scores of `j`'s succeeding result.
fn with_quality(mut j: Job, vmaf: Option<f64>, psnr: Option<f64>, ssim: Option<f64>) -> Job {
    let q = QualityResult {
        vmaf: vmaf.map(score),
        psnr: psnr.map(score),
        ssim: ssim.map(score),
        wall_s: 1.0,
        ..QualityResult::default()
    };
    for a in &mut j.attempts {
        if let Some(Outcome::Succeeded { result }) = &mut a.outcome {
            result.quality = Some(Box::new(q.clone()));
        }
    }
    j
}

mod properties;
mod quality;
mod rows;
