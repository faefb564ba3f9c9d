//! Opening a job's files beneath the media roots (no symlink followed).

use super::*;

/// A file job's files, opened beneath the media roots.
#[derive(Default)]
pub(super) struct OpenedFiles {
    /// The input, and the demuxer its probe found.
    pub(super) input: Option<(std::fs::File, Option<String>)>,
    pub(super) input_duration_s: Option<f64>,
    pub(super) output: Option<OutputFile>,
}

/// Opens the job's input and creates its output's temporary file
/// ([`ffrtmp_os::confine`]); probes the input on its descriptor.
/// Every refusal is terminal and names the path.
pub(super) async fn open_job_files(args: &JobArgs) -> Result<OpenedFiles, Failure> {
    let a = &args.assignment;
    let resolver = Resolver::new(&args.media_roots);
    let refused = |e: ConfineError| Failure::new(e.reason(), e.to_string());
    let mut files = OpenedFiles::default();
    if let Input::File { path } = &a.spec.input {
        let file = resolver.open_input(path).map_err(refused)?;
        let probe = probe::probe_input(&args.ffprobe, &file)
            .await
            .map_err(|e| match e {
                ProbeError::NotAllowed { .. } => Failure::new(
                    FailureReason::InputRefused,
                    format!("{}: {e}", path.display()),
                ),
                // One that hangs (ffprobe is killed and reaped at the
                // timeout) fails the attempt: FFmpeg would hang on that
                // input the same way.
                ProbeError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::new(
                    FailureReason::ProbeTimeout,
                    format!(
                        "probing the input {} timed out, ffprobe was killed: {io}",
                        path.display()
                    ),
                ),
                ProbeError::Io(_) => Failure::new(
                    FailureReason::SpawnFailed,
                    format!("could not probe {}: {e}", path.display()),
                ),
            })?;
        files.input_duration_s = probe.duration_s;
        files.input = Some((file, probe.format));
    }
    if let Output::File { path } = &a.spec.output {
        let tag = format!("{}-{}", a.job_id, a.token);
        files.output = Some(
            resolver
                .create_output(path, &tag, a.spec.overwrite)
                .map_err(refused)?,
        );
    }
    Ok(files)
}
