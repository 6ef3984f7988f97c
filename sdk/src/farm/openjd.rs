//! The studio path: a [`Chain`](super::Chain) as an Open Job Description job template
//! ([`openjd_template`], whose docs say what it holds and how it reaches Deadline Cloud, OpenCue,
//! Tractor and Houdini PDG), and the `hostloop-worker openjd` subcommand that prints one.

use std::fmt::Write as _;
use std::path::{Component, Path};
use std::process::ExitCode;

use super::{ChainSpec, FarmError, Word, CACHE_FILE};

/// The specification version the template follows.
const SPECIFICATION_VERSION: &str = "jobtemplate-2023-09";

/// The [Open Job Description] job template of the chain `spec` describes — the job format AWS
/// Deadline Cloud runs, and that `openjd run` runs locally: one step per segment, each
/// depending on the one before, each running the segment's `hostloop-worker run` command line.
/// `hostloop-worker openjd` prints it.
///
/// The template is JSON (which is also YAML), `specificationVersion: jobtemplate-2023-09`. Its
/// command lines are the ones [`Chain::submit`](super::Chain::submit) gives Slurm, word for
/// word (one function builds both), with the paths made job parameters so that one template
/// serves any machine:
///
/// | job parameter | type | what | the runner's argument |
/// |---|---|---|---|
/// | `Worker` | `STRING` | the `hostloop-worker` program on the worker hosts: a path, or a name their `PATH` finds | the command |
/// | `Plugin` | `PATH` (file, in) | the simulation plugin | `PLUGIN` |
/// | `RunDir` | `PATH` (directory, in and out) | the run's directory, on storage every worker host sees | `--save {{Param.RunDir}}/segment-<i>.state`, `--cache {{Param.RunDir}}/frames.hlcache` |
/// | `Configure` | `STRING` (only with [`ChainSpec::configure`]) | the settings of a fresh start | `--configure` |
/// | `Restore` | `PATH` (file, in; only with [`ChainSpec::restore`]) | the state the chain starts from | `--restore` of the first segment |
///
/// A submission gives their values (`openjd run -p RunDir=/shared/run1 ...`, `deadline bundle
/// submit -p RunDir=/shared/run1 ...`); the spec's values are only defaults. Open Job
/// Description joins a `PATH` parameter's default to the template's directory (`openjd`
/// refuses an absolute default, or one that walks up out of that directory), so a path of the
/// spec is a default only when it is relative and stays inside: a job bundle that carries its
/// plugin beside the template, say. An absolute path, like a shared run directory, is given at
/// submission; a relative value given there is joined to the submitter's current directory.
/// `Worker` is a string, not a `PATH`, so that a bare `hostloop-worker` is looked up on the
/// worker host's `PATH` (where a Deadline Cloud queue environment or a studio's software
/// deployment puts it) rather than joined to the template's directory. The numbers — the
/// segments' `--until` targets, `--save-every` — are written into the template: they are the
/// chain's shape.
///
/// A job environment makes `RunDir` (`mkdir -p`) on each host before its first segment runs,
/// as [`Chain::submit`](super::Chain::submit) makes it before it submits.
///
/// # A step per segment, not one step with a task per segment
///
/// The obvious shape, one step whose task parameter is the segment index, cannot express a
/// chain: in Open Job Description the tasks of a step are independent units a scheduler may run
/// in any order and in parallel, and the only ordering the 2023-09 specification has is
/// between steps (`dependencies: [{dependsOn: <step>}]`: "the Task(s) of this Step may be
/// scheduled only when the depended-upon Step has fully completed successfully"). Segment `i`
/// restores the state segment `i - 1` saved, so the template has one step per segment,
/// `segment-0` … `segment-<n-1>`, each with a single task and each depending on the one before:
/// the same chain as Slurm's `--dependency=afterok`. `openjd run` runs them in that order
/// (it sorts the steps by their dependencies), and so does any conforming scheduler.
///
/// Each step also carries:
///
/// - `hostRequirements`: at least [`ChainSpec::cpus`] vCPUs (`amount.worker.vcpu`) on a
///   Linux host (`attr.worker.os.family`).
/// - `cancelation: NOTIFY_THEN_TERMINATE`: a cancelled task gets `SIGTERM`, on which the runner
///   saves its state at the next step boundary and exits (status 75), then `SIGKILL` after
///   120 s. Because every segment runs with `--resume`, a task the scheduler retries or moves
///   to another host goes on from that snapshot (or the last `--save-every` one) rather than
///   from the segment's start.
///
/// The runner's progress goes to the task's log as `step S/T ...` lines (`--progress lines`).
///
/// # Checked here, and on paper
///
/// `tests/tests/openjd.rs` writes the template of a small run, installs `openjd-cli` from PyPI
/// into a virtual environment under `target/`, validates the template with `openjd check`, runs
/// all its steps locally with `openjd run`, and checks that the final state and the frame cache
/// are byte-identical to the same steps run by one `hostloop-worker run`. What follows has not
/// been run here (no farm of these kinds can be stood up on this machine): it is how the same
/// template or command lines would reach each scheduler.
///
/// **AWS Deadline Cloud** takes the template as it is. A *job bundle* is a directory holding
/// `template.json` (or `template.yaml`) and optionally `parameter_values.json` (or `.yaml`) and
/// `asset_references`; the Deadline Cloud CLI (`pip install deadline`) submits it to the
/// configured farm and queue:
///
/// ```sh
/// mkdir -p bundle
/// hostloop-worker openjd --configure agents=1000000 --steps 5000 --segments 4 \
///     > bundle/template.json
/// openjd check bundle/template.json
/// deadline bundle submit -p Plugin=/shared/plugins/libhostloop_particles.so \
///     -p RunDir=/shared/run1 bundle
/// ```
///
/// `RunDir` must be storage every worker host of the fleet mounts (a shared filesystem, with the
/// queue's storage profiles mapping the paths): the segments hand their states over through it.
/// Moving those files with Deadline Cloud's job attachments instead is untried; see Deadline
/// Cloud's documentation for job attachments, storage profiles and the bundle's other files.
///
/// The other schedulers take command lines, not this template; each would run the segments'
/// command lines (one per segment, the same words as the template's `args`, or
/// [`Chain::submit`](super::Chain::submit)'s) in a chain of its own:
///
/// - **OpenCue** (pyoutline): a job of one `Shell` layer per segment, each with a one-frame
///   range and the segment's command line, each made to depend on the layer before it
///   (`depend_on`), so that Cuebot starts it once the previous layer is done. A frame Cuebot
///   retries goes on from the segment's last snapshot (`--resume`).
/// - **Tractor** (Pixar): a job script with one task per segment, each with one command (a
///   `RemoteCmd` in the Tcl job format, an `author.Command` from Python), the tasks the
///   subtasks of a parent with `serialsubtasks` set, so that they run one after another in
///   order.
/// - **Houdini PDG** (TOPs): one work item per segment, each running the segment's command
///   line, each waiting for the one before: one generator TOP per segment (a Generic
///   Generator with the command line) wired in series, or the iterations of a feedback loop
///   (one segment an iteration). The network's scheduler TOP (Local, HQueue, Deadline,
///   Tractor, or a Python Scheduler) then decides where each command runs.
///
/// None of these three has been run with hostloop; they are how their documented job models
/// fit a chain, on paper.
///
/// [Open Job Description]: https://github.com/OpenJobDescription/openjd-specifications
///
/// # Example
///
/// ```
/// use hostloop::farm::{openjd_template, ChainSpec};
///
/// let spec = ChainSpec::new("hostloop-worker", "libhostloop_particles.so", "/shared/run1")
///     .configure("agents=1000")
///     .steps(300)
///     .segments(3);
/// let template = openjd_template(&spec)?;
/// assert!(template.contains(r#""specificationVersion": "jobtemplate-2023-09""#));
/// assert!(template.contains(r#""dependsOn": "segment-1""#));
/// # Ok::<(), hostloop::farm::FarmError>(())
/// ```
///
/// # Errors
///
/// The spec both configures and restores, or one of its paths is not UTF-8 (a template is
/// text).
pub fn openjd_template(spec: &ChainSpec) -> Result<String, FarmError> {
    if spec.configure.is_some() && spec.restore.is_some() {
        return Err(FarmError(
            "a chain starts from a configuration or from a saved state, not both".into(),
        ));
    }
    let text = |p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| FarmError(format!("{} is not UTF-8", p.display())))
    };
    let path_param = |name: &str, path: &Path, kind: &str, flow: &str, what: &str| {
        let mut fields = vec![
            ("name", Json::str(name)),
            ("type", Json::str("PATH")),
            ("objectType", Json::str(kind)),
            ("dataFlow", Json::str(flow)),
            ("description", Json::str(what)),
        ];
        if let Some(default) = path_default(path) {
            fields.push(("default", Json::Str(text(default)?)));
        }
        Ok::<_, FarmError>(Json::Obj(fields))
    };
    let string_param = |name: &str, default: String, what: &str| {
        let mut fields = vec![
            ("name", Json::str(name)),
            ("type", Json::str("STRING")),
            ("description", Json::str(what)),
        ];
        if !default.is_empty() {
            fields.push(("default", Json::Str(default)));
        }
        Json::Obj(fields)
    };

    let mut params = vec![
        string_param(
            "Worker",
            text(&spec.worker)?,
            "The hostloop-worker program on the worker hosts: its path there, or a name \
             their PATH finds.",
        ),
        path_param(
            "Plugin",
            &spec.plugin,
            "FILE",
            "IN",
            "The simulation plugin (a shared library built on hostloop::plugin::SimPlugin).",
        )?,
        path_param(
            "RunDir",
            &spec.dir,
            "DIRECTORY",
            "INOUT",
            "The run's directory, on storage every worker host sees: each segment saves its \
             state there for the next one, and all of them append to its frame cache.",
        )?,
    ];
    if let Some(c) = &spec.configure {
        params.push(string_param(
            "Configure",
            c.clone(),
            "The plugin's key=value settings for a fresh start.",
        ));
    }
    if let Some((r, _)) = &spec.restore {
        params.push(path_param(
            "Restore",
            r,
            "FILE",
            "IN",
            "The saved state the chain starts from.",
        )?);
    }

    let n = u64::from(spec.segments);
    let mut steps = Vec::new();
    let mut from = spec.restore.as_ref().map_or(0, |r| r.1);
    for i in 0..n {
        let until = spec.segment_until(i);
        let mut words = spec.segment_command(i).into_iter().map(|w| match w {
            Word::Text(s) => s,
            Word::Worker => "{{Param.Worker}}".into(),
            Word::Plugin => "{{Param.Plugin}}".into(),
            Word::Configure => "{{Param.Configure}}".into(),
            Word::Restore => "{{Param.Restore}}".into(),
            Word::State(j) => format!("{{{{Param.RunDir}}}}/{}", super::state_file(j)),
            Word::Cache => format!("{{{{Param.RunDir}}}}/{CACHE_FILE}"),
        });
        let command = words.next().expect("a command line has a program");
        let args: Vec<Json> = words.map(Json::Str).collect();
        let mut step = vec![
            ("name", Json::Str(step_name(i))),
            (
                "description",
                Json::Str(format!(
                    "Segment {} of {n}: steps {from} to {until}, from {}.",
                    i + 1,
                    match (i, &spec.restore) {
                        (0, Some(_)) => "the Restore state".to_string(),
                        (0, None) => "a fresh start".to_string(),
                        _ => format!("the state {} saved", step_name(i - 1)),
                    }
                )),
            ),
        ];
        if i > 0 {
            step.push((
                "dependencies",
                Json::Arr(vec![Json::Obj(vec![(
                    "dependsOn",
                    Json::Str(step_name(i - 1)),
                )])]),
            ));
        }
        step.push((
            "hostRequirements",
            Json::Obj(vec![
                (
                    "amounts",
                    Json::Arr(vec![Json::Obj(vec![
                        ("name", Json::str("amount.worker.vcpu")),
                        ("min", Json::Num(u64::from(spec.cpus))),
                    ])]),
                ),
                (
                    "attributes",
                    Json::Arr(vec![Json::Obj(vec![
                        ("name", Json::str("attr.worker.os.family")),
                        ("anyOf", Json::Arr(vec![Json::str("linux")])),
                    ])]),
                ),
            ]),
        ));
        step.push((
            "script",
            Json::Obj(vec![(
                "actions",
                Json::Obj(vec![(
                    "onRun",
                    Json::Obj(vec![
                        ("command", Json::Str(command)),
                        ("args", Json::Arr(args)),
                        (
                            "cancelation",
                            Json::Obj(vec![
                                ("mode", Json::str("NOTIFY_THEN_TERMINATE")),
                                ("notifyPeriodInSeconds", Json::Num(120)),
                            ]),
                        ),
                    ]),
                )]),
            )]),
        ));
        steps.push(Json::Obj(step));
        from = until;
    }

    let job = Json::Obj(vec![
        ("specificationVersion", Json::str(SPECIFICATION_VERSION)),
        (
            "name",
            Json::Str(format!(
                "hostloop simulation: {} steps in {n} segments",
                spec.steps
            )),
        ),
        (
            "description",
            Json::str(
                "A hostloop simulation run as chained `hostloop-worker run` segments, each \
                 restoring the state the one before saved (hostloop::farm::openjd_template).",
            ),
        ),
        ("parameterDefinitions", Json::Arr(params)),
        (
            "jobEnvironments",
            Json::Arr(vec![Json::Obj(vec![
                ("name", Json::str("RunDir")),
                (
                    "description",
                    Json::str(
                        "Makes the run's directory (as Chain::submit does before it submits), \
                         on every host before its first segment.",
                    ),
                ),
                (
                    "script",
                    Json::Obj(vec![(
                        "actions",
                        Json::Obj(vec![(
                            "onEnter",
                            Json::Obj(vec![
                                ("command", Json::str("mkdir")),
                                (
                                    "args",
                                    Json::Arr(vec![Json::str("-p"), Json::str("{{Param.RunDir}}")]),
                                ),
                            ]),
                        )]),
                    )]),
                ),
            ])]),
        ),
        ("steps", Json::Arr(steps)),
    ]);
    let mut out = String::new();
    job.write(&mut out, 0);
    out.push('\n');
    Ok(out)
}

