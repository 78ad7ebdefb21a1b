use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use spark_admission::cli::{
    CheckPoliciesArgs, Cli, Command, ExplainArgs, LogFormat, OutputFormat, SchemaArgs, SchemaKind,
    TestArgs, TestOutput,
};
use spark_admission::engine::Engine;
use spark_admission::explain::{explain_remembering, read_input, render_table};
use spark_admission::matching::PolicySet;
use spark_admission::policytest::{self, Outcome};
use spark_admission::source::load_paths;
use spark_admission::spark::ContainerNames;

// Planning a pod makes many small allocations: a quarter of the engine's time under glibc
// malloc (callgrind), about half that under mimalloc. And glibc kept hundreds of MiB of
// freed memory after a burst of large reviews, where mimalloc gives it back
// (tests/server/memory.rs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refuse_command_line(e),
    };
    // `serve` with JSON logs ends with a JSON line too: log pipelines and the pod's
    // termination message (FallbackToLogsOnError) then carry why it stopped.
    let json_errors = matches!(&cli.command, Command::Serve(a) if a.log_format == LogFormat::Json);
    let result = match cli.command {
        Command::Serve(args) => spark_admission::cli::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Certs(args) => spark_admission::certs::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Explain(args) => run_explain(args),
        Command::CheckPolicies(args) => Ok(run_check(args)),
        Command::Test(args) => run_test(args),
        Command::Schema(args) => print_schema(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if json_errors => {
            // On stdout, after the log lines it belongs with.
            println!(
                "{}",
                spark_admission::cli::fatal_json_line("serve stopped", &format!("{e:#}"))
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A command line clap refuses. `serve` logs JSON by default, so a flag or environment
/// value mistyped in a Deployment is said as one JSON line like its other fatal errors
/// (else the log pipeline gets clap's unparsed text and the usage). Help and version, and
/// every other command, print as clap does.
fn refuse_command_line(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    // Lossy: `env::args` would panic on an argument that is not UTF-8, which clap refuses
    // as an error of its own.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let format = std::env::var("SPARK_ADMISSION_LOG_FORMAT").ok();
    if shown || !serve_logs_json(&args, format.as_deref()) {
        e.exit()
    }
    // The error and clap's tips ("a similar argument exists"), without the usage text.
    let text = e.render().to_string();
    let said = text.split("Usage:").next().unwrap_or_default();
    let error = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join("; ");
    let error = error.strip_prefix("error: ").unwrap_or(&error);
    println!(
        "{}",
        spark_admission::cli::fatal_json_line("serve did not start: invalid command line", error)
    );
    ExitCode::from(2)
}

/// Whether a command line that did not parse was `serve` with JSON logs: its first word,
/// and the last `--log-format` given, else the environment's, else JSON (the default).
fn serve_logs_json(args: &[String], env_format: Option<&str>) -> bool {
    if args.first().map(String::as_str) != Some("serve") {
        return false;
    }
    let mut format = env_format;
    let mut words = args.iter().map(String::as_str);
    while let Some(word) = words.next() {
        if word == "--log-format" {
            format = words.next();
        } else if let Some(v) = word.strip_prefix("--log-format=") {
            format = Some(v);
        }
    }
    format != Some("text")
}

/// mimalloc's defaults keep memory committed for speed: arenas are committed eagerly and
/// freed pages are purged only after 10 ms. A 1,000-policy server then peaked at 77-81 MiB;
/// with lazy arena commit and a 1 ms purge delay, at ~50 (0 policies: 31 -> 18 MiB).
/// Purging at once (delay 0) saved ~1 MiB more but cost ~20% of the request rate
/// (scripts/bench-nginx.sh, BENCHMARKS.md). `MIMALLOC_ARENA_EAGER_COMMIT` and
/// `MIMALLOC_PURGE_DELAY` in the environment still win.
///
/// This must run before the first allocation creates mimalloc's first arena (set from
/// `main`, RSS stayed at ~59 MiB): it is a loader constructor, after mimalloc's own (which
/// has priority 101 and reads the environment) and before Rust's `main`. It must not
/// allocate.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn tune_allocator() {
    // Option numbers of mimalloc's `mi_option_t` (the same in its v2 and v3 headers);
    // libmimalloc-sys names these two only with its `extended` feature.
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    for (option, env, value) in [
        (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 1),
    ] {
        // SAFETY: getenv with a NUL-terminated name, before any other thread exists;
        // mi_option_set is mimalloc's documented setter, with valid option numbers.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() {
                mi_option_set(option, value);
            }
        }
    }
}

fn run_explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let text = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let input = read_input(&text)?;
    let (policies, errors) = load_paths(std::slice::from_ref(&args.policies));
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::bail!(
            "{} policy error(s) in {}",
            errors.len(),
            args.policies.display()
        );
    }
    let set = PolicySet::new(policies);
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let engine = Engine::new(ContainerNames {
        driver: args.driver_container,
        executor: args.executor_container,
    });
    let remembered = match &args.memory_state {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            spark_admission::memory::read_exported(&text)
                .with_context(|| format!("reading the memory state in {}", path.display()))?
        }
        None => Default::default(),
    };
    let now = spark_admission::memory::now();
    let report = explain_remembering(&engine, &set, &input, args.namespace.as_deref(), |key| {
        remembered.get(key).filter(|e| e.expires > now).cloned()
    })?;
    if let Some(note) = report.namespace_note() {
        eprintln!("note: {note}");
    }
    match args.output {
        OutputFormat::Patch => {
            println!("{}", serde_json::to_string_pretty(&report.mutation.patch)?)
        }
        OutputFormat::Pod => println!("{}", serde_json::to_string_pretty(&report.mutated)?),
        OutputFormat::Table => print!("{}", render_table(&report)),
    }
    if args.output != OutputFormat::Table {
        for w in &report.mutation.warnings {
            eprintln!("warning: {w}");
        }
        for f in &report.validation.findings {
            eprintln!("{:?}: {}", f.mode, f.message);
        }
    }
    Ok(if report.denied() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_check(args: CheckPoliciesArgs) -> ExitCode {
    let (policies, errors) = load_paths(&args.paths);
    let set = PolicySet::new(policies);
    for e in &errors {
        println!("{e}");
    }
    for w in &set.warnings {
        println!("warning: {w}");
    }
    if errors.is_empty() {
        eprintln!("{} policies OK", set.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("{} error(s)", errors.len());
        ExitCode::from(1)
    }
}

fn print_schema(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = match args.kind {
        SchemaKind::Policy => spark_admission::policy::schema_json(),
        SchemaKind::Test => policytest::test_schema_json(),
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when every expectation holds, 1 when one does not, 2 when a test file cannot be
/// run (bad input), so CI can tell a policy regression from a broken test setup.
fn run_test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(ContainerNames {
        driver: args.driver_container,
        executor: args.executor_container,
    });
    let report = policytest::run_paths(&args.paths, &engine, args.update)?;
    match args.output {
        TestOutput::Text => print!("{}", policytest::render_text(&report)),
        TestOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, policytest::render_junit(&report))
            .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    }
    Ok(match report.outcome() {
        Outcome::Passed => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::BadInput => ExitCode::from(2),
    })
}
