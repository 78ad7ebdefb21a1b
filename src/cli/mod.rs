//! Command-line interface: every flag also reads an environment variable.

mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use serve::{
    fatal_json_line, run, run_with_router, HistoryArgs, LimitArgs, LogFormat, PolicySourceArg,
    ServeArgs, ServeCommandError,
};

#[derive(Debug, Parser)]
#[command(
    name = "spark-admission",
    version,
    about = "Admission webhook that applies platform policies to pods created by spark-submit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook (defaults: ./policies, ./certs generated on first start, :8443 and admin :8080).
    Serve(ServeArgs),
    /// Write a CA and serving certificate for a cluster install and print the caBundle.
    Certs(crate::certs::CertsArgs),
    /// Show what the policies would do to a pod or AdmissionReview (exit 0 allowed, 1 denied, 2 bad input).
    Explain(ExplainArgs),
    /// Check policy files or folders against the schema (for GitOps CI); non-zero exit on any error.
    CheckPolicies(CheckPoliciesArgs),
    /// Run policy test cases (spark-admission-test.yaml files) for GitOps CI (exit 0 pass, 1 failed expectation, 2 bad input).
    Test(TestArgs),
    /// Print the JSON Schema of the policy format (or of the test file format).
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy folder or file.
    #[arg(long, env = "SPARK_ADMISSION_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Namespace of the pod (default: from the review or the pod, else "default").
    #[arg(long, env = "SPARK_ADMISSION_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, env = "SPARK_ADMISSION_OUTPUT")]
    pub output: OutputFormat,
    /// Name of the driver's Spark container.
    #[arg(long, env = "SPARK_ADMISSION_DRIVER_CONTAINER", default_value = crate::spark::DEFAULT_DRIVER_CONTAINER)]
    pub driver_container: String,
    /// Name of the executors' Spark container.
    #[arg(long, env = "SPARK_ADMISSION_EXECUTOR_CONTAINER", default_value = crate::spark::DEFAULT_EXECUTOR_CONTAINER)]
    pub executor_container: String,
    /// The memory raises remembered after OOMKilled pods, as `kubectl get configmap -l
    /// spark-admission.io/memory-state=true -o yaml` prints them: shows the raise that
    /// would apply to the pod (memoryOnOOM).
    #[arg(long, env = "SPARK_ADMISSION_MEMORY_STATE")]
    pub memory_state: Option<PathBuf>,
    /// A Pod or an AdmissionReview, JSON or YAML; `-` reads standard input.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The JSON Patch the webhook would send.
    Patch,
    /// The pod after the patch.
    Pod,
    /// Each change with the policy and field that caused it, warnings and rule verdicts.
    Table,
}

#[derive(Debug, Args)]
pub struct CheckPoliciesArgs {
    /// Policy files or folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Files or folders; folders are searched recursively for `spark-admission-test.yaml`.
    /// The env var holds one path (no delimiter, so that no path is ever split).
    #[arg(env = "SPARK_ADMISSION_TEST_PATH", default_value = ".")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = TestOutput::Text, env = "SPARK_ADMISSION_TEST_OUTPUT")]
    pub output: TestOutput,
    /// Also write a JUnit XML report to this file.
    #[arg(long, env = "SPARK_ADMISSION_TEST_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Rewrite the expectations of failing (and empty) cases with the current results; review the diff.
    #[arg(long, env = "SPARK_ADMISSION_TEST_UPDATE")]
    pub update: bool,
    /// Name of the driver's Spark container.
    #[arg(long, env = "SPARK_ADMISSION_DRIVER_CONTAINER", default_value = crate::spark::DEFAULT_DRIVER_CONTAINER)]
    pub driver_container: String,
    /// Name of the executors' Spark container.
    #[arg(long, env = "SPARK_ADMISSION_EXECUTOR_CONTAINER", default_value = crate::spark::DEFAULT_EXECUTOR_CONTAINER)]
    pub executor_container: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestOutput {
    /// A line per case, a diff per failed expectation, a summary.
    Text,
    /// The whole report as one JSON document.
    Json,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which format.
    #[arg(long, value_enum, default_value_t = SchemaKind::Policy, env = "SPARK_ADMISSION_SCHEMA_KIND")]
    pub kind: SchemaKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// SparkPodPolicy documents (`policies/schema.json`).
    Policy,
    /// spark-admission-test.yaml files (`policies/tests/schema.json`).
    Test,
}