/// The name of segment `i`'s step.
fn step_name(i: u64) -> String {
    format!("segment-{i}")
}

/// The default a `PATH` job parameter can have for `path`: Open Job Description joins a
/// default to the template's directory, and `openjd` refuses one that is absolute or walks up
/// out of that directory, so only a relative path that stays inside it is a default. Any other
/// is given when the job is submitted.
fn path_default(path: &Path) -> Option<&Path> {
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (inside && !path.as_os_str().is_empty()).then_some(path)
}

/// What `hostloop-worker openjd --help` prints.
const USAGE: &str = "\
usage: hostloop-worker openjd [OPTIONS] [PLUGIN]

Prints an Open Job Description job template (jobtemplate-2023-09, JSON) for a
simulation run as chained `hostloop-worker run` segments: the command lines
hostloop::farm::Chain submits to Slurm, one step per segment, each step depending
on the one before. Validate and run it locally with openjd-cli (`openjd check`,
`openjd run`), or submit it to AWS Deadline Cloud as a job bundle (a directory
holding it as template.json: `deadline bundle submit DIR`).

The chain (written into the template):
  --configure TEXT     key=value settings for a fresh start (job parameter Configure)
  --restore FILE       start from this saved state instead (job parameter Restore)
  --restore-step STEP  the step that state is at (default 0)
  --steps N            steps in all (default 1000)
  --segments N         chained segments, a step of the template each (default 1)
  --save-every K       each segment also saves every K steps
  --no-cache           write no frame cache (default: RunDir/frames.hlcache)
  --cpus N             vCPUs each segment needs (default 1)

