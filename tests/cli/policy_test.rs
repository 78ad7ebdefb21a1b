//! `spark-admission test`, through the built binary: the project's own policy tests pass,
//! a broken expectation fails with a readable diff (exit 1), `--update` rewrites it, and
//! bad input is exit 2 with the file and the JSON path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spark_admission::policytest::load::parse_test_file;
use spark_admission::policytest::model::WarningExpectation;
use spark_admission::policytest::{test_schema_json, TEST_FILE_NAME};
use spark_admission::source::load_paths;

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out: Output = Command::new(BIN)
        .current_dir(dir)
        .arg("test")
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of what policies/tests refers to, to change without touching the repository.
fn project_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("policies"), &dir.path().join("policies"));
    copy_dir(
        &root().join("tests/fixtures"),
        &dir.path().join("tests/fixtures"),
    );
    copy_dir(
        &root().join("deploy/examples"),
        &dir.path().join("deploy/examples"),
    );
    dir
}

/// The ConfigMap example's test file in `dir`, with its first `from` turned into `to`.
fn edit_configmap_tests(dir: &Path, from: &str, to: &str) -> PathBuf {
    let file = dir.join("policies/tests/configmap").join(TEST_FILE_NAME);
    edit(&file, from, to);
    file
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_projects_policy_tests_pass() {
    let (code, out) = run(&root(), &["policies/"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAIL") && !out.contains("ERROR"), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn every_example_policy_is_named_in_an_expectation_of_policies_tests() {
    let (policies, errors) = load_paths(&[root().join("policies")]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("policies/tests")).unwrap() {
        let file = entry.unwrap().path().join(TEST_FILE_NAME);
        if !file.is_file() {
            continue;
        }
        let test = parse_test_file(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
        for case in test.spec.cases {
            let e = case.expect;
            named.extend(e.applied.into_iter().flatten());
            named.extend(e.refused_by.into_iter().flatten().map(|r| r.policy));
            // Rule messages start with `policy "NAME" (rule)`.
            for w in e.warnings.into_iter().flatten() {
                let (WarningExpectation::Exact(text)
                | WarningExpectation::Contains { contains: text }) = w;
                if let Some(name) = text
                    .strip_prefix("policy \"")
                    .and_then(|r| r.split('"').next())
                {
                    named.insert(name.to_owned());
                }
            }
        }
    }
    for p in policies {
        assert!(
            named.contains(&p.name),
            "policy {} ({}) has no test in policies/tests",
            p.name,
            p.origin
        );
    }
}

#[test]
fn a_broken_expectation_fails_with_a_diff_naming_the_field_and_both_values() {
    let dir = project_copy();
    // The counts of the intact copy: breaking one case must move exactly one to failed.
    let (code, intact) = run(dir.path(), &["policies/tests"]);
    assert_eq!(code, 0, "{intact}");
    let summary = intact.lines().last().unwrap_or_default().to_owned();
    let cases: usize = summary.split(' ').next().unwrap().parse().unwrap();
    let files = summary.split('(').nth(1).unwrap().to_owned();
    let file = edit_configmap_tests(
        dir.path(),
        "nodeSelector: {node-pool: spark}",
        "nodeSelector: {node-pool: gpu}",
    );
    edit(
        &file,
        "applied: [team-defaults]",
        "applied: [team-defaults, guardrails]",
    );
    let junit = dir.path().join("report.xml");
    let (code, out) = run(
        dir.path(),
        &["policies/tests", "--junit", junit.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    let fail_line = "FAIL  policies/tests/configmap/spark-admission-test.yaml: the ConfigMap's team-defaults apply in team namespaces (pod driver-team-ml, namespace team-ml)";
    assert!(out.contains(fail_line), "{out}");
    assert!(
        out.contains(
            "      pod.spec.nodeSelector.node-pool\n        expected: \"gpu\"\n        actual:   \"spark\"\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "      applied\n        expected: [\"team-defaults\",\"guardrails\"]\n        actual:   [\"team-defaults\"]\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("\n{} passed, 1 failed ({files}", cases - 1)),
        "{out}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!(
            r#"<testsuites name="spark-admission test" tests="{cases}" failures="1" errors="0">"#
        )),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="the ConfigMap&apos;s team-defaults apply in team namespaces" classname="policies/tests/configmap/spark-admission-test.yaml"><failure message="2 expectation(s) do not hold">"#),
        "{xml}"
    );
    assert!(xml.contains("expected: &quot;gpu&quot;"), "{xml}");
}

#[test]
fn json_output_carries_each_mismatch_with_its_path() {
    let dir = project_copy();
    edit_configmap_tests(
        dir.path(),
        "- {name: TZ, value: UTC}",
        "- {name: TZ, value: CET}",
    );
    let (code, out) = run(
        dir.path(),
        &["policies/tests/configmap", "--output", "json"],
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["summary"]["failed"], 1);
    let case = &report["files"][0]["cases"][0];
    assert_eq!(case["status"], "fail");
    assert_eq!(
        case["mismatches"],
        serde_json::json!([{
            "field": "pod",
            "path": ".spec.containers[name=spark-kubernetes-driver].env[name=TZ].value",
            "expected": "CET",
            "actual": "UTC"
        }])
    );
}

#[test]
fn update_rewrites_failed_and_empty_expectations_and_keeps_the_header_comments() {
    let dir = project_copy();
    let file = edit_configmap_tests(
        dir.path(),
        "nodeSelector: {node-pool: spark}",
        "nodeSelector: {node-pool: gpu}",
    );
    // A new case, a full pod and a patch to fill in.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}    - name: new\n      pod: driver-team-ml\n    - name: whole pod\n      pod: driver-team-ml\n      expect: {{fullPod: {{}}, patch: []}}\n"),
    )
    .unwrap();

    let (code, out) = run(dir.path(), &["policies/tests/configmap", "--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("UPDATED policies/tests/configmap/spark-admission-test.yaml: the ConfigMap's team-defaults apply in team namespaces"), "{out}");
    assert!(out.contains("1 passed, 0 failed, 3 updated"), "{out}");
    let updated = std::fs::read_to_string(&file).unwrap();
    assert!(
        updated.starts_with("# yaml-language-server: $schema=../schema.json\n"),
        "{updated}"
    );
    assert!(updated.contains("node-pool: spark"), "{updated}");
    assert!(!updated.contains("node-pool: gpu"), "{updated}");

    let (code, out) = run(dir.path(), &["policies/tests/configmap"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");

    // The full pod written by --update is checked exactly.
    edit(
        &file,
        "value: /opt/spark/conf\n            - name: TZ\n              value: UTC",
        "value: /opt/spark/conf\n            - name: TZ\n              value: Europe/Paris",
    );
    let (code, out) = run(dir.path(), &["policies/tests/configmap"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fullPod.spec.containers[name=spark-kubernetes-driver].env[name=TZ].value\n        expected: \"Europe/Paris\"\n        actual:   \"UTC\""), "{out}");
}

/// A test folder with one test file and the given pods and policies beside it.
fn scratch(test: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(TEST_FILE_NAME), test).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const POLICY: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: NAME}\nspec:\n  namespaces: [\"*\"]\n  all: {labels: {from: NAME}}\n";

fn test_file(policies: &str, pod_file: &str, expect: &str) -> String {
    let driver = root().join("tests/fixtures/spark/driver-scala-sparkpi.json");
    let pod_file = if pod_file.is_empty() {
        driver.to_str().unwrap().to_owned()
    } else {
        pod_file.to_owned()
    };
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkAdmissionTest\nmetadata: {{name: t}}\nspec:\n  policies: [{policies}]\n  pods:\n    - {{name: driver, file: \"{pod_file}\"}}\n  cases:\n    - name: c\n      pod: driver\n      expect: {expect}\n"
    )
}

fn assert_bad_input(dir: &Path, wanted: &[&str]) {
    let (code, out) = run(dir, &["."]);
    assert_eq!(code, 2, "{out}");
    for w in wanted {
        assert!(out.contains(w), "wanted {w:?} in:\n{out}");
    }
}

type Files = Vec<(&'static str, String)>;

#[test]
fn bad_input_is_exit_2_with_the_file_and_the_path() {
    let ok_policy = [("p.yaml", POLICY.replace("NAME", "p"))];
    let files = |extra: &[(&'static str, String)]| -> Files {
        ok_policy
            .iter()
            .cloned()
            .chain(extra.iter().cloned())
            .collect()
    };
    // (test file, files beside it, what the output must say)
    let cases: Vec<(String, Files, Vec<&str>)> = vec![
        (
            "kind: [unclosed".to_owned(),
            vec![],
            vec!["spark-admission-test.yaml: not valid YAML: line 2 column 1: "],
        ),
        (
            test_file("p.yaml", "", "{result: maybe}"),
            files(&[]),
            vec!["spark-admission-test.yaml: /spec/cases/0/expect/result: "],
        ),
        (
            test_file("p.yaml", "", "{applied: [p], colour: blue}"),
            files(&[]),
            vec!["/spec/cases/0/expect: ", "colour"],
        ),
        (
            test_file("missing.yaml", "", "{applied: [p]}"),
            files(&[]),
            vec!["spark-admission-test.yaml: /spec/policies/0: ", "missing.yaml: no such policy file or folder"],
        ),
        (
            test_file("p.yaml", "nowhere.json", "{applied: [p]}"),
            files(&[]),
            vec!["spark-admission-test.yaml: /spec/pods/0/file: ", "nowhere.json: cannot read"],
        ),
        (
            test_file("p.yaml", "plain.yaml", "{applied: [p]}"),
            files(&[("plain.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, image: nginx}]}\n".to_owned())]),
            vec!["/spec/pods/0/file: ", "plain.yaml: not a Spark pod: it has no spark-role label"],
        ),
        (
            test_file("p.yaml", "svc.yaml", "{applied: [p]}"),
            files(&[("svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n".to_owned())]),
            vec!["/spec/pods/0/file: ", "not a Pod or an AdmissionReview", "kind is Service"],
        ),
        (
            test_file("broken.yaml", "", "{applied: [p]}"),
            vec![("broken.yaml", POLICY.replace("NAME", "b").replace("[\"*\"]", "[]"))],
            vec!["/spec/policies/0: ", "broken.yaml#1 (b): /spec/namespaces: "],
        ),
        (
            test_file("p.yaml", "", "{}"),
            files(&[]),
            vec!["/spec/cases/0/expect: the case states no expectation", "--update"],
        ),
        (
            test_file("p.yaml", "", "{applied: [p]}").replace("pod: driver\n", "pod: executor\n"),
            files(&[]),
            vec!["/spec/cases/0/pod: no pod named \"executor\" in spec.pods (known: driver)"],
        ),
    ];
    for (test, files, wanted) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let dir = scratch(&test, &files);
        assert_bad_input(dir.path(), &wanted);
    }
}

#[test]
fn bad_input_wins_over_failures_and_finding_no_test_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("a");
    let bad = dir.path().join("b");
    std::fs::create_dir_all(&fail).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(fail.join("p.yaml"), POLICY.replace("NAME", "p")).unwrap();
    std::fs::write(
        fail.join(TEST_FILE_NAME),
        test_file("p.yaml", "", "{applied: [q]}"),
    )
    .unwrap();
    std::fs::write(
        bad.join(TEST_FILE_NAME),
        test_file("none.yaml", "", "{applied: [q]}"),
    )
    .unwrap();
    let (code, out) = run(dir.path(), &["a", "b"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FAIL  a/spark-admission-test.yaml: c"),
        "{out}"
    );
    assert!(
        out.contains("ERROR b/spark-admission-test.yaml: /spec/policies/0"),
        "{out}"
    );
    assert!(
        out.contains("0 passed, 1 failed, 1 test file(s) could not be run"),
        "{out}"
    );

    let empty = tempfile::tempdir().unwrap();
    let (code, out) = run(empty.path(), &["."]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no spark-admission-test.yaml in this folder or below"),
        "{out}"
    );
}

#[test]
fn configmap_manifests_count_only_labelled_configmaps_and_their_yaml_keys() {
    let indent = |text: &str| {
        text.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: spark-admission}}\n---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata:\n      name: labelled\n      namespace: spark-admission\n      labels: {{spark-admission.io/policy: \"true\"}}\n    data:\n      a.yaml: |\n{}      notes.txt: not a policy\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {{name: unlabelled, namespace: spark-admission}}\n    data:\n      b.yaml: |\n{}",
        indent(&POLICY.replace("NAME", "in-list")),
        indent(&POLICY.replace("NAME", "ignored")),
    );
    let dir = scratch(
        &test_file(
            "cms.yaml",
            "",
            "{applied: [in-list], pod: {metadata: {labels: {from: in-list}}}}",
        ),
        &[("cms.yaml", &manifests)],
    );
    let (code, out) = run(dir.path(), &["."]);
    assert_eq!(code, 0, "{out}");

    // A broken policy in a ConfigMap is named by ConfigMap, key and document.
    let broken = manifests.replacen("namespaces: [\"*\"]", "namespaces: []", 1);
    std::fs::write(dir.path().join("cms.yaml"), broken).unwrap();
    assert_bad_input(
        dir.path(),
        &[
            "/spec/policies/0: ",
            "configmap spark-admission/labelled a.yaml#1 (in-list): /spec/namespaces",
        ],
    );

    // Manifests without any labelled ConfigMap: nothing would be served, which is a mistake.
    std::fs::write(
        dir.path().join("cms.yaml"),
        manifests.replace("spark-admission.io/policy: \"true\"", "team: a"),
    )
    .unwrap();
    assert_bad_input(
        dir.path(),
        &["no policies found (ConfigMaps need the label spark-admission.io/policy: \"true\""],
    );
}

#[test]
fn shipped_test_schema_is_up_to_date() {
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("policies/tests/schema.json")).unwrap(),
    )
    .unwrap();
    assert!(
        shipped == test_schema_json(),
        "policies/tests/schema.json is stale: run `cargo run -- schema --kind test > policies/tests/schema.json`"
    );
}

#[test]
fn audit_mode_findings_are_expected_apart_from_refusals_and_warnings() {
    let policy = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: labels-audit}\nspec:\n  namespaces: [\"*\"]\n  validate: {mode: audit, requiredLabels: [team]}\n";
    let expect = "{result: allowed, refusedBy: [], warnings: [], audited: [{policy: labels-audit, rule: requiredLabels}]}";
    let dir = scratch(
        &test_file("audit.yaml", "", expect),
        &[("audit.yaml", policy)],
    );
    let (code, out) = run(dir.path(), &["."]);
    assert_eq!(code, 0, "{out}");

    let wrong = test_file("audit.yaml", "", "{result: allowed, audited: []}");
    std::fs::write(dir.path().join(TEST_FILE_NAME), wrong).unwrap();
    let (code, out) = run(dir.path(), &["."]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("      audited\n        expected: []\n        actual:   [\"labels-audit (requiredLabels)\"]\n"),
        "{out}"
    );
}
