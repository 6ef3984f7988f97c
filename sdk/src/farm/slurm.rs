//! The Slurm backend: `sbatch`, `scontrol` and `scancel`, run as commands.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use super::{Farm, FarmError, FarmJobId, JobSpec, JobState};

/// A Slurm cluster, reached through its commands (`sbatch`, `scontrol`, `scancel`) as a user
/// would: they read `SLURM_CONF` and find the controller from it. No daemon of hostloop's own,
/// no Slurm library linked.
///
/// Each job is a batch script written beside its log (`<log>.sh`: `exec` of the job's command
/// line, so the program gets Slurm's signals itself), submitted with `--requeue` (a pre-empted
/// or requeued job starts again) and, after another job, with `--dependency=afterok` and
/// `--kill-on-invalid-dep=yes` (it never runs if that one failed).
#[derive(Debug, Clone, Default)]
pub struct Slurm {
    bin: Option<PathBuf>,
    conf: Option<PathBuf>,
    partition: Option<String>,
}

impl Slurm {
    /// The cluster the Slurm commands on the `PATH` reach.
    pub fn new() -> Slurm {
        Slurm::default()
    }

    /// Runs the Slurm commands from `dir` instead of the `PATH`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Slurm {
        self.bin = Some(dir.into());
        self
    }

    /// Reaches the cluster of this `slurm.conf` (as `SLURM_CONF` does for the commands) rather
    /// than the one the environment names.
    pub fn conf(mut self, slurm_conf: impl Into<PathBuf>) -> Slurm {
        self.conf = Some(slurm_conf.into());
        self
    }

    /// Submits to `partition` instead of the cluster's default one.
    pub fn partition(mut self, partition: impl Into<String>) -> Slurm {
        self.partition = Some(partition.into());
        self
    }

    fn command(&self, name: &str) -> Command {
        let mut cmd = match &self.bin {
            Some(dir) => Command::new(dir.join(name)),
            None => Command::new(name),
        };
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd
    }

    /// Runs a Slurm command; its stdout, or an error naming it with what it said.
    fn run(&self, name: &str, args: &[OsString]) -> Result<String, FarmError> {
        let out = self.command(name).args(args).output().map_err(|e| {
            FarmError(format!(
                "cannot run {name} ({e}): is Slurm installed? (scripts/farm-up starts a local one)"
            ))
        })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(FarmError(format!("{name} failed ({}): {said}", out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `arg` quoted for a POSIX shell.
fn shell_quote(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// The value of `key=` in `scontrol show job -o` output.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Farm for Slurm {
    fn submit(&self, job: &JobSpec) -> Result<FarmJobId, FarmError> {
        let script = PathBuf::from(format!("{}.sh", job.log.display()));
        let line: Vec<String> = job.command.iter().map(|a| shell_quote(a)).collect();
        let text = format!(
            "#!/bin/sh\n# Written by hostloop's Slurm backend for job {:?}.\nexec {}\n",
            job.name,
            line.join(" ")
        );
        std::fs::write(&script, text)
            .map_err(|e| FarmError(format!("cannot write {}: {e}", script.display())))?;
        let mut args: Vec<OsString> = vec![
            "--parsable".into(),
            "--requeue".into(),
            "--open-mode=append".into(),
            format!("--job-name={}", job.name).into(),
            format!("--cpus-per-task={}", job.cpus.max(1)).into(),
        ];
        let mut chdir = OsString::from("--chdir=");
        chdir.push(&job.dir);
        args.push(chdir);
        let mut output = OsString::from("--output=");
        output.push(&job.log);
        args.push(output);
        if let Some(p) = &self.partition {
            args.push(format!("--partition={p}").into());
        }
        if let Some(after) = &job.after {
            args.push(format!("--dependency=afterok:{after}").into());
            args.push("--kill-on-invalid-dep=yes".into());
        }
        args.push(script.into_os_string());
        let out = self.run("sbatch", &args)?;
        // `--parsable`: "ID" or "ID;cluster".
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FarmError(format!("sbatch answered {out:?}, not a job id")));
        }
        Ok(FarmJobId(id))
    }

    fn state(&self, id: &FarmJobId) -> Result<(JobState, u32), FarmError> {
        let out = match self.run(
            "scontrol",
            &[
                "show".into(),
                "job".into(),
                "-o".into(),
                id.0.clone().into(),
            ],
        ) {
            Ok(out) => out,
            Err(e) if e.0.contains("Invalid job id") => return Ok((JobState::Unknown, 0)),
            Err(e) => return Err(e),
        };
        let line = out.lines().next().unwrap_or("");
        let restarts = field(line, "Restarts")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let state = match field(line, "JobState").unwrap_or("") {
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "CONFIGURING"
            | "RESIZING" | "SUSPENDED" => JobState::Pending,
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "CANCELLED" => match field(line, "Reason") {
                // A dependency that failed cancels its dependants: they failed, not the user.
                Some("DependencyNeverSatisfied") => {
                    JobState::Failed("the segment before it failed".into())
                }
                _ => JobState::Cancelled,
            },
            "" => JobState::Unknown,
            other => JobState::Failed(format!(
                "{other}, exit code {}, reason {}",
                field(line, "ExitCode").unwrap_or("?"),
                field(line, "Reason").unwrap_or("?")
            )),
        };
        Ok((state, restarts))
    }

    fn cancel(&self, id: &FarmJobId) -> Result<(), FarmError> {
        self.run("scancel", &[id.0.clone().into()]).map(drop)
    }

    fn requeue(&self, id: &FarmJobId) -> Result<(), FarmError> {
        self.run("scontrol", &["requeue".into(), id.0.clone().into()])?;
        // Slurm holds a requeued job back: once the stopped run has ended, its begin time is
        // set about two minutes ahead. A pre-empted simulation should go on as soon as a node
        // is free, so once the job is pending again (the run saved and exited), it is released.
        // Bounded: the run gets Slurm's KillWait to end, this waits a little longer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match self.state(id)?.0 {
                JobState::Pending => break,
                JobState::Running if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    return Err(FarmError(format!(
                        "job {id} was requeued but is {other:?}, not waiting to start again"
                    )))
                }
            }
        }
        self.run(
            "scontrol",
            &[
                "update".into(),
                format!("jobid={id}").into(),
                "StartTime=now".into(),
            ],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_scontrol_lines_and_shell_quoting() {
        let line =
            "JobId=7 JobName=hostloop-0 JobState=PENDING Reason=BeginTime Restarts=1 ExitCode=0:0";
        assert_eq!(field(line, "JobState"), Some("PENDING"));
        assert_eq!(field(line, "Restarts"), Some("1"));
        assert_eq!(field(line, "Job"), None);
        assert_eq!(shell_quote("a b'c".as_ref()), r"'a b'\''c'");
    }
}