Job parameters, given when the job is submitted (-p NAME=VALUE); these set defaults:
  --worker PROGRAM     Worker: the hostloop-worker program on the worker hosts, a path
                       or a name on their PATH (default: hostloop-worker)
  --dir DIR            RunDir: the run's directory, on storage every worker host sees
  PLUGIN               Plugin: the simulation plugin
A path default must be relative, and is resolved against the template's directory
(a job bundle carrying its files); an absolute path can only be given at submission.

  -h, --help           this text

Example, 5000 steps in 4 segments, run locally:
  hostloop-worker openjd --configure agents=1000000 --steps 5000 --segments 4 \\
      > bundle/template.json
  openjd run bundle/template.json -p Worker=$PWD/target/release/hostloop-worker \\
      -p Plugin=$PWD/target/release/libhostloop_particles.so -p RunDir=/shared/run1
";

/// The `hostloop-worker openjd` subcommand's body: `args` are the arguments after `openjd`.
/// Prints the template on stdout; exit status 0, or 2 for bad arguments.
pub fn openjd_main(args: &[String]) -> ExitCode {
    match parse(args) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(spec)) => match openjd_template(&spec) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hostloop-worker openjd: {e}");
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("hostloop-worker openjd: {e}");
            eprintln!("(hostloop-worker openjd --help for the options)");
            ExitCode::from(2)
        }
    }
}

/// Parses the arguments after `openjd`. `Ok(None)` for `--help`.
fn parse(args: &[String]) -> Result<Option<ChainSpec>, String> {
    let (mut configure, mut restore, mut restore_step) = (None, None, 0);
    let (mut steps, mut segments, mut save_every) = (1000, 1, None);
    let (mut cache, mut cpus) = (true, 1);
    let (mut dir, mut worker, mut plugin) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a whole number, not {v:?}"))
        };
        let above_zero = |name: &str, n: u64| match n {
            0 => Err(format!("{name} needs a number above 0")),
            n => Ok(n),
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--configure" => configure = Some(value(a)?),
            "--restore" => restore = Some(value(a)?),
            "--restore-step" => restore_step = number(a, value(a)?)?,
            "--steps" => steps = above_zero(a, number(a, value(a)?)?)?,
            "--segments" => {
                segments = u32::try_from(above_zero(a, number(a, value(a)?)?)?)
                    .map_err(|_| "--segments is too large".to_string())?;
            }
            "--save-every" => save_every = Some(above_zero(a, number(a, value(a)?)?)?),
            "--no-cache" => cache = false,
            "--cpus" => {
                cpus = u32::try_from(above_zero(a, number(a, value(a)?)?)?)
                    .map_err(|_| "--cpus is too large".to_string())?;
            }
            "--dir" => dir = Some(value(a)?),
            "--worker" => worker = Some(value(a)?),
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s => match plugin {
                None => plugin = Some(s.to_owned()),
                Some(_) => return Err(format!("one plugin only: {s:?} is extra")),
            },
        }
    }
    for (name, path) in [("RunDir", &dir), ("Plugin", &plugin), ("Restore", &restore)] {
        if let Some(p) = path
            .as_deref()
            .filter(|p| path_default(Path::new(p)).is_none())
        {
            eprintln!(
                "hostloop-worker openjd: note: {p} is not a default of {name} (a default is a \
                 relative path inside the template's directory): give -p {name}={p} when you \
                 submit the job"
            );
        }
    }
    if u64::from(segments) > steps {
        return Err(format!("{segments} segments for {steps} steps"));
    }
    if configure.is_some() && restore.is_some() {
        return Err("--configure is for a fresh start; a restored state keeps its own".into());
    }
    let worker = worker.unwrap_or_else(|| "hostloop-worker".into());
    let mut spec = ChainSpec::new(worker, plugin.unwrap_or_default(), dir.unwrap_or_default())
        .steps(steps)
        .segments(segments)
        .cache(cache)
        .cpus(cpus);
    if let Some(c) = configure {
        spec = spec.configure(c);
    }
    if let Some(r) = restore {
        spec = spec.restore(r, restore_step);
    }
    if let Some(k) = save_every {
        spec = spec.save_every(k);
    }
    Ok(Some(spec))
}

/// Just enough JSON for a template: strings, whole numbers, arrays and objects (fields in the
/// order given), written with two-space indents.
#[derive(Debug)]
enum Json {
    Str(String),
    Num(u64),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Str(s) => write_str(out, s),
            Json::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (k, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(out, indent + 2);
                    out.push_str(if k + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (k, (name, value)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    write_str(out, name);
                    out.push_str(": ");
                    value.write(out, indent + 2);
                    out.push_str(if k + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string literal.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChainSpec {
        ChainSpec::new("hostloop-worker", "libhostloop_particles.so", "run")
            .configure("agents=1000")
            .steps(300)
            .segments(3)
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn one_step_per_segment_each_after_the_one_before() {
        let t = openjd_template(&spec()).unwrap();
        for i in 0..3 {
            assert!(t.contains(&format!(r#""name": "segment-{i}""#)), "{t}");
        }
        assert!(!t.contains(r#""dependsOn": "segment-2""#), "{t}");
        assert!(t.contains(r#""dependsOn": "segment-0""#), "{t}");
        assert!(t.contains(r#""dependsOn": "segment-1""#), "{t}");
        assert!(t.contains(r#""{{Param.RunDir}}/segment-1.state""#), "{t}");
        assert_eq!(t.matches(r#""--until""#).count(), 3);
        assert!(t.contains(r#""300""#), "{t}");
    }

    #[test]
    fn the_command_lines_are_the_chains() {
        // Every word of Chain::submit's command line is in the template, in order, its paths
        // replaced by the job parameters.
        let spec = spec().save_every(10);
        let t = openjd_template(&spec).unwrap();
        for i in 0..3 {
            let words: Vec<String> = spec
                .segment_command(i)
                .into_iter()
                .skip(1)
                .map(|w| match w {
                    Word::Text(s) => s,
                    Word::Plugin => "{{Param.Plugin}}".into(),
                    Word::Configure => "{{Param.Configure}}".into(),
                    Word::State(j) => format!("{{{{Param.RunDir}}}}/segment-{j}.state"),
                    Word::Cache => "{{Param.RunDir}}/frames.hlcache".into(),
                    other => panic!("{other:?}"),
                })
                .collect();
            let mut expected = String::new();
            Json::Arr(words.into_iter().map(Json::Str).collect()).write(&mut expected, 12);
            assert!(t.contains(&expected), "{expected}\nnot in\n{t}");
        }
    }

    #[test]
    fn configure_and_restore_together_is_an_error() {
        assert!(openjd_template(&spec().restore("s.state", 5)).is_err());
    }

    #[test]
    fn the_cli_builds_the_same_spec() {
        let args: Vec<String> = [
            "--configure",
            "agents=1000",
            "--steps",
            "300",
            "--segments",
            "3",
            "--worker",
            "hostloop-worker",
            "--dir",
            "run",
            "libhostloop_particles.so",
        ]
        .map(String::from)
        .to_vec();
        let parsed = parse(&args).unwrap().unwrap();
        assert_eq!(
            openjd_template(&parsed).unwrap(),
            openjd_template(&spec()).unwrap()
        );
        assert!(parse(&["--steps".to_string()]).is_err(), "no value");
    }
}
